"""Several machines on one: Linux network namespaces on a bridge, each a "machine" (root only).

Each machine is a network namespace with one veth on a private bridge (itself in a namespace of
its own, the switch, out of reach of the host's firewall rules) and its own address, in its own
UTS namespace (its hostname) and PID namespace (its pids start at 1, so two machines' processes
may have the same pid, as on real machines). A machine's processes are the real CLI
commands, entered into those namespaces with `nsenter`; killing the machine's first process
ends every process in it at once, as a power cut would. The host keeps the bridge's first
address, as the operator's laptop on the same network would.
"""

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from core import broker
from tests import services

ROOT = Path(__file__).resolve().parent.parent
NETNS_ETC = Path("/etc/netns")  # `ip netns exec` binds /etc/netns/<ns>/* over /etc/*
REDIS_PORT = 6379
POSTGRES_PORT = 5432
API_PORT = 8000
SLOW_PORT = 8900


def is_root() -> bool:
    return os.geteuid() == 0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no route of the host covers (runs in parallel pick apart)."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], check=True,
                            capture_output=True, text=True).stdout
    taken = [ipaddress.ip_network(word, strict=False) for line in routes.splitlines()
             for word in line.split()[:2] if word[:1].isdigit() and "/" in word]
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.{random.randint(200, 254)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(other) for other in taken):
            return net
    raise RuntimeError("no free 10.x.y.0/24 for the bridge")


