"""`python -m xp.cli`, as MLproject runs every entry point."""

from xp.cli import entry

entry()
