"""The `orchestrator` command: run the API, a worker pool, the whole dev stack; submit, watch."""

import json
import os
import secrets
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlparse

import typer
from rich.console import Console

from core.errors import ConfigError
from core.settings import DATA_DIR, OrchestratorSettings, get_settings
from workers import operators
from workers.limits_cli import limits

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import datetime

    from sqlmodel import Session

    from core.db import Database
    from core.models import Scope
    from core.vault import Vault

app = typer.Typer(help="Orchestrator: intents in, jobs on Celery, signed callbacks out.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
keys = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys, name="keys")
memory = typer.Typer(help="The memory store.", no_args_is_help=True)
app.add_typer(memory, name="memory")
vault_commands = typer.Typer(help="Secrets at rest (ORCHESTRATOR_SECRET_KEY).",
                             no_args_is_help=True)
app.add_typer(vault_commands, name="secrets")
rate = typer.Typer(help="Requests per second per key and per tenant (over RATE_LIMIT_*).",
                   no_args_is_help=True)
limits.add_typer(rate, name="rate")
app.add_typer(limits, name="limits")
app.add_typer(operators.jobs, name="jobs")
app.command()(operators.queues)
app.command()(operators.workers)
console = Console()
errors = Console(stderr=True)
PROCFILE = Path("Procfile")


STILL_RUNNING = 3


def main() -> None:
    """The `orchestrator` command; an invalid setting or an unreachable API is one line."""
    import httpx

    try:
        app()
    except ConfigError as exc:
        _fail(str(exc), 2)
    except httpx.TransportError as exc:
        base = exc.request.url.copy_with(path="/", query=None, fragment=None)
        _fail(f"could not reach the API at {base} ({type(exc).__name__}: {exc}); start the "
              "stack with `make run` (or `orchestrator dev`), or pass --url", 1)


