"""`orchestrator dev`'s supervisor: every Procfile process kept running, restarted with backoff.

A process that dies (a crash, an OOM kill, someone's `kill -9`) is started again after a delay
that doubles with each quick death up to a cap, and is forgiven once it has stayed up a while;
the others never notice. Only SIGINT or SIGTERM to the supervisor (Ctrl-C) stops them all:
SIGTERM to each process group, then SIGKILL to what is left after a grace period. A process's
output goes on screen prefixed with its name, or with `log_dir` to `<log_dir>/<name>.log`.
"""

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

TICK_SECONDS = 0.1
Say = Callable[[str], None]


@dataclass(frozen=True)
class Backoff:
    """Restart delays: `first`, times `factor` per quick death, at most `cap`; reset once a
    process stays up `reset_after` seconds."""

    first: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 60.0

    def delay(self, deaths: int) -> float:
        """The wait before the restart that follows the `deaths`-th quick death in a row."""
        return min(self.cap, self.first * self.factor ** max(deaths - 1, 0))

    def deaths_after(self, deaths: int, uptime: float) -> int:
        """The count of quick deaths in a row once a process dies after `uptime` seconds up."""
        return 1 if uptime >= self.reset_after else deaths + 1


def read_procfile(path: Path) -> dict[str, list[str]]:
    """The processes of a Procfile (`name: command`), in order; blank lines and # comments
    skipped."""
    processes: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, command = text.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise ValueError(f"{path}:{number}: write it as `name: command`")
        processes[name.strip()] = shlex.split(command)
    return processes


def describe_exit(code: int) -> str:
    """`killed by SIGKILL`, or `exit code 1`."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Child:
    """One Procfile process: its command, its current run, and its record of quick deaths."""

    name: str
    command: list[str]
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    deaths: int = 0
    restart_at: float | None = None
    pids: list[int] = field(default_factory=list)


class Supervisor:
    """Runs the processes, restarts each that dies, and stops them all when told to."""

    def __init__(self, processes: dict[str, list[str]], env: dict[str, str],
                 backoff: Backoff | None = None, grace: float = 10.0,
                 say: Say | None = None, note: Say | None = None,
                 log_dir: Path | None = None) -> None:
        self.children = [Child(name, command) for name, command in processes.items()]
        self.env = env
        self.backoff = backoff or Backoff()
        self.grace = grace
        # `say` for what a person must see (a death, the stop); `note` for routine (a start).
        self.say = say or _say
        self.note = note or self.say
        self.log_dir = log_dir
        self.stopping = threading.Event()
        self.width = max((len(child.name) for child in self.children), default=0)

    def run(self) -> None:
        """Start every process and keep them running until `stop()` (or SIGINT/SIGTERM)."""
        for child in self.children:
            self._start(child)
        try:
            while not self.stopping.wait(TICK_SECONDS):
                now = time.monotonic()
                for child in self.children:
                    self._tend(child, now)
        finally:
            self._stop_all()

    def stop(self, *_: object) -> None:
        """Ask `run()` to stop every process and return (a signal handler too)."""
        self.stopping.set()

    def _tend(self, child: Child, now: float) -> None:
        if child.restart_at is not None:
            if now >= child.restart_at:
                self._start(child)
            return
        assert child.popen is not None
        code = child.popen.poll()
        if code is None:
            return
        uptime = now - child.started
        child.deaths = self.backoff.deaths_after(child.deaths, uptime)
        delay = self.backoff.delay(child.deaths)
        child.restart_at = now + delay
        self.say(f"{child.name} (pid {child.popen.pid}) died: {describe_exit(code)} after "
                 f"{uptime:.1f}s up; restarting in {delay:g}s")

    def _start(self, child: Child) -> None:
        again = child.popen is not None
        try:
            popen = self._spawn(child)
        except OSError as exc:  # a command not found: tried again, like any death
            child.deaths += 1
            delay = self.backoff.delay(child.deaths)
            child.restart_at = time.monotonic() + delay
            self.say(f"{child.name} could not start ({exc}); trying again in {delay:g}s")
            return
        child.popen = popen
        child.started, child.restart_at = time.monotonic(), None
        child.pids.append(child.popen.pid)
        self.note(f"{child.name} {'restarted' if again else 'started'} (pid {child.popen.pid})")
        if child.popen.stdout is not None:
            threading.Thread(target=_relay, args=(child.popen.stdout,
                                                  child.name.ljust(self.width)),
                             name=f"orch-relay-{child.name}", daemon=True).start()

    def _spawn(self, child: Child) -> subprocess.Popen[bytes]:
        """The process, its output to its log file (appended) or piped to the screen."""
        if self.log_dir is None:
            return subprocess.Popen(child.command, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{child.name}.log").open("ab") as log:
            return subprocess.Popen(child.command, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def _stop_all(self) -> None:
        """SIGTERM to every process group, then SIGKILL to those still there after the grace."""
        running = [c.popen for c in self.children
                   if c.popen is not None and c.restart_at is None and c.popen.poll() is None]
        count = f"{len(running)} process{'' if len(running) == 1 else 'es'}"
        self.say(f"stopping {count} (SIGTERM; SIGKILL after {self.grace:g}s)")
        for popen in running:
            _signal_group(popen, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for popen in running:
            try:
                popen.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                _signal_group(popen, signal.SIGKILL)
                popen.wait()
        for popen in running:  # what a process started of its own (a pool's children)
            _signal_group(popen, signal.SIGKILL)


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)


def _relay(stream: IO[bytes], prefix: str) -> None:
    """A child's output, line by line, prefixed with its name."""
    for raw in iter(stream.readline, b""):
        sys.stdout.write(f"{prefix} | {raw.decode(errors='replace').rstrip()}\n")
        sys.stdout.flush()
    stream.close()


def _say(message: str) -> None:
    sys.stdout.write(f"supervisor | {message}\n")
    sys.stdout.flush()
