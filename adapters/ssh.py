"""Commands on remote hosts over SSH (paramiko): pinned host keys, pooled connections, capped
output and a deadline that kills the command (hosts need a POSIX login shell).

Hosts are trusted settings (`SSH_HOSTS`, `SSH_HOSTS_FILE`), each granted to named tenants.
A host's key must be in its own known_hosts file (`RejectPolicy`): an unknown key is refused
and a changed one is a clear error. No agent and no key but the host's `key_file` are used.
Connecting goes through the host's breaker (`ssh:<name>`) and the shared retry policy.
"""

import select
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from adapters.breakers import Breakers
from adapters.upstream import Upstream
from core.errors import NotFound, OrchestratorError, UpstreamError
from core.settings import RetrySettings, SshSettings

EVERY_TENANT = "*"
READ_BYTES = 32 * 1024
POLL_SECONDS = 0.2
KILL_SECONDS = 5.0
PID_MARK = "orchestrator-pid="
MAX_PID_LINE = 64
OutputSink = Callable[[str, bytes], None]


class HostSpec(BaseModel):
    """A host commands may run on, and the tenants that may use it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
                      description="What steps call the host (its breaker is `ssh:<name>`).")
    address: str = Field(min_length=1, description="Host name or IP address to connect to.")
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(min_length=1)
    key_file: str = Field(min_length=1, description="The private key to log in with.")
    known_hosts: str = Field(min_length=1, description="A known_hosts file holding its key.")
    tenants: list[str] = Field(description='Tenant ids that may use it; ["*"]: every tenant.')

    def allows(self, tenant_id: str) -> bool:
        return EVERY_TENANT in self.tenants or tenant_id in self.tenants


def load_hosts(settings: SshSettings) -> dict[str, HostSpec]:
    """The hosts of `SSH_HOSTS_FILE` and `SSH_HOSTS` (which wins on a shared name)."""
    listed = TypeAdapter(list[HostSpec])
    hosts: list[HostSpec] = []
    if settings.hosts_file:
        hosts += listed.validate_json(Path(settings.hosts_file).read_bytes())
    if settings.hosts.strip():
        hosts += listed.validate_json(settings.hosts)
    return {host.name: host for host in hosts}


def granted(hosts: dict[str, HostSpec], name: str, tenant_id: str) -> HostSpec:
    """The host named `name` if the tenant may use it; NotFound otherwise (as for any other
    tenant's object: whether it exists is not told)."""
    host = hosts.get(name)
    if host is None or not host.allows(tenant_id):
        raise NotFound(f"SSH host '{name}' not found")
    return host


class HostKeyRefused(OrchestratorError):
    """Raised when a host's key is not in its known_hosts file, or differs from the one there."""

    status_code = 502
    expected = True


class CommandTimeout(OrchestratorError):
    """Raised when a command ran past its deadline and was killed."""

    status_code = 504


@dataclass
class Capped:
    """One output stream: the bytes kept (up to the cap) and whether more came."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes) -> bytes:
        """Keep what fits; returns the kept part (to stream it)."""
        kept = chunk[: self.cap - len(self.data)]
        self.data += kept
        self.truncated = self.truncated or len(kept) < len(chunk)
        return kept

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Result:
    """What a command did: its exit status, output (capped), and how long it ran."""

    exit_status: int | None
    stdout: Capped
    stderr: Capped
    duration_ms: int
    timed_out: bool


def wrap(command: str) -> str:
    """The command as sent: the login shell prints its pid (the session's process group), then
    becomes `sh -c command`, so a deadline can kill the whole group."""
    return f"echo {PID_MARK}$$; exec sh -c {shlex.quote(command)}"


@dataclass
class _Run:
    """One command's session: its streams (capped), and the pid it reported first."""

    channel: paramiko.Channel
    sink: OutputSink
    stdout: Capped
    stderr: Capped
    pid: int | None = None
    head: bytes = b""

    def stdout_chunk(self, chunk: bytes) -> None:
        if self.pid is None:
            self.head += chunk
            line, newline, rest = self.head.partition(b"\n")
            if not newline and len(self.head) < MAX_PID_LINE:
                return
            pid = line.removeprefix(PID_MARK.encode())
            # No mark (a shell that printed something first): all of it is output, no pid.
            found = line.startswith(PID_MARK.encode()) and pid.isdigit()
            self.pid, chunk = (int(pid), rest) if found else (0, self.head)
        self.keep("stdout", self.stdout, chunk)

    def keep(self, name: str, stream: Capped, chunk: bytes) -> None:
        if kept := stream.add(chunk):
            self.sink(name, kept)

    def drain(self) -> bool:
        """Read what is ready on both streams; False once both ended and the status is in."""
        channel = self.channel
        while channel.recv_ready():
            self.stdout_chunk(channel.recv(READ_BYTES))
        while channel.recv_stderr_ready():
            self.keep("stderr", self.stderr, channel.recv_stderr(READ_BYTES))
        return not (channel.exit_status_ready() and not channel.recv_ready()
                    and not channel.recv_stderr_ready())

    def kill(self) -> None:
        """SIGKILL the command's process group from a second session, then close the first."""
        transport = self.channel.get_transport()
        if self.pid and transport is not None and transport.is_active():
            try:
                killer = transport.open_session(timeout=KILL_SECONDS)
                killer.settimeout(KILL_SECONDS)
                killer.exec_command(f"kill -KILL -- -{self.pid} {self.pid}")
                killer.recv_exit_status()
                killer.close()
            except (OSError, paramiko.SSHException, EOFError):
                pass  # the connection is gone: so is the command's session
        self.channel.close()


def execute(channel: paramiko.Channel, command: str, *, cap: int, timeout: float,
            sink: OutputSink, stop: Callable[[], bool]) -> Result:
    """Run `command` on an open session channel, draining both streams until it exits, the
    deadline passes or `stop()` says so (then the command is killed)."""
    started = time.monotonic()
    run = _Run(channel, sink, Capped(cap), Capped(cap))
    channel.exec_command(wrap(command))
    timed_out = False
    while run.drain():
        if time.monotonic() - started > timeout or stop():
            timed_out = True
            run.kill()
            break
        select.select([channel], [], [], POLL_SECONDS)
    status = None if timed_out else channel.recv_exit_status()
    channel.close()
    return Result(status, run.stdout, run.stderr, int((time.monotonic() - started) * 1000),
                  timed_out)


class SshClient(Upstream):
    """Runs commands on the configured hosts; one per worker process, closed with it."""

    def __init__(self, settings: SshSettings, retry: RetrySettings, breakers: Breakers) -> None:
        super().__init__(breakers, retry)
        self.settings = settings
        self.hosts = load_hosts(settings)
        self._idle: dict[str, list[paramiko.SSHClient]] = {}
        self._lock = threading.Lock()

    def host(self, name: str, tenant_id: str) -> HostSpec:
        return granted(self.hosts, name, tenant_id)

    def run(self, host: HostSpec, command: str, *, timeout: float, sink: OutputSink,
            stop: Callable[[], bool]) -> Result:
        """Run `command` on `host` on a pooled connection (re-opened when it died)."""
        client, channel = self._session(host)
        try:
            return execute(channel, command, cap=self.settings.max_output_bytes,
                           timeout=timeout, sink=sink, stop=stop)
        finally:
            self._release(host, client)

    def _session(self, host: HostSpec) -> tuple[paramiko.SSHClient, paramiko.Channel]:
        """A session channel on an idle connection, or on a new one through the breaker."""
        while (client := self._take(host)) is not None:
            try:
                return client, self._open(client)
            except (paramiko.SSHException, OSError, EOFError):
                client.close()  # died while idle: try the next, then a new one
        fresh = self.guarded(f"ssh:{host.name}", lambda: self._connect(host))
        try:
            return fresh, self._open(fresh)
        except BaseException:
            fresh.close()
            raise

    def _open(self, client: paramiko.SSHClient) -> paramiko.Channel:
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise EOFError("connection closed")
        return transport.open_session(timeout=self.settings.connect_timeout)

    def _connect(self, host: HostSpec) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(host.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                host.address, port=host.port, username=host.user, key_filename=host.key_file,
                timeout=self.settings.connect_timeout, banner_timeout=self.settings.banner_timeout,
                auth_timeout=self.settings.auth_timeout, allow_agent=False, look_for_keys=False)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyRefused(
                f"SSH host {host.name}: its key CHANGED ({exc.key.get_name()} "
                f"{exc.key.get_base64()[:24]}… is not the key in {host.known_hosts}); refusing "
                "to connect. If the host was re-keyed, update its known_hosts entry") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise UpstreamError(f"ssh:{host.name}", f"authentication failed: {exc}",
                                status=401) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyRefused(
                    f"SSH host {host.name}: its key is unknown (not in {host.known_hosts}); "
                    "refusing to connect. Add the host's key to that file") from None
            raise UpstreamError(f"ssh:{host.name}", f"{type(exc).__name__}: {exc}") from exc
        return client

    def _take(self, host: HostSpec) -> paramiko.SSHClient | None:
        with self._lock:
            idle = self._idle.get(host.name)
            return idle.pop() if idle else None

    def _release(self, host: HostSpec, client: paramiko.SSHClient) -> None:
        transport = client.get_transport()
        with self._lock:
            idle = self._idle.setdefault(host.name, [])
            if transport is not None and transport.is_active() and \
                    len(idle) < self.settings.idle_connections:
                idle.append(client)
                return
        client.close()

    def close(self) -> None:
        with self._lock:
            clients = [client for idle in self._idle.values() for client in idle]
            self._idle.clear()
        for client in clients:
            client.close()
