"""The `xp` command line (typer): one function per verb; parses, calls the library, prints.

`app` holds the verbs; `search` and `server` register theirs on it, here, so that every way in
(the `xp` console script, `python -m xp.cli` as MLproject runs it) sees every verb.
"""

from xp.cli import search, server  # noqa: F401  (register `xp search`, `xp server` on the app)
from xp.cli.app import app, entry, main

__all__ = ["app", "entry", "main"]
