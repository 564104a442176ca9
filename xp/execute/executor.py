"""Where seeds run. `LocalExecutor` runs N seeds at a time here, on N warm workers
(`xp.execute.worker`: forked from a server that imported everything once; each trains seed
after seed) or, with `kind="process"`, each seed as its own `xp train` process.

The interface is small on purpose (`run(jobs, on_event) -> exit codes`): a cluster executor
(Ray actors, Slurm, Kubernetes) only has to run the same worker loop, or the same command,
somewhere and report when each seed ends.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

from xp import XpError
from xp.execute.jobs import Executor, ExecutorError, OnEvent, SeedJob  # noqa: F401  (its interface)
from xp.execute.slots import ForkServer, LogTail, SeedProcess, Slot, Worker, prepare_log
from xp.record.supervise import FAULT_ENV, FAULT_STOP_ENV, PARENT_ENV, STOP_GRACE_SECONDS
from xp.train.pruning import TRIAL_VARIABLES

EXECUTORS = ("warm", "process", "ray")  # ray: `xp.execute.ray`
# read when a seed runs, not when its process starts: they do not need a worker of their own
# (so workers can start before the store is opened and the parent run exists, and the trials of
# a search, each with its own tags and Optuna trial, share one fork server)
RUNTIME_ENV = ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", FAULT_ENV,
               FAULT_STOP_ENV, *TRIAL_VARIABLES)  # fmt: skip


def gpu_count() -> int:
    """CUDA GPUs torch can see here (without importing torch where no NVIDIA driver is)."""
    if not (os.path.exists("/proc/driver/nvidia") or shutil.which("nvidia-smi")):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_kind(executor: str, jobs: int, cluster: bool = False) -> str | None:
    """Raise for an executor that does not exist (`ray` only where `cluster`); returns a warning
    for more jobs than this machine's cores (allowed: they share them)."""
    known = EXECUTORS if cluster else EXECUTORS[:2]
    if executor not in known:
        raise XpError(f"--executor {executor}: use one of {', '.join(known)}")
    cores = os.cpu_count() or 1
    if jobs > cores and executor != "ray":
        return (f"--jobs {jobs} is more than this machine's {cores} cores: the seeds share them, "
                "one thread each, and each runs slower")  # fmt: skip
    return None


def check_share(gpus_per_seed: float) -> None:
    """A positive share of one GPU, or a whole number of GPUs."""
    if not (math.isfinite(gpus_per_seed) and gpus_per_seed > 0):
        raise ExecutorError(f"--gpus-per-seed {gpus_per_seed:g}: give a positive share")
    if gpus_per_seed > 1 and not float(gpus_per_seed).is_integer():
        raise ExecutorError(
            f"--gpus-per-seed {gpus_per_seed:g}: above 1 a seed takes whole GPUs; give an "
            f"integer ({math.floor(gpus_per_seed)} or {math.ceil(gpus_per_seed)}) or a share "
            "of one GPU (0.5, 0.25)"
        )


def gpu_slots(gpus_per_seed: float | None, gpu_count: int, jobs: int) -> list[str] | None:
    """`CUDA_VISIBLE_DEVICES` of each of the `jobs` processes that train at once (None: no GPU).

    `gpus_per_seed` <= 1 puts `floor(1 / share)` seeds on each GPU (0.25: four per GPU); an
    integer above 1 gives each seed that many GPUs of its own. Without it, `jobs` processes take
    the GPUs in turn (more jobs than GPUs: they share). Slots are spread over the GPUs first.

    Raises:
        ExecutorError: a share with no GPU, a share that is not positive, or above 1 and not a
            whole number, or more jobs than the GPUs hold at that share.
    """
    if gpus_per_seed is not None:
        check_share(gpus_per_seed)
        if gpu_count == 0:
            raise ExecutorError(
                f"--gpus-per-seed {gpus_per_seed:g}: this machine has no GPU (CUDA) that torch "
                "can see; drop the option to train on the CPU"
            )
    if gpu_count == 0:
        return None
    if gpus_per_seed is not None and gpus_per_seed > 1:
        width = int(gpus_per_seed)
        capacity = gpu_count // width
        slots = [",".join(str(i * width + j) for j in range(width)) for i in range(capacity)]
    else:
        per_gpu = math.floor(1 / gpus_per_seed + 1e-9) if gpus_per_seed else math.ceil(
            jobs / gpu_count)  # fmt: skip
        slots = [str(g) for _ in range(per_gpu) for g in range(gpu_count)]
    if jobs > len(slots):
        raise ExecutorError(
            f"--jobs {jobs} with --gpus-per-seed {gpus_per_seed:g}: {gpu_count} GPU(s) hold "
            f"{len(slots)} seed(s) at a time; lower --jobs or the share"
        )
    return slots[:jobs]