def _say(message: str) -> None:
    """One plain line on stderr."""
    errors.print(message, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> None:
    _say(message)
    raise SystemExit(code) from None


@app.command()
def api() -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from core.logformat import uvicorn_config

    settings = get_settings()
    # uvicorn's own lines from warnings up; the API's (its start line, errors) from INFO.
    # The audit lines (approvals, keys made and revoked) from INFO too.
    ours = {"handlers": ["default"], "level": "INFO", "propagate": False}
    log_config = uvicorn_config({**LOGGING_CONFIG, "loggers": {
        **LOGGING_CONFIG["loggers"], "api": ours, "orchestrator.audit": dict(ours)}},
        settings.log.format)
    # A WebSocket message gets the body limit too: over it, a close frame 1009 (too big).
    uvicorn.run("api.main:create_app", factory=True, host=settings.api.host,
                port=settings.api.port, workers=settings.api.workers, log_level="warning",
                access_log=False, log_config=log_config, ws_max_size=settings.api.max_body_bytes)


@app.command()
def worker(
    pool: Annotated[list[str], typer.Option(help="Pool(s) to consume; repeat for several.")],
    concurrency: Annotated[int | None, typer.Option(
        help="Threads or processes (default POOL_<NAME>_CONCURRENCY).")] = None,
    prefetch: Annotated[int | None, typer.Option(
        help="Messages held per thread or process, running or waiting for one (default: "
        "the pool's).")] = None,
) -> None:
    """Run one worker process for a pool (threads, or prefork for CPU-bound pools)."""
    import workers.signals  # noqa: F401  (per-process resources, heartbeats, MCP discovery)
    from core.logformat import quiet_libraries
    from tasks.engine.app import celery_app
    from tasks.engine.pools import POOLS

    unknown = [p for p in pool if p not in POOLS]
    if unknown:
        raise typer.BadParameter(f"unknown pool {unknown}; pools are {sorted(POOLS)}")
    settings = get_settings()
    quiet_libraries()  # Celery's own text logging leaves other loggers' levels as they are
    if settings.log.format == "json":
        _json_worker_logs()
    prefetch = prefetch or min(POOLS[p].prefetch for p in pool)
    # A worker serving a network-bound pool runs threads, even beside a CPU-bound one.
    execution = "prefork" if all(POOLS[p].execution == "prefork" for p in pool) else "threads"
    # In JSON, Celery's banner (printed, not logged) is left out.
    banner = ["--quiet"] if settings.log.format == "json" else []
    celery_app.worker_main([
        *banner, "worker", "--queues", ",".join(POOLS[p].queue for p in pool),
        "--hostname", f"{'+'.join(pool)}@%h-{os.getpid()}", "--pool", execution,
        "--concurrency", str(concurrency or max(settings.pool.concurrency(p) for p in pool)),
        "--prefetch-multiplier", str(prefetch), "--loglevel", "INFO", "--without-gossip",
        "--without-mingle",
    ])


def _json_worker_logs() -> None:
    """JSON from the start (Celery warns before it sets logging up); Celery leaves logging to
    us once a `setup_logging` receiver is connected."""
    from celery.signals import setup_logging

    from core.logformat import configure

    def setup(**_: Any) -> None:
        configure("json")

    configure("json")
    setup_logging.connect(setup, weak=False)


@app.command()
def sweeper() -> None:
    """Run the sweeper: due callbacks, lost jobs, steps of dead workers, expired waits."""
    from workers.sweeper import run

    run()


@app.command()
def flower(
    address: Annotated[str, typer.Option(
        envvar="FLOWER_ADDRESS", help="Address Flower binds to (0.0.0.0 in a container).")] =
        "127.0.0.1",
) -> None:
    """Run the Flower dashboard (basic auth from FLOWER_BASIC_AUTH)."""
    from tasks.engine.app import celery_app

    settings = get_settings()
    if not settings.flower.basic_auth:
        raise typer.BadParameter("set FLOWER_BASIC_AUTH=user:password; Flower runs with auth only")
    _protect_flower_metrics()
    celery_app.start(["flower", f"--port={settings.flower.port}", f"--address={address}",
                      f"--basic-auth={settings.flower.basic_auth}"])


def _protect_flower_metrics() -> None:
    """Flower serves /metrics and /healthcheck without its basic auth: ask for it there too."""
    from flower.views.monitor import Healthcheck, Metrics

    def prepare(handler: Any) -> None:
        handler.current_user  # noqa: B018 - reading it checks the basic auth (401 if wrong)

    for view in (Metrics, Healthcheck):
        view.prepare = prepare


@app.command()
def migrate() -> None:
    """Create or upgrade the job store's schema."""
    from core.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database.url, settings.orchestrator.secret_key)


@vault_commands.command("new-key")
def secrets_new_key() -> None:
    """Print a new key for ORCHESTRATOR_SECRET_KEY."""
    from core.vault import new_key

    print(new_key())


@vault_commands.command("rotate")
def secrets_rotate() -> None:
    """Re-seal every stored secret with the first ORCHESTRATOR_SECRET_KEY (and seal any left
    in the clear); afterwards the other keys may be removed."""
    from core.db import Database
    from core.store.sealing import reseal
    from core.vault import Vault

    settings = get_settings()
    vault = Vault(settings.orchestrator.secret_key)
    db = Database(settings.database.url)
    with db.write() as session:
        count = reseal(session.connection(), vault.reseal)
    db.dispose()
    console.print(f"{count} secrets sealed with the first key")


@memory.command("reembed")
def memory_reembed(
    batch: Annotated[int, typer.Option(help="Texts embedded per call.")] = 256,
) -> None:
    """Re-embed every item another model embedded with the configured embedder."""
    from rich.progress import Progress

    from core.memory.reembed import reembed, stale_items
    from tasks.engine.resources import open_resources

    settings = get_settings()
    embeddings = settings.embeddings.model_copy(update={"batch_size": batch})
    resources = open_resources(settings.model_copy(update={"embeddings": embeddings}),
                               runner=False)
    memory = resources.memory
    try:
        with Progress(console=console) as progress:
            task = progress.add_task(f"re-embedding with {memory.embedder.name}",
                                     total=stale_items(memory))
            moved = reembed(memory, lambda n: progress.advance(task, n))
    finally:
        resources.close()
    console.print(f"{moved} items re-embedded with {memory.embedder.name}")


