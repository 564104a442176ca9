"""Seeds on a Ray cluster: `xp repeat ... --executor ray [--ray-address auto|host:port|ray://...]`.

Each Ray actor runs the same warm worker loop as the local pool: it holds a `LocalExecutor` of
one job on its node, so a seed still trains in a worker forked from a warm server, a seed that
kills its worker costs only itself (the actor forks the next one), and Ctrl-C reaches the worker
as SIGINT (it checkpoints and ends KILLED).

What a worker trains is shipped, never assumed on a shared disk: the driver builds the recorded
commit (a one-commit shallow git repository, so the seed's run records the same commit and diff
as a local one) with the recorded diff applied, and hands it to Ray as the job's `working_dir`
(Ray leaves `.git` out, so it travels as `.xp-git`). On each node the first actor copies it to a
node-local repository, `~/.cache/xp/ray/<commit>-<diff hash>` (`XP_RAY_HOME` moves it), where
checkpoints survive for a re-run to resume, and fetches every input the config reads by its DVC
md5 from the driver's default DVC remote (or the node's DVC cache), checking each md5 before any
seed trains. Nothing is shipped through Ray's runtime environment that holds a secret: the
tracking credentials travel with each seed's job, as they do to a local worker.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from xp import XpError
from xp.execute.executor import check_share
from xp.execute.jobs import ExecutorError, OnEvent, SeedJob
from xp.record.supervise import FAULT_ENV, FAULT_SEEDS_ENV
from xp.record.workspace import Workspace

# what a seed's job carries to the actor from the driver's environment (read when it runs)
CARRIED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
               "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS", FAULT_ENV,
               FAULT_SEEDS_ENV)  # fmt: skip
READY_SECONDS = float(os.environ.get("XP_RAY_READY_SECONDS", "600"))


def _ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            '--executor ray: Ray is not installed here; `pip install -e ".[ray]"`'
        ) from None
    return ray


def _reachable(address: str) -> None:
    """A host:port (or ray://host:port) that answers, or one line saying it does not."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(
            f"--ray-address {address}: give auto, host:port (the head's GCS port, 6379 by "
            "default) or ray://host:port (Ray Client)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ExecutorError(
            f"--ray-address {address}: no Ray cluster answers there ({e.strerror or e}); start "
            "one with `ray start --head` or check the address"
        ) from None


def _git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExecutorError(f"git {args[0]} of the Ray workers' code: {proc.stderr.strip()}")
    return proc.stdout


