"""The processes that train seeds, as the executor sees them: a new `xp train` process per seed
(`SeedProcess`), or a warm worker (`Worker`) forked by a server that imported everything once
(`ForkServer`, the other end of `xp.execute.worker`); and the tail of each seed's log file
(`LogTail`), which turns its progress lines into events. `xp.execute.executor.LocalExecutor`
decides which seed runs where and when; this module only starts, watches, signals and waits for
processes.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xp.execute.jobs import OnEvent, SeedJob


class Slot:
    """A process training one seed: its pid, `poll()` -> exit code when the seed is done."""

    proc: subprocess.Popen
    pid: int
    gpu: str | None = None  # its CUDA_VISIBLE_DEVICES

    def poll(self) -> int | None: ...

    def interrupt(self) -> None:
        """Ctrl-C: the seed checkpoints and ends KILLED."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class SeedProcess(Slot):
    """One `xp train` process for one seed."""

    def __init__(self, job: SeedJob, env: dict[str, str], cwd: Path | None):
        with open(job.log, "a") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "xp.cli", "train", *job.args], cwd=cwd, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal Ctrl-C reaches us only; we forward it once
            )  # fmt: skip
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()


class ForkServer:
    """A `python -m xp.execute.worker` process that imports and warms up once, then forks a worker
    per request (`xp.execute.worker.fork_server`): a second worker costs milliseconds, not ~7 s
    of CPU."""

    def __init__(self, key: tuple, env: dict[str, str], cwd: Path | None, log_dir: Path | None):
        self.key = key  # the start settings its workers share (`Worker.key_of`)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd, errors = tempfile.mkstemp(prefix="xp-worker-", suffix=".log", dir=log_dir)
        # what the server and its workers say outside any seed (an import error): copied into
        # the log of a seed whose worker died before reporting it
        self.errors = Path(errors)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xp.execute.worker", str(theirs.fileno())], cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, pass_fds=(theirs.fileno(),),
            start_new_session=True,  # a terminal Ctrl-C reaches us only; we forward it once
        )  # fmt: skip
        os.close(fd)
        theirs.close()
        self.sock = ours
        self.exits: dict[int, int] = {}  # worker pid -> exit code, as the server reaped it
        self.forked: set[int] = set()
        self._forked: queue.Queue[int | None] = queue.Queue()
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:  # the server ended: no fork will be answered
                self._forked.put(None)
                return
            message = json.loads(data)
            if "forked" in message:
                self._forked.put(message["forked"])
            elif "exit" in message:
                self.exits[message["exit"]] = message["code"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, env: dict[str, str]) -> tuple[int, socket.socket] | None:
        """A new worker with `env` added (its GPU): its pid and our end of its channel. Waits
        for the server's warm-up if it is not done. None if the server could not start."""
        ours, theirs = socket.socketpair()
        try:
            socket.send_fds(self.sock, [json.dumps({"env": env}).encode()], [theirs.fileno()])
            pid = self._forked.get()
        except OSError:
            pid = None
        finally:
            theirs.close()
        if pid is None:
            ours.close()
            return None
        self.forked.add(pid)
        return pid, ours

    def close(self) -> None:
        """No more workers: the server exits once the ones it has are gone (at once if it has
        none: a repeat that stopped at a user error does not wait for its warm-up)."""
        if self.forked <= set(self.exits):
            self.proc.kill()
            return
        try:
            self.sock.send(json.dumps({"close": True}).encode())
        except OSError:
            pass

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        if self.errors.exists() and self.errors.stat().st_size == 0:
            self.errors.unlink()