ScopeOption = Annotated[list[str] | None, typer.Option(
    "--scope", help="A scope the key gets (repeat for several): jobs:write, jobs:read, approve, "
    "registry:write, memory:write, admin, operator. Default: all but operator.")]


@keys.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name.")] = "default",
    operator: Annotated[bool, typer.Option(
        help="Make the tenant an operator and give the key the `operator` scope: it may also "
        "reset shared circuit breakers and manage every tenant's keys.")] = False,
    scope: ScopeOption = None,
    name: Annotated[str, typer.Option(help="A name for people (what uses the key).")] = "",
    expires_in_days: Annotated[float | None, typer.Option(
        help="Days until the key stops working (default: never).")] = None,
) -> None:
    """Create an API key for a tenant; print the tenant id, the key's id and scopes, the
    callback signing secret, then the key (the last line)."""
    from core.vault import Vault

    made = _create_key(tenant, Vault(get_settings().orchestrator.secret_key), operator,
                       _scopes(scope), name, expires_in_days)
    print(f"tenant: {made.tenant_id} ({tenant})")
    print(f"key id: {made.key_id}; scopes: {made.scopes}")
    print(f"webhook secret: {made.secret}")
    print(made.raw)


@dataclass(frozen=True)
class _Made:
    tenant_id: str
    key_id: str
    scopes: str
    secret: str
    raw: str


def _scopes(given: list[str] | None) -> "set[Scope] | None":
    from core.models import Scope

    if not given:
        return None
    try:
        return {Scope(value) for value in given}
    except ValueError:
        _fail(f"unknown scope in {given}; choose from {', '.join(s.value for s in Scope)}", 2)
        raise


def _create_key(tenant: str, vault: "Vault", operator: bool = False,
                scopes: "set[Scope] | None" = None, name: str = "",
                expires_in_days: float | None = None) -> _Made:
    from core import deliveries
    from core.models import utcnow
    from core.store.keys import find_key, hash_key
    from core.store.tenants import create_tenant_key

    expires = None if expires_in_days is None else utcnow() + timedelta(days=expires_in_days)
    with _store() as db, db.write() as session:
        created, raw = create_tenant_key(session=session, tenant_name=tenant, vault=vault,
                                         operator=operator, scopes=scopes, name=name,
                                         expires_at=expires)
        secrets = deliveries.signing_secrets(session=session, tenant_id=created.id,
                                             vault=vault)
        key = find_key(session=session, key_id=_key_id(session, hash_key(raw)))
        return _Made(created.id, key.id, key.scopes, secrets[0], raw)


def _key_id(session: "Session", key_hash: str) -> str:
    from sqlmodel import select

    from core.models import ApiKey

    return session.exec(select(ApiKey.id).where(ApiKey.key_hash == key_hash)).one()


@contextmanager
def _store() -> "Iterator[Database]":
    """The job store of DATABASE_URL, for one command."""
    from core.db import Database

    db = Database(get_settings().database.url)
    try:
        yield db
    finally:
        db.dispose()


def _run_store(action: "Callable[[Session], None]", write: bool = True) -> None:
    """Run `action` in one transaction; a missing key or tenant is one line and exit 1."""
    from core.errors import OrchestratorError

    try:
        with _store() as db, (db.write() if write else db.read()) as session:
            action(session)
    except OrchestratorError as exc:
        _fail(str(exc), 1)


