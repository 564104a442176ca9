"""`xp search`: a verb built on verbs. `study.search` asks Optuna for trials, trains them through an
executor, confirms the best with `xp repeat` on fresh seeds and ranks them with `xp compare`'s
machinery; `space` reads a project's search.yaml; `report` writes the study report.
"""
