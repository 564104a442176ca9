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