@keys.command("list")
def keys_list(tenant: Annotated[str, typer.Option(help="Tenant name or id.")] = "default",
              ) -> None:
    """The tenant's keys (never the keys themselves): id, name, scopes, created, last used,
    expires, revoked."""
    from core.store.keys import find_tenant, list_keys

    def show(session: "Session") -> None:
        found = find_tenant(session=session, tenant=tenant)
        print(f"tenant: {found.id} ({found.name})")
        for key in list_keys(session=session, tenant_id=found.id):
            print(f"{key.id}  name={key.name or '-'}  scopes={key.scopes or '-'}  "
                  f"created={_when(key.created_at)}  last_used={_when(key.last_used_at)}  "
                  f"expires={_when(key.expires_at)}  revoked={_when(key.revoked_at)}")

    _run_store(show, write=False)


def _when(moment: "datetime | None") -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"


@keys.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_…).")]) -> None:
    """Revoke a key: every API process refuses it within API_KEY_CACHE_SECONDS."""
    from core.store.keys import revoke_key

    _run_store(lambda session: print(f"revoked {revoke_key(session=session, key_id=key_id).id}"))


@keys.command("rotate")
def keys_rotate(key_id: Annotated[str, typer.Argument(help="The key's id (key_…).")]) -> None:
    """Revoke a key and make its successor (same tenant, name, scopes, expiry); print the new
    key's id, then the new key (the last line)."""
    from core.store.keys import rotate_key

    def rotate(session: "Session") -> None:
        new, raw = rotate_key(session=session, key_id=key_id)
        print(f"revoked {key_id}; new key id: {new.id}; scopes: {new.scopes}")
        print(raw)

    _run_store(rotate)


@rate.command("set")
def limits_set(
    tenant: Annotated[str, typer.Option(help="Tenant name or id.")],
    key_rate: Annotated[float | None, typer.Option(
        min=0, help="Requests/s per key (0: no limit).")] = None,
    key_burst: Annotated[int | None, typer.Option(min=1, help="Burst per key.")] = None,
    tenant_rate: Annotated[float | None, typer.Option(
        min=0, help="Requests/s for all the tenant's keys (0: no limit).")] = None,
    tenant_burst: Annotated[int | None, typer.Option(min=1, help="Burst per tenant.")] = None,
    clear: Annotated[bool, typer.Option(
        help="Drop the tenant's overrides: the RATE_LIMIT_* settings apply again.")] = False,
) -> None:
    """Set a tenant's own rate limits (the others keep their value); API processes apply them
    within API_KEY_CACHE_SECONDS."""
    from core.store.keys import find_tenant
    from core.store.rates import clear_limits, set_limits

    def change(session: "Session") -> None:
        found = find_tenant(session=session, tenant=tenant)
        if clear:
            clear_limits(session=session, tenant_id=found.id)
        else:
            set_limits(session=session, tenant_id=found.id, key_rate=key_rate,
                       key_burst=key_burst, tenant_rate=tenant_rate, tenant_burst=tenant_burst)

    _run_store(change)
    limits_show(tenant)


@rate.command("show")
def limits_show(tenant: Annotated[str, typer.Option(help="Tenant name or id.")]) -> None:
    """The rate limits that apply to a tenant (its overrides, else the settings)."""
    from core.store.keys import find_tenant
    from core.store.rates import Rate, Rates, rates_for, tenant_limits

    settings = get_settings().rate_limit
    defaults = Rates(Rate(settings.key_rate, settings.key_burst),
                     Rate(settings.tenant_rate, settings.tenant_burst))

    def show(session: "Session") -> None:
        found = find_tenant(session=session, tenant=tenant)
        own = tenant_limits(session=session, tenant_id=found.id)
        rates = rates_for(own, defaults)
        print(f"tenant: {found.id} ({found.name}); "
              f"{'own overrides' if own else 'the RATE_LIMIT_* settings'}")
        print(f"per key: {rates.key.rate:g}/s, burst {rates.key.burst}")
        print(f"per tenant: {rates.tenant.rate:g}/s, burst {rates.tenant.burst}")

    _run_store(show, write=False)


