"""xp: experiment tracking and reproducibility for fine-tuning.

Importing `xp` is cheap: torch, transformers and mlflow are imported inside the functions that
need them, so `xp --help` answers at once.
"""

__version__ = "0.1.0"


class XpError(Exception):
    """An error the user caused and can fix; the CLI prints its message as one line."""
