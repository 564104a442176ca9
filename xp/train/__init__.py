"""xp's own trainer: one client of `xp.record`, like any other trainer.

`command.run` is `xp train` (config, numerics, the loop, what it prints, its exit code);
`loop.train` is the recipe, top to bottom, handed whatever hooks its caller wants (progress
events, a search's pruner). The rest are its parts: `recipe`, `models`, `cnn`, `data`,
`checkpoint`, `resume`, `devices`, `metrics`, `seed`, `console`, `pruning`. Nothing here knows
whether it runs in a CLI process, a warm worker or a Ray actor, or that a search is asking.
"""