def _dev_secret(path: Path, make: Any) -> str:
    if path.exists():
        return path.read_text().strip()
    value = str(make())
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def _dev_exposed(settings: OrchestratorSettings) -> str:
    """What `make run` offers: the operator's ORCHESTRATOR_EXPOSED_INTENTS if set (in the
    environment or .env), else everything, `debug.*` included."""
    if "exposed_intents" in settings.model_fields_set:
        return json.dumps(settings.exposed_intents)
    return json.dumps(["*"])


@app.command()
def dev(
    procfile: Annotated[Path, typer.Option(help="The processes to run (name: command).")] =
        PROCFILE,
    verbose: Annotated[bool, typer.Option(
        envvar="ORCHESTRATOR_VERBOSE", help="Every process's output on screen, prefixed with "
        "its name (default: to var/log/<name>.log).")] = False,
) -> None:
    """Set up and run the whole stack: broker, job store, API, every pool, Flower, the sweeper.

    Each process is restarted with backoff when it dies; Ctrl-C stops them all.
    """
    from core import broker
    from core.migrate import upgrade
    from core.vault import Vault, new_key
    from workers.supervisor import Supervisor, read_procfile

    processes = read_procfile(procfile)
    settings = get_settings()
    DATA_DIR.mkdir(exist_ok=True)
    url = urlparse(settings.broker.url)
    process = None
    if url.hostname in ("127.0.0.1", "localhost") and not broker.is_up(settings.broker.url):
        process = broker.start(url.port or 6379, DATA_DIR / "broker")
    secret_keys = settings.orchestrator.secret_key or [
        _dev_secret(DATA_DIR / "secret-key", new_key)]
    upgrade(settings.database.url, secret_keys)
    api_key = _dev_secret(DATA_DIR / "dev-api-key",
                          lambda: _create_key("dev", Vault(secret_keys), operator=True).raw)
    flower_auth = settings.flower.basic_auth or _dev_secret(
        DATA_DIR / "flower-auth", lambda: f"admin:{secrets.token_urlsafe(12)}")
    base = f"http://{settings.api.host}:{settings.api.port}"
    logs = None if verbose else DATA_DIR / "log"
    _welcome(base, api_key, flower_auth, settings.flower.port, logs)
    env = {**os.environ, "FLOWER_BASIC_AUTH": flower_auth,
           "ORCHESTRATOR_SECRET_KEY": ",".join(secret_keys),
           "ORCHESTRATOR_EXPOSED_INTENTS": _dev_exposed(settings.orchestrator),
           # Flower's task views need the workers' task events (off by default).
           "WORKER_SEND_EVENTS": os.environ.get("WORKER_SEND_EVENTS",
                                                str("flower" in processes).lower()),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    supervisor = Supervisor(processes, env, log_dir=logs, note=None if logs is None else
                            _note_to(DATA_DIR / "log" / "supervisor.log"))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, supervisor.stop)
    threading.Thread(target=_announce_ready, args=(base, _pools_of(processes),
                                                   supervisor.stopping),
                     name="orch-ready", daemon=True).start()
    try:
        supervisor.run()
    finally:
        if process is not None:
            broker.stop(process)


def _welcome(base: str, api_key: str, flower_auth: str, flower_port: int,
             logs: Path | None) -> None:
    """What a person needs to use the stack: where it is, the key, Flower's credentials."""
    where = (f"{logs}/<process>.log  (`make run VERBOSE=1` keeps them on screen)"
             if logs else "on screen, each line prefixed with its process")
    console.print(f"[bold]API[/]      {base}  (docs {base}/docs, console {base}/console)\n"
                  f"[bold]API key[/]  {api_key}  ({DATA_DIR / 'dev-api-key'})\n"
                  f"[bold]Flower[/]   http://127.0.0.1:{flower_port}  ({flower_auth}; "
                  f"{DATA_DIR / 'flower-auth'})\n"
                  f"[bold]Logs[/]     {where}\n"
                  "Ctrl-C stops everything.", soft_wrap=True, highlight=False)


