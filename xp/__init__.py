"""xp: experiment tracking and reproducibility for fine-tuning.

Importing `xp` is cheap: torch, transformers and mlflow are imported inside the functions that
need them, so `xp --help` answers at once.
"""

__version__ = "0.1.0"


class XpError(Exception):
    """An error the user caused and can fix; the CLI prints its message as one line."""


def one_line(e: BaseException, limit: int = 200) -> str:
    """An exception as `Type: its first sentence`, for error lines that must stay one line."""
    text = " ".join(str(e).split())
    first = text.split(". ")[0].rstrip(".") if text else ""
    return f"{type(e).__name__}: {first}"[:limit] if first else type(e).__name__


# Models registered before xp's modules moved into wings were pickled with their classes' old
# module names (the digits CNN as `xp.cnn.DigitsCNN`): those names still import, as the module
# that holds the code now, so a champion registered then still loads. Nothing is imported until
# such a name is asked for.
_MOVED = {"xp.cnn": "xp.train.cnn"}


class _MovedModules:
    """A finder on `sys.meta_path` that answers an old module name with the module's new home."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None):  # noqa: ARG004
        if name not in _MOVED:
            return None
        import importlib.util

        return importlib.util.spec_from_loader(name, _MovedModules())

    @staticmethod
    def create_module(spec) -> None:
        """A placeholder: `exec_module` puts the real module in its place."""

    @staticmethod
    def exec_module(module) -> None:
        """The old name is the module of the new one (its own spec untouched): the import system
        hands back whatever `sys.modules` holds under the name once this returns."""
        import importlib
        import sys

        sys.modules[module.__name__] = importlib.import_module(_MOVED[module.__name__])


def _install_moved_modules() -> None:
    import sys

    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())


_install_moved_modules()