def ship_code(workspace: Workspace, commit: str, diff: str, remote: str | None) -> tuple[Path, str]:
    """The recorded commit plus the recorded diff, as a folder Ray can ship; returns (folder,
    its name: `<commit>-<diff hash>`). Built once per name under `.xp/ray/`."""
    name = f"{commit[:12]}-{hashlib.sha1(diff.encode()).hexdigest()[:12]}"
    folder = workspace.ray_code(name)
    if (folder / ".xp-git").is_dir():
        return folder, name
    partial = folder.with_name(name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _git(partial, "init", "-q")
    _git(partial, "fetch", "-q", "--depth", "1", workspace.root.resolve().as_uri(), commit)
    _git(partial, "checkout", "-q", "--detach", "FETCH_HEAD")
    if remote:
        _git(partial, "remote", "add", "origin", remote)
    if diff:
        _git(partial, "apply", "--whitespace=nowarn", "-", stdin=diff)
    (partial / ".git").rename(partial / ".xp-git")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder, name


def dvc_remote(root: Path) -> dict[str, str] | None:
    """The driver's default DVC remote ({"name", "url"}), from every DVC config level."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = repo.config["core"].get("remote")
        if not name:
            return None
        url = repo.config["remote"].get(name, {}).get("url")
    if url and "://" not in url and not Path(url).is_absolute():
        url = str((root / ".dvc" / url).resolve())  # a relative path is relative to .dvc/
    return {"name": name, "url": url} if url else None


class SeedActor:
    """One seed at a time on a Ray node, through the local warm worker loop (`LocalExecutor`).

    Created with `ray.remote(max_concurrency=2)`: `run` trains in one thread while `events` and
    `interrupt` answer in the other.
    """

    def __init__(self, name: str, data: dict[str, dict[str, str]], commit: str,
                 remote: dict[str, str] | None) -> None:  # fmt: skip
        self.error: str | None = None
        self.events_q: queue.Queue = queue.Queue()
        self.local: Any = None
        try:
            self.workspace = Workspace(_node_repo(Path.cwd(), name, data, commit, remote))
            from xp.execute.executor import LocalExecutor

            self.local = LocalExecutor(1, cwd=self.workspace.root, place_gpus=False)
        except XpError as e:
            self.error = str(e)

    def ready(self) -> tuple[str | None, str]:
        """(None, node) when seeds can train here, else (the one-line reason, node)."""
        return self.error, socket.gethostname()

    def run(self, job: dict[str, Any]) -> tuple[int, str]:
        """Train one seed; returns (its exit code, its log)."""
        log = self.workspace.ray_log(job["log_name"])
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        seed_job = SeedJob(job["seed"], job["args"], env=job["env"], log=log,
                           numerics=job["numerics"])  # fmt: skip
        codes = self.local.run([seed_job], lambda s, kind, info: self.events_q.put((kind, info)))
        return codes[job["seed"]], log.read_text(errors="replace")

    def events(self) -> list[tuple[str, dict]]:
        out = []
        while True:
            try:
                out.append(self.events_q.get_nowait())
            except queue.Empty:
                return out

    def interrupt(self) -> None:
        if self.local is not None:
            self.local.interrupt()

    def close(self) -> None:
        if self.local is not None:
            self.local.close()


def _node_repo(shipped: Path, name: str, data: dict[str, dict[str, str]], commit: str,
               remote: dict[str, str] | None) -> Path:  # fmt: skip
    """This node's repository for the shipped code, with its data checked (built once)."""
    import fcntl

    home = Path(os.environ.get("XP_RAY_HOME") or Path.home() / ".cache" / "xp" / "ray")
    repo = home / name
    home.mkdir(parents=True, exist_ok=True)
    with open(home / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the node's other actors wait for the first
        if not (repo / ".git").is_dir():
            partial = home / f"{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(shipped, partial, symlinks=True)
            (partial / ".xp-git").rename(partial / ".git")
            partial.rename(repo)
        if remote:  # (git-ignored: the tree stays as shipped)
            (repo / ".dvc" / "config.local").write_text(
                f"[core]\n    remote = {remote['name']}\n"
                f"['remote \"{remote['name']}\"']\n    url = {remote['url']}\n"
            )
        _fetch_data(repo, data, commit)
    return repo


def _fetch_data(repo: Path, data: dict[str, dict[str, str]], commit: str) -> None:
    """Every input at its recorded md5: what is missing or other comes from the DVC cache or the
    default remote, and every md5 is checked before a seed trains."""
    from xp.record import provenance
    from xp.record.rebuild import place_data

    def md5_of(path: str) -> str | None:
        try:
            return provenance.data_versions({"x": path}, repo)["x"]["md5"]
        except XpError:  # missing
            return None

    stale = {n: v for n, v in data.items() if md5_of(v["path"]) != v["md5"]}
    if stale:
        place_data(repo, stale, repo, commit)
    for n, v in stale.items():
        got = md5_of(v["path"])
        if got != v["md5"]:
            raise ExecutorError(
                f"data {n} ({v['path']}) fetched on {socket.gethostname()} has md5 {got}, not "
                f"the recorded {v['md5']}: the DVC remote holds another object under that hash"
            )


class RayExecutor:
    """Seeds on the actors of a Ray cluster (see the module's docstring).

    Args:
        address: `auto` (the cluster `ray start` made on this machine), `host:port` or
            `ray://host:port`.
        jobs: seeds trained at once (one actor each).
        cpus_per_seed: CPUs Ray reserves per seed (also the seed's torch threads).
        gpus_per_seed: GPUs (a share allowed) Ray reserves per seed; none by default.
        workspace: the repository the driver runs in.
    """

    def __init__(self, address: str, jobs: int, workspace: Workspace, cpus_per_seed: float = 1.0,
                 gpus_per_seed: float | None = None) -> None:  # fmt: skip
        if not cpus_per_seed > 0:
            raise ExecutorError(f"--cpus-per-seed {cpus_per_seed:g}: give a positive number")
        if gpus_per_seed is not None:
            check_share(gpus_per_seed)  # (whether the cluster has GPUs: at `warm_up`)
        self.address, self.jobs, self.workspace = address, max(1, jobs), workspace
        self.cpus, self.gpus = cpus_per_seed, gpus_per_seed
        self.actors: list[Any] = []
        self._ray: Any = None
        self._plan: tuple[str, dict, str, dict | None] | None = None  # what `prepare` ships
        self._folder: Path | None = None

    def threads_per_job(self) -> int:
        return max(1, int(self.cpus))

    def prepare(self, commit: str | None, diff: str, remote_url: str | None,
                data: dict[str, dict[str, str]]) -> None:  # fmt: skip
        """What the workers train: the driver's commit and diff, and its inputs' md5s."""
        if not commit:
            raise ExecutorError(
                "--executor ray: this tree has no git commit to ship to the workers; commit first"
            )
        folder, name = ship_code(self.workspace, commit, diff, remote_url)
        remote = dvc_remote(self.workspace.root)
        self._plan = (name, {k: {"path": v["path"], "md5": v["md5"]} for k, v in data.items()},
                      commit, remote)  # fmt: skip
        self._folder = folder

    def warm_up(self, seeds: int, numerics: str = "native") -> None:
        """Connect, check the cluster's resources, start the actors and wait until every one has
        the code and the data (a missing remote or object is one line here, before any run)."""
        if self.actors or self._plan is None:
            return
        ray = self._ray = _ray()
        _reachable(self.address)
        import logging

        try:
            ray.init(address=self.address, runtime_env={"working_dir": str(self._folder)},
                     log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=True)  # fmt: skip
        except Exception as e:  # ConnectionError and Ray's own: one line
            raise ExecutorError(
                f"--ray-address {self.address}: cannot join the Ray cluster "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from None
        self._check_resources(ray.cluster_resources())
        self.actors = [self._new_actor() for _ in range(self.jobs)]
        pending = {a.ready.remote(): a for a in self.actors}
        done, waiting = ray.wait(list(pending), num_returns=len(pending), timeout=READY_SECONDS)
        if waiting:
            self.close()
            raise ExecutorError(
                f"Ray started {len(done)} of {len(pending)} seed actors in {READY_SECONDS:g} s: "
                "the cluster's resources are taken by other work"
            )
        for ref in done:
            reason, node = ray.get(ref)
            if reason:
                self.close()
                raise ExecutorError(f"on Ray node {node}: {reason}")

    def _check_resources(self, total: dict[str, float]) -> None:
        cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
        if self.cpus > cpus or (self.gpus or 0) > gpus:
            self.close()
            raise ExecutorError(
                f"the Ray cluster at {self.address} has {cpus:g} CPU and {gpus:g} GPU in all; a "
                f"seed asks for {self.cpus:g} CPU"
                + (f" and {self.gpus:g} GPU" if self.gpus else "")  # fmt: skip
                + ": lower --cpus-per-seed/--gpus-per-seed or add nodes"
            )

    def run(self, jobs: list[SeedJob], on_event: OnEvent) -> dict[int, int]:
        ray = self._ray
        self.warm_up(len(jobs))
        pending = list(jobs)
        idle = list(self.actors)
        running: dict[Any, tuple[SeedJob, Any]] = {}
        codes: dict[int, int] = {}
        carried = {k: os.environ[k] for k in CARRIED_ENV if os.environ.get(k)}
        if carried.get("MLFLOW_TRACKING_URI", "").startswith("sqlite:///"):
            path = carried["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")
            carried["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(path).resolve()}"
        try:
            while pending or running:
                while pending and idle:
                    job, actor = pending.pop(0), idle.pop(0)
                    ref = actor.run.remote({
                        "seed": job.seed, "args": job.args, "numerics": job.numerics,
                        "env": {**job.env, **carried},
                        "log_name": f"{job.log.parent.name}-{job.log.name}" if job.log
                        else f"seed-{job.seed}.log",
                    })  # fmt: skip
                    running[ref] = (job, actor)
                    on_event(job.seed, "started", {"pid": None})
                done, _ = ray.wait(list(running), num_returns=1, timeout=0.3)
                for job, actor in running.values():
                    self._forward(job, actor, on_event)
                for ref in done:
                    job, actor = running.pop(ref)
                    code = self._result(ref, job)
                    if code == -9 and not self._alive(actor):  # the actor died: replace it
                        actor = self._replace(actor)
                    codes[job.seed] = code
                    idle.append(actor)
                    on_event(job.seed, "done", {"code": code})
        except KeyboardInterrupt:
            for _, actor in running.values():
                actor.interrupt.remote()
            for ref, (job, _) in running.items():
                self._result(ref, job, timeout=120)
            raise
        return codes

    def _forward(self, job: SeedJob, actor: Any, on_event: OnEvent) -> None:
        try:
            for kind, info in self._ray.get(actor.events.remote(), timeout=30):
                if kind in ("progress", "line"):
                    on_event(job.seed, kind, info)
        except Exception:  # a dead actor: its run's result says so
            pass

    def _result(self, ref: Any, job: SeedJob, timeout: float | None = None) -> int:
        """A seed's exit code, its log appended to the job's log file here."""
        try:
            code, log = self._ray.get(ref, timeout=timeout)
        except Exception as e:  # the actor (its node, its process) died under the seed
            code = -9
            log = f"\nthe Ray actor training seed {job.seed} died: {type(e).__name__}: {e}\n"
        if job.log:
            with open(job.log, "a") as f:
                f.write(log)
        return code

    def _alive(self, actor: Any) -> bool:
        try:
            self._ray.get(actor.ready.remote(), timeout=10)
            return True
        except Exception:
            return False

    def _new_actor(self) -> Any:
        options: dict[str, Any] = {"num_cpus": self.cpus, "max_concurrency": 2}
        if self.gpus:
            options["num_gpus"] = self.gpus
        return self._ray.remote(**options)(SeedActor).remote(*self._plan)

    def _replace(self, actor: Any) -> Any:
        i = self.actors.index(actor)
        self.actors[i] = self._new_actor()
        return self.actors[i]

    def close(self) -> None:
        if self._ray is None:
            return
        ray = self._ray
        for actor in self.actors:
            try:
                ray.get(actor.close.remote(), timeout=30)
            except Exception:
                pass
            ray.kill(actor)
        self.actors = []
        if ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def for_repeat(config: Any, workspace: Workspace, address: str, jobs: int, cpus_per_seed: float,
               gpus_per_seed: float | None) -> RayExecutor:  # fmt: skip
    """A `RayExecutor` ready to ship this tree's commit, diff and the config's inputs."""
    from xp.record import provenance
    from xp.record.tags import data_inputs
    from xp.train.models import model_source

    executor = RayExecutor(address, jobs, workspace, cpus_per_seed, gpus_per_seed)
    root = workspace.root
    git = provenance.git_info(root)
    data = provenance.data_versions(data_inputs(config, model_source(config, root)), root)
    executor.prepare(git["commit"], git["diff"], git["remote"], data)
    return executor
