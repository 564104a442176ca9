"""Other people's trainers, reporting to the run xp hands them (a script project's seed).

- `xp.integrations.run` (`start()`): the small API for a plain loop, and what the others use;
- `xp.integrations.hf` (`XpCallback`): HF `Trainer` and TRL's trainers.

Importing this package imports neither torch nor transformers.
"""

from xp.integrations.run import Run, start

__all__ = ["Run", "start"]