def _start_env(env: dict[str, str]) -> dict[str, str]:
    """What a worker for a seed with environment `env` is started with: all but RUNTIME_ENV."""
    return {k: v for k, v in env.items() if k not in RUNTIME_ENV}


def _seed_env(job: SeedJob) -> dict[str, str]:
    """The environment a seed's process starts with: ours, the job's, and the numerics pinned."""
    from xp.record import numerics

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}  # not the parent's
    env.update(job.env)
    if job.numerics == "portable":  # before torch is imported in that process
        env.update(numerics.PORTABLE_ENV)
    env["XP_PROGRESS"] = "lines"
    env[PARENT_ENV] = str(os.getpid())
    return env


class LocalExecutor:
    """N seeds at a time on this machine: a crash or a NaN in one never takes down the rest.

    `warm` (the default): N long-lived workers, forked from a server (`python -m xp.execute.worker`)
    that imported torch, MLflow and the rest once, train seed after seed; a seed that kills its
    worker costs that worker only, and the next seed gets a new fork. `process`: every seed is a new
    `xp train` process (~7 s of CPU before it trains). Either way a seed writes its output to its
    own log file, never to a pipe of ours (the parent tails the files for progress), and every
    process watches its parent (`XP_PARENT_PID`), stopping itself, checkpointed, if the parent dies
    by SIGKILL.
    """

    def __init__(self, jobs: int = 1, cwd: Path | None = None, kind: str = "warm",
                 gpus_per_seed: float | None = None, place_gpus: bool = True):  # fmt: skip
        """`gpus_per_seed`: a share of a GPU (0.25) or whole GPUs (2) per seed; checked here.
        Without it, where there are GPUs, the `jobs` processes take them in turn.
        `place_gpus=False`: leave `CUDA_VISIBLE_DEVICES` as it is (someone else placed this
        process, e.g. Ray an actor).

        Raises:
            ExecutorError: see `gpu_slots`.
        """
        if kind not in EXECUTORS[:2]:
            raise ValueError(f"executor {kind!r}: use one of {', '.join(EXECUTORS)}")
        self.jobs = max(1, jobs)
        self.cwd = cwd
        self.kind = kind
        self._free_gpus: list[str] | None = None if place_gpus else []  # at the first seed
        if gpus_per_seed is not None:
            self._free_gpus = gpu_slots(gpus_per_seed, gpu_count(), self.jobs)
        self._running: dict[int, Slot] = {}  # seed -> the process training it
        self._idle: list[Worker] = []
        self._closing: list[Worker] = []  # told that no seed is left, exiting
        self._servers: dict[tuple, ForkServer] = {}  # start settings -> what forks workers
        self._held = False  # inside `with`: the fork servers outlive `run`, until the block ends

    def threads_per_job(self) -> int:
        """CPU threads each seed may use so that N seeds at once share the cores, not fight."""
        return max(1, (os.cpu_count() or 1) // self.jobs)

    def warm_up(self, seeds: int, numerics: str = "native") -> None:
        """Start what forks the workers now: its imports and warm-up (~7 s of CPU) overlap what
        the caller does before `run` (opening the store, recording provenance)."""
        if self.kind != "warm" or seeds < 1:
            return
        self._server(_start_env(_seed_env(SeedJob(0, [], numerics=numerics))), None)

    def _server(self, start_env: dict[str, str], log_dir: Path | None) -> ForkServer:
        key = Worker.key_of(start_env, self.cwd)
        server = self._servers.get(key)
        if server is None or not server.alive():
            server = self._servers[key] = ForkServer(key, start_env, self.cwd, log_dir)
        return server

    def close(self) -> None:
        """Stop idle workers and the fork servers (one `warm_up` started for seeds that never
        came is killed at once)."""
        self._close_idle()

    def __enter__(self) -> LocalExecutor:
        """Keep the fork servers from one `run` to the next (a search's batches of trials:
        without it each batch would start one cold, ~7 s of CPU) until the block ends."""
        self._held = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._held = False
        self.close()

    def _place_gpus(self) -> None:
        if self._free_gpus is None:
            self._free_gpus = gpu_slots(None, gpu_count(), self.jobs) or []

    def run(self, jobs: list[SeedJob], on_event: OnEvent) -> dict[int, int]:
        pending = list(jobs)
        codes: dict[int, int] = {}
        tails: dict[int, LogTail] = {}
        self._place_gpus()
        try:
            while pending or self._running:
                while pending and len(self._running) < self.jobs:
                    job = pending.pop(0)
                    prepare_log(job)
                    tails[job.seed] = LogTail(job, on_event)  # from where this attempt writes
                    slot = self._start(job)
                    self._running[job.seed] = slot
                    on_event(job.seed, "started", {"pid": slot.pid})
                for seed, slot in list(self._running.items()):
                    tails[seed].read()
                    code = slot.poll()
                    if code is None:
                        continue
                    tails[seed].read()
                    codes[seed] = code
                    del self._running[seed]
                    if isinstance(slot, Worker) and slot.alive() and pending:
                        self._idle.append(slot)
                    else:  # no seed left for it: it exits while the others finish theirs
                        self._release(slot)
                    on_event(seed, "done", {"code": code})
                time.sleep(0.05)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM raised as `supervise.Terminated`
            self._stop_all()
            raise
        finally:
            self._close_idle(servers=not self._held)
        return codes

    def _start(self, job: SeedJob) -> Slot:
        env = _seed_env(job)
        if self.kind == "process":
            gpu = self._take_gpu(env)
            process = SeedProcess(job, env, self.cwd)
            process.gpu = gpu
            return process
        start_env = _start_env(env)
        key = Worker.key_of(start_env, self.cwd)
        worker = next((w for w in self._idle if w.key == key and w.alive()), None)
        if worker is not None:
            self._idle.remove(worker)
        while self._idle and len(self._idle) + len(self._running) + 1 > self.jobs:
            self._release(self._idle.pop(0))  # an idle worker for other settings makes room
        if worker is None:
            worker = self._new_worker(start_env, job.log.parent)
        worker.assign(job, {k: v for k, v in env.items() if k in RUNTIME_ENV})
        return worker

    def _new_worker(self, start_env: dict[str, str], log_dir: Path | None) -> Worker:
        env: dict[str, str] = {}
        gpu = self._take_gpu(env)  # where it runs (set in the fork), not part of its key
        server = self._server(start_env, log_dir)
        worker = Worker(server, env)
        worker.gpu = gpu
        return worker

    def _take_gpu(self, env: dict[str, str]) -> str | None:
        """A free GPU slot for a new process (its `CUDA_VISIBLE_DEVICES`), if seeds have GPUs."""
        gpu = self._free_gpus.pop(0) if self._free_gpus else None
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        return gpu

    def _release(self, slot: Slot) -> None:
        if isinstance(slot, Worker):
            slot.close()
            self._closing.append(slot)
        if slot.gpu is not None:
            self._free_gpus.append(slot.gpu)
            slot.gpu = None

    def interrupt(self) -> None:
        """Ask every running seed to stop as Ctrl-C would (from another thread): each saves its
        checkpoint and ends KILLED, and `run` returns their codes (130)."""
        for slot in list(self._running.values()):
            slot.interrupt()

    def _stop_all(self) -> None:
        """Every seed saves its checkpoint and ends KILLED (resumable), then we return."""
        self.interrupt()
        for slot in self._running.values():
            slot.wait(120)

    def _close_idle(self, servers: bool = True) -> None:
        """Every worker told to exit, then waited for: they exit at the same time; then the fork
        servers, unless `servers` is False."""
        for worker in self._idle:
            self._release(worker)
        self._idle.clear()
        for worker in self._closing:
            worker.reap()
        self._closing.clear()
        if not servers:
            return
        for server in self._servers.values():
            server.close()
        for server in self._servers.values():
            server.wait(10 + STOP_GRACE_SECONDS)
        self._servers.clear()
