"""The run record: what a run records and where, for xp's trainer and any other.

The surface a trainer uses: `workspace.Workspace` (the repository, found once), `track`
(`start_tracker`, the MLflow and null trackers, resumable runs), `tags` (provenance -> the
RUN_SCHEMA names), `supervise` (run locks, SIGTERM as Ctrl-C, fault points), `store`, `numerics`.
Beneath them: `provenance`, `gitstate`, `metric_writer`; `rebuild` puts a record back on disk;
`server` is `xp server`. Nothing here imports a trainer, an executor, the search or the CLI.
"""
