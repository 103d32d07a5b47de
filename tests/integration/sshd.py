"""A real OpenSSH sshd on a loopback port, with generated host and user keys: the tests' host."""

import getpass
import os
import signal
import socket
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from tests import services

SSHD = "/usr/sbin/sshd"
CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {root}/host_key
AuthorizedKeysFile {root}/authorized_keys
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers {user}
LogLevel INFO
"""


def keygen(path: Path) -> str:
    """A new ed25519 key pair at `path` (and `path`.pub); returns the public key."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Sshd:
    """A running sshd: where it listens, who logs in with which key, which host key it has."""

    root: Path
    port: int
    user: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def key_file(self) -> str:
        return str(self.root / "user_key")

    def known_hosts(self, name: str = "known_hosts", key: str | None = None) -> str:
        """A known_hosts file pinning `key` (default: this server's real host key)."""
        pub = (self.root / "host_key.pub").read_text() if key is None else key
        entry = " ".join([f"[127.0.0.1]:{self.port}", *pub.split()[:2]]) if pub else ""
        path = self.root / name
        path.write_text(entry + "\n")
        return str(path)

    def host(self, name: str, tenants: list[str],
             known_hosts: str | None = None) -> dict[str, object]:
        """An entry of SSH_HOSTS for this server."""
        return {"name": name, "address": "127.0.0.1", "port": self.port, "user": self.user,
                "key_file": self.key_file, "known_hosts": known_hosts or self.known_hosts(),
                "tenants": tenants}

    def start(self) -> None:
        """Start it (again) with its keys and config, on its port."""
        log = (self.root / "sshd.log").open("ab")
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
                                        stdout=log, stderr=subprocess.STDOUT)
        _wait(self.port, self.process)

    def stop(self) -> None:
        """Stop the server and every session it forked (their connections die with them)."""
        if self.process is None:
            return
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                                  text=True).stdout.split()
        for pid in [*children, str(self.process.pid)]:
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None


def start(root: Path) -> Sshd:
    """Generate host and user keys under `root` and start sshd in the foreground there."""
    root.mkdir(parents=True, exist_ok=True)
    keygen(root / "host_key")
    (root / "authorized_keys").write_text(keygen(root / "user_key") + "\n")
    port, user = services.free_port(), getpass.getuser()
    (root / "sshd_config").write_text(CONFIG.format(port=port, root=root, user=user))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation dir
    server = Sshd(root, port, user)
    server.start()
    return server


def _wait(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {port} in {timeout}s")