class Worker(Slot):
    """A warm worker forked by a `ForkServer`: one seed at a time, as many as it is given."""

    @staticmethod
    def key_of(env: dict[str, str], cwd: Path | None) -> tuple:
        """Workers are shared by seeds whose process would start the same way."""
        return tuple(sorted(env.items())), str(cwd)

    def __init__(self, server: ForkServer, env: dict[str, str]):
        self.key, self.server = server.key, server
        self.job: SeedJob | None = None
        self._messages: queue.Queue[dict] = queue.Queue()
        forked = server.fork(env)
        self.pid, self.channel = forked if forked else (None, None)
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        if self.channel is None:
            return
        try:
            for line in self.channel.makefile("r"):
                try:
                    self._messages.put(json.loads(line))
                except ValueError:
                    continue
        except OSError:  # reset by a worker killed with unread input: the server says how
            pass

    def _exit_code(self) -> int | None:
        """How the worker ended, once it has; None while it lives."""
        if self.pid is None:  # never forked: the server could not start (its code says why)
            return self.server.proc.poll()
        if self.pid in self.server.exits:
            return self.server.exits[self.pid]
        if not self.server.alive() and not self._listener.is_alive():
            return 1  # its server was killed, and it is gone too: nobody saw how it ended
        return None

    def alive(self) -> bool:
        return self._exit_code() is None

    def assign(self, job: SeedJob, env: dict[str, str]) -> None:
        """Send it a seed; `env` is set for this seed only (variables read when it runs)."""
        self.job = job
        message = {"seed": job.seed, "args": job.args, "log": str(job.log), "env": env}
        try:
            self.channel.sendall((json.dumps(message) + "\n").encode())
        except (AttributeError, OSError):  # never started or died already: poll() says how
            pass

    def _reported(self) -> int | None:
        """The exit code the worker reported for its seed, if it has."""
        while not self._messages.empty():
            message = self._messages.get_nowait()
            if self.job is not None and message.get("seed") == self.job.seed:
                self.job = None
                return int(message["code"])
        return None

    def poll(self) -> int | None:
        code = self._reported()
        if code is not None:
            return code
        died = self._exit_code()
        if died is None:
            return None
        self._listener.join(timeout=2)  # its last word may have come with its death
        code = self._reported()
        if code is None and self.job is not None:  # died with its seed: a signal is negative
            self._tell_seed(self.job)
        self.job = None
        return died if code is None else code

    def _tell_seed(self, job: SeedJob) -> None:
        """What was said outside the seed (an import that failed) goes to its log."""
        try:
            said = self.server.errors.read_text(errors="replace")
            if said.strip() and job.log is not None:
                with open(job.log, "a") as log:
                    log.write(f"(the worker, pid {self.pid}, before it died:)\n{said}")
        except OSError:
            pass

    def interrupt(self) -> None:
        """Ctrl-C: the seed checkpoints and ends KILLED."""
        if self.pid is not None and self.alive():
            os.kill(self.pid, signal.SIGINT)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pid is not None and self.alive():
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """No more seeds: the worker's loop ends when its channel does (`reap` waits for it)."""
        try:
            self.channel.shutdown(socket.SHUT_WR)
        except (AttributeError, OSError):
            pass

    def reap(self) -> None:
        """Wait for a closed worker to exit."""
        self.wait(10)
        if self.channel is not None:
            self.channel.close()


def prepare_log(job: SeedJob) -> None:
    """Give the job a log file (a temporary one if it has none) whose folder exists."""
    if job.log is None:
        job.log = Path(tempfile.mkstemp(prefix=f"xp-seed-{job.seed}-", suffix=".log")[1])
    job.log.parent.mkdir(parents=True, exist_ok=True)


class LogTail:
    """Follows a seed's log file and turns its progress lines into events."""

    def __init__(self, job: SeedJob, on_event: OnEvent):
        self.job, self.on_event = job, on_event
        self._offset = job.log.stat().st_size if job.log and job.log.exists() else 0
        self._partial = ""

    def read(self) -> None:
        try:
            with open(self.job.log, encoding="utf-8", errors="replace") as f:
                f.seek(self._offset)
                chunk = f.read()
                self._offset = f.tell()
        except OSError:
            return
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith("progress "):
                step, total = line.split()[1].split("/")
                self.on_event(self.job.seed, "progress", {"step": int(step), "total": int(total)})
            else:
                self.on_event(self.job.seed, "line", {"line": line})