def _note_to(path: Path) -> "Callable[[str], None]":
    """The supervisor's routine lines (a process started) to its log file, not the screen."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def note(message: str) -> None:
        with path.open("a") as log:
            log.write(f"supervisor | {message}\n")

    return note


def _pools_of(processes: dict[str, list[str]]) -> list[str]:
    """The pools the Procfile's workers consume (`--pool NAME`, repeatable)."""
    return sorted({argv[i + 1] for argv in processes.values()
                   for i, arg in enumerate(argv[:-1]) if arg == "--pool"})


def _announce_ready(base: str, pools: list[str], stopping: threading.Event) -> None:
    """One line once the API answers and every pool of the Procfile has a live worker."""
    import httpx

    while not stopping.wait(0.3):
        try:
            checks = httpx.get(f"{base}/ready", timeout=2).json()["checks"]
        except (httpx.HTTPError, ValueError, KeyError):
            continue
        if all(checks.get("pools", {}).get(pool, {}).get("live") for pool in pools):
            console.print(f"[bold green]ready[/]: API at {base}  (docs {base}/docs); pools "
                          f"live: {', '.join(pools) or 'none'}", soft_wrap=True)
            return


def _client(url: str | None, api_key: str | None) -> Any:
    import httpx

    settings = get_settings()
    key = api_key or os.environ.get("ORCHESTRATOR_API_KEY") or _read(DATA_DIR / "dev-api-key")
    if not key:
        raise typer.BadParameter("no API key: pass --api-key or set ORCHESTRATOR_API_KEY")
    base = url or f"http://{settings.api.host}:{settings.api.port}"
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def _parse_inputs(pairs: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--input {pair!r}: write it as key=value")
        try:
            inputs[key] = json.loads(value)
        except json.JSONDecodeError:
            inputs[key] = value
    return inputs


UrlOpt = Annotated[str | None, typer.Option(help="API base URL.")]
KeyOpt = Annotated[str | None, typer.Option(help="API key (or ORCHESTRATOR_API_KEY).")]


@app.command()
def submit(
    intent: str,
    input: Annotated[list[str] | None, typer.Option(
        "--input", "-i", help="key=value (JSON values allowed).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result (up to the server's "
                                       "ORCHESTRATOR_SYNC_TIMEOUT); exit 3 if it is still "
                                       "running then, 1 if it failed.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Submit a job and print the answer."""
    with _client(url, api_key) as client:
        body = {"intent": intent, "inputs": _parse_inputs(input or []), "wait": wait}
        response = client.post("/v1/jobs", json=body)
    console.print_json(response.text)
    if response.status_code >= 400:
        raise typer.Exit(1)
    job = response.json()
    if wait and job["status"] not in ("succeeded", "failed", "cancelled"):
        _say(f"job {job['job_id']} is still {job['status']} after the wait; follow it with: "
             f"orchestrator watch {job['job_id']}")
        raise typer.Exit(STILL_RUNNING)
    if wait and job["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def mcp(url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Serve the key's tenant's intents as MCP tools over stdio (for an assistant's config)."""
    import importlib

    import anyio

    # By import string, as `api` starts the app: the CLI talks to a running API over HTTP and
    # imports no route (the stdio server only relays to it).
    serve_stdio = importlib.import_module("api.mcp_server").serve_stdio
    settings = get_settings()
    key = api_key or os.environ.get("ORCHESTRATOR_API_KEY") or _read(DATA_DIR / "dev-api-key")
    if not key:
        raise typer.BadParameter("no API key: pass --api-key or set ORCHESTRATOR_API_KEY")
    base = url or settings.api.base_url
    anyio.run(serve_stdio, base, key, settings.orchestrator.sync_timeout)


@app.command()
def watch(job_id: str, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """A live view of a job's steps and events until it ends."""
    from core.watch import watch_job

    with _client(url, api_key) as client:
        raise typer.Exit(watch_job(client, job_id, console))