def _children(pid: int, timeout: float = 10) -> int:
    """The first child of `pid` (the PID namespace's first process under `unshare --fork`)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if found := path.read_text().split():
                return int(found[0])
        time.sleep(0.02)
    raise RuntimeError(f"process {pid} started no namespace")


def _boot(netns: str, hostname: str) -> tuple[subprocess.Popen[bytes], int]:
    """New UTS, PID and mount namespaces in `netns`, their first process holding them; the
    holder (`unshare`) and the host's pid of that first process."""
    holder = subprocess.Popen(
        ["ip", "netns", "exec", netns, "unshare", "--uts", "--pid", "--fork", "--mount",
         "--mount-proc", "sh", "-c", 'hostname "$0" && exec sleep infinity', hostname],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return holder, _children(holder.pid)
    except RuntimeError:
        holder.kill()
        holder.wait()
        raise


@dataclass
class Machine:
    """One "machine": a network, UTS and PID namespace with its address and hostname."""

    hostname: str
    netns: str
    address: str
    holder: subprocess.Popen[bytes]  # `unshare`, the parent of the namespace's first process
    init: int  # the host's pid of the namespace's first process (pid 1 inside)
    logs: Path
    processes: dict[str, services.Process] = field(default_factory=dict)
    scratch: list[Path] = field(default_factory=list)  # folders removed with the machine

    def _enter(self, uid: int | None = None, gid: int | None = None) -> list[str]:
        args = ["nsenter", "--target", str(self.init), "--net", "--uts", "--pid", "--mount",
                f"--wd={ROOT}"]
        if uid is not None and gid is not None:
            args += [f"--setgid={gid}", f"--setuid={uid}"]
        return [*args, "--"]

    def start(self, name: str, args: list[str], env: dict[str, str],
              uid: int | None = None, gid: int | None = None) -> services.Process:
        """Run `args` on this machine (its output in `<logs>/<hostname>-<name>.log`)."""
        process = services.Process([*self._enter(uid, gid), *args], env,
                                   self.logs / f"{self.hostname}-{name}.log", cwd=ROOT)
        self.processes[name] = process
        return process

    def call(self, args: list[str], env: dict[str, str],
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `args` on this machine to the end; its output, or an error with it."""
        done = subprocess.run([*self._enter(), *args], env=env, capture_output=True, text=True,
                              cwd=ROOT, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"{args} on {self.hostname} failed: {done.stderr[-2000:]}")
        return done

    def reaches(self, host: str, port: int) -> bool:
        """Whether a TCP connection from this machine to host:port is accepted."""
        probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=3)"
        done = subprocess.run([*self._enter(), str(services.BIN / "python"), "-c", probe],
                              capture_output=True, timeout=30)
        return done.returncode == 0

    def kill(self) -> None:
        """End every process of the machine at once (SIGKILL to its pid 1), as a power cut."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init, signal.SIGKILL)
        self.holder.wait()
        for process in self.processes.values():
            process.stop()
        for folder in self.scratch:
            shutil.rmtree(folder, ignore_errors=True)


class Network:
    """A bridge on a free 10.x.y.0/24, the host and the machines on it; `close()` removes
    them all."""

    def __init__(self, logs: Path) -> None:
        self.suffix = secrets.token_hex(3)
        self.bridge, self.switch = f"orb{self.suffix}", f"orch-{self.suffix}-switch"
        self.subnet = _free_subnet()
        hosts = list(self.subnet.hosts())
        self.host_address, self._free = str(hosts[0]), [str(h) for h in hosts[1:]]
        self.logs = logs
        self.machines: dict[str, Machine] = {}
        self.namespaces: list[str] = []
        self.veths: list[str] = []

    def open(self) -> None:
        """Create the bridge in a namespace of its own (the switch: the host's firewall rules,
        such as a FORWARD policy of DROP, do not apply there) and plug the host into it."""
        self.namespaces.append(self.switch)
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", self.bridge, "type", "bridge")
        _ip("-n", self.switch, "link", "set", self.bridge, "up")
        host = self._plug(f"orh{self.suffix}")
        _ip("addr", "add", f"{self.host_address}/{self.subnet.prefixlen}", "dev", host)
        _ip("link", "set", host, "up")

    def _plug(self, name: str) -> str:
        """A veth pair with one end on the switch's bridge; the other end's name, here."""
        self.veths.append(name)
        port = f"ors{self.suffix}{len(self.veths)}"
        _ip("link", "add", name, "type", "veth", "peer", "name", port)
        _ip("link", "set", port, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", port, "master", self.bridge, "up")
        return name

    def add(self, hostname: str) -> Machine:
        """A new machine on the bridge, with the next address and `hostname`."""
        netns, address = f"orch-{self.suffix}-{hostname}", self._free.pop(0)
        etc = NETNS_ETC / netns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("")  # no DNS server is reachable from a machine
        self.namespaces.append(netns)
        _ip("netns", "add", netns)
        self._wire(netns, address)
        self._write_hosts({**{m.hostname: m.address for m in self.machines.values()},
                           hostname: address})
        holder, init = _boot(netns, hostname)
        machine = Machine(hostname, netns, address, holder, init, self.logs)
        self.machines[hostname] = machine
        return machine

    def _wire(self, netns: str, address: str) -> None:
        """A veth pair: one end on the bridge, the other the namespace's eth0 at `address`."""
        inside = self._plug(f"orp{self.suffix}{len(self.veths)}")
        _ip("link", "set", inside, "netns", netns)
        _ip("-n", netns, "link", "set", inside, "name", "eth0")
        _ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")

    def _write_hosts(self, names: dict[str, str]) -> None:
        """Every machine's /etc/hosts names them all (rewritten in place: the files are bound)."""
        text = "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in names.items())
        for name in names:
            (NETNS_ETC / f"orch-{self.suffix}-{name}" / "hosts").write_text(text)

    def remove(self, hostname: str) -> None:
        """Kill the machine's processes and delete its namespace (its veth goes with it)."""
        self.machines.pop(hostname).kill()
        self._delete(f"orch-{self.suffix}-{hostname}")

    def _delete(self, netns: str) -> None:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)
        with contextlib.suppress(ValueError):
            self.namespaces.remove(netns)

    def close(self) -> None:
        """Every machine killed, every namespace, veth and the bridge deleted."""
        for hostname in list(self.machines):
            with contextlib.suppress(Exception):
                self.machines.pop(hostname).kill()
        for netns in reversed(list(self.namespaces)):  # the switch, with the bridge, last
            self._delete(netns)
        for veth in self.veths:  # one whose pair never left the host outlives the namespaces
            subprocess.run(["ip", "link", "del", veth], capture_output=True)


@contextlib.contextmanager
def network(logs: Path) -> Iterator[Network]:
    """A bridge and its machines, all removed on exit, even on an error."""
    net = Network(logs)
    try:
        net.open()
        yield net
    finally:
        net.close()


# --- the services of the "store" machine --------------------------------------------------------


def start_valkey(machine: Machine, password: str) -> str:
    """Valkey on the machine's bridge address (with a password); its URL."""
    data = Path(tempfile.mkdtemp(prefix="orch-netns-valkey-", dir=machine.logs))
    machine.start("valkey", [broker.server_binary(), "--port", str(REDIS_PORT), "--bind",
                             machine.address, "--requirepass", password, "--dir", str(data),
                             "--appendonly", "no", "--save", ""], dict(os.environ))
    url = f"redis://:{password}@{machine.address}:{REDIS_PORT}/0"
    broker.wait_ready(url, timeout=30)
    return url


def start_postgres(machine: Machine, subnet: ipaddress.IPv4Network, password: str) -> str:
    """Postgres 18 + pgvector (the pgserver wheel) on the machine's bridge address only, with
    password authentication from the bridge's subnet; the URL of its `orchestrator` database."""
    import pwd

    user = services._pg_user() or ""
    root = Path(tempfile.mkdtemp(prefix="orch-netns-pg-"))  # its user cannot enter the logs
    machine.scratch.append(root)
    secret = root / "pw"
    secret.write_text(password)
    if user:  # the folder and the password file its user's alone
        shutil.chown(root, user=user)
        shutil.chown(secret, user=user)
    secret.chmod(0o600)
    data = root / "data"
    subprocess.run([services._pg_bin("initdb"), "-D", str(data), "-U", "postgres",
                    "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={secret}",
                    "--no-sync"], check=True, capture_output=True, user=user or None)
    secret.unlink()
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {subnet} scram-sha-256\n")
    account = pwd.getpwnam(user) if user else None
    machine.start("postgres", [
        services._pg_bin("postgres"), "-D", str(data), "-p", str(POSTGRES_PORT), "-k", str(root),
        "-c", f"listen_addresses={machine.address}", "-c", "fsync=off",
        "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        "-c", "max_connections=300"], dict(os.environ),
        uid=account.pw_uid if account else None, gid=account.pw_gid if account else None)
    base = f"postgresql://postgres:{password}@{machine.address}:{POSTGRES_PORT}"
    _wait_postgres(f"{base}/postgres")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE orchestrator")
    return f"postgresql+psycopg://postgres:{password}@{machine.address}:{POSTGRES_PORT}" \
           "/orchestrator"


def _wait_postgres(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=3).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- the cluster: store, API (and sweeper), worker machines --------------------------------------


@dataclass
class Cluster:
    """The orchestrator on several machines: where its API is, its key, its environment."""

    net: Network
    env: dict[str, str]
    url: str
    key: str
    redis_url: str

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def add_worker(self, hostname: str, concurrency: int, slow: bool = False,
                   pools: tuple[str, ...] = ("tools",)) -> Machine:
        """A worker machine with one worker consuming `pools` (and, if `slow`, a slow HTTP
        server on its loopback for `debug.http`)."""
        machine = self.net.add(hostname)
        if slow:
            machine.start("slow", [str(services.BIN / "uvicorn"), "bench.slow:app", "--host",
                                   "127.0.0.1", "--port", str(SLOW_PORT), "--log-level",
                                   "warning", "--backlog", "4096"], self.env)
        selected = [arg for pool in pools for arg in ("--pool", pool)]
        machine.start("worker", [str(services.BIN / "orchestrator"), "worker", *selected,
                                 "--concurrency", str(concurrency)], self.env)
        return machine

    def wait_api(self, timeout: float = 90) -> None:
        services.wait_http(f"{self.url}/health", timeout=timeout)

    def wait_workers(self, hostnames: list[str], timeout: float = 90) -> None:
        """Until a tools worker of each machine in `hostnames` beats (stamps its pool)."""
        from tasks.engine import heartbeat

        client, deadline = self.redis(), time.monotonic() + timeout
        while True:
            live = heartbeat.live_workers(client, "tools", ttl=10)
            if all(any(f"@{h}-" in w for w in live) for h in hostnames):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"tools workers of {hostnames} not live; live: {live}")
            time.sleep(0.2)


def start_cluster(net: Network, settings: dict[str, str]) -> Cluster:
    """The store machine (Valkey, Postgres), the API machine (migrate, a key, the API, the
    sweeper), both reached over the bridge; worker machines are added with `add_worker` while
    the API starts (`wait_api`)."""
    from core.vault import new_key

    store, api = net.add("store"), net.add("api")
    password = secrets.token_urlsafe(16)
    redis_url = start_valkey(store, password)
    database_url = start_postgres(store, net.subnet, password)
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "API_HOST": api.address, "API_PORT": str(API_PORT),
           "API_PUBLIC_URL": f"http://{api.address}:{API_PORT}",
           "ORCHESTRATOR_SECRET_KEY": new_key(), "ORCHESTRATOR_EXPOSED_INTENTS": '["*"]',
           "CALLBACK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
           "PATH": f"{services.BIN}:{os.environ['PATH']}", **settings}
    orchestrator = str(services.BIN / "orchestrator")
    api.call([orchestrator, "migrate"], env)
    key = api.call([orchestrator, "keys", "create", "--tenant", "netns"],
                   env).stdout.split()[-1]
    api.start("api", [orchestrator, "api"], env)
    api.start("sweeper", [orchestrator, "sweeper"], env)
    return Cluster(net, env, f"http://{api.address}:{API_PORT}", key, redis_url)
