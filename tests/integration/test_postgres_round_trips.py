"""Fewer round trips to Postgres: reads without a transaction (`Database.read`), and what has
to hold without one (the vector index's per-search settings still reach its query); a
record's writes sent in one pipeline (`pipelined`), their errors still SQLAlchemy's."""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import psycopg
import pytest
from sqlalchemy import Connection, event, insert, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from adapters.vectors import PostgresIndex
from core.db import Database, pipelined
from core.memory.tables import ITEMS, MemoryScope, item_id_of, item_key_of, scope_of
from core.migrate import upgrade
from core.models import JobStatus, utcnow
from core.store.ledger import StartRecord, finish_step, record_starts
from core.store.queries import get_job
from core.store.submission import submit_job
from core.store.tables import NewStep, new_job_id
from core.store.tenants import create_tenant_key
from core.vault import Vault, new_key
from tests.integration.conftest import own_database
from tests.unit.test_store import begin, submit

DIM = 256
# The shape of the index's semantic query (`PostgresIndex.semantic`), for its plan.
SEARCH = (f"SELECT id FROM memory_items WHERE dim = {DIM} AND scope = :scope AND model = 'm' "
          f"ORDER BY embedding::vector({DIM}) <=> array_fill(0.5, ARRAY[{DIM}])::vector LIMIT 20")


@pytest.fixture(scope="module")
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Database]:
    logs: Path = tmp_path_factory.mktemp("postgres_round_trips")
    url = own_database(request, "postgres", f"trips_{uuid.uuid4().hex[:8]}", logs)
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def _state(session: Session, pid: int) -> str:
    """What Postgres says the backend `pid` is doing, asked by another connection."""
    return str(session.execute(text("SELECT state FROM pg_stat_activity WHERE pid = :pid"),
                               {"pid": pid}).scalar_one())


def test_a_read_holds_no_transaction_open_between_its_statements(db: Database) -> None:
    with db.read() as session, db.write() as other:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # A transaction would show "idle in transaction", and cost a BEGIN and a ROLLBACK.
        assert _state(other, pid) == "idle"


def test_a_write_is_still_one_transaction(db: Database) -> None:
    with db.write() as session, db.read() as other:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert _state(other, pid) == "idle in transaction"


def _items(scope: str, tenant_id: str, vectors: np.ndarray) -> list[dict[str, object]]:
    rows = []
    for i, vector in enumerate(vectors):
        item_id = item_id_of(scope, f"item {i}")
        rows.append({"id": item_id, "key": item_key_of(item_id), "scope": scope,
                     "tenant_id": tenant_id, "namespace": scope, "text": f"item {i}",
                     "tags": [], "metadata": {}, "model": "m", "dim": DIM, "embedding": vector})
    return rows


def test_a_namespace_of_a_tenth_of_the_table_gets_all_its_nearest_items(db: Database) -> None:
    """The HNSW walk goes on past other namespaces' items (iterative scans, set for each
    search): without it, the 40 nearest items of the whole table are filtered down to the
    namespace's share of them, here about 4 of the 20 asked for."""
    rng = np.random.default_rng(7)
    with db.write() as session:
        tenant, _ = create_tenant_key(session=session, tenant_name="vectors", vault=Vault(
            [new_key()]))
        big, small = scope_of(tenant.id, "big"), scope_of(tenant.id, "small")
        for scope, n in ((big, 2700), (small, 300)):
            session.execute(insert(ITEMS), _items(scope, tenant.id, rng.standard_normal(
                (n, DIM), dtype=np.float32)))
    with db.write() as session:
        session.execute(text("ANALYZE memory_items"))
    scope = MemoryScope(scope=small, tenant_id=tenant.id, namespace="small", model="m", dim=DIM)
    with db.read() as session:
        # The HNSW index, as the planner picks on a large table (on this small one it would
        # read the namespace's rows by their index and sort them).
        session.execute(text("SET enable_sort = off"))
        try:
            plan = session.execute(text(f"EXPLAIN {SEARCH}"), {"scope": small}).scalars().all()
            assert any("ix_memory_items_hnsw_256" in line for line in plan)
            hits = PostgresIndex().semantic(session, scope, rng.standard_normal(
                DIM, dtype=np.float32), limit=20, tags=[])
        finally:
            session.execute(text("RESET enable_sort"))
    assert len(hits) == 20


@pytest.fixture(scope="module")
def tenant(db: Database) -> str:
    with db.write() as session:
        found, _ = create_tenant_key(session=session, tenant_name="trips", vault=Vault(
            [new_key()]))
        return found.id


@pytest.fixture
def sent(db: Database) -> Iterator[list[tuple[str, bool]]]:
    """Each statement sent meanwhile: its verb, and whether it went in a pipeline."""
    seen: list[tuple[str, bool]] = []

    def note(conn: Connection, _cursor: object, statement: str, *_: object) -> None:
        raw = cast("psycopg.Connection[object]", conn.connection.dbapi_connection)
        seen.append((statement.split()[0], bool(raw.pgconn.pipeline_status)))

    event.listen(db.engine, "before_cursor_execute", note)
    yield seen
    event.remove(db.engine, "before_cursor_execute", note)


def test_a_steps_end_sends_its_writes_in_one_pipeline(db: Database, tenant: str,
                                                      sent: list[tuple[str, bool]]) -> None:
    # Given a running step of a job of one
    job_id, _ = submit(db, tenant, steps=1, key=uuid.uuid4().hex)
    start = begin(db, job_id, 0)
    sent.clear()
    # When its end is recorded
    with db.write() as session:
        finish_step(session=session, job_id=job_id, index=0, output={"ok": True},
                    rest=start.rest)
    # Then the read waited for its answer, and the step's, the job's and the events' writes
    # went in one pipeline
    assert sent == [("SELECT", False), ("UPDATE", True), ("UPDATE", True), ("INSERT", True)]
    with db.read() as session:
        assert get_job(session=session, tenant_id=tenant, job_id=job_id).status == \
            JobStatus.succeeded


def test_an_end_with_a_callback_schedules_it_in_the_same_pipeline(
        db: Database, tenant: str, sent: list[tuple[str, bool]]) -> None:
    # Given a running step of a job of one, with a callback URL
    with db.write() as session:
        job, _, _ = submit_job(
            session=session, job_id=new_job_id(), tenant_id=tenant, intent="debug.echo",
            mode="agent", inputs={}, context={}, callback_url="https://hooks.example/done",
            steps=[NewStep("debug.echo", "tools", {})], idempotency_key=None, window=60)
    start = begin(db, job.id, 0)
    sent.clear()
    # When its end is recorded
    with db.write() as session:
        finish_step(session=session, job_id=job.id, index=0, output={"ok": True},
                    rest=start.rest)
    # Then its callback's outbox row went with the step's, the job's and the events' writes
    assert sent == [("SELECT", False)] + [("INSERT", True), ("UPDATE", True),
                                          ("UPDATE", True), ("INSERT", True)]
    with db.read() as session:
        due = session.execute(text("SELECT count(*) FROM deliveries WHERE job_id = :job"),
                              {"job": job.id}).scalar_one()
    assert due == 1


def test_the_recorders_starts_are_written_in_one_pipeline(
        db: Database, tenant: str, sent: list[tuple[str, bool]]) -> None:
    jobs = [submit(db, tenant, steps=1, key=uuid.uuid4().hex)[0] for _ in range(3)]
    sent.clear()
    with db.write() as session:
        record_starts(session=session, starts=[StartRecord(job_id, 0, 1, "host:7", utcnow())
                                               for job_id in jobs])
    # The jobs' lock and their steps' read waited for their answers; the steps', the jobs'
    # and the events' writes (one statement each, however many starts) went in one pipeline
    assert sent == [("SELECT", False), ("SELECT", False), ("UPDATE", True), ("UPDATE", True),
                    ("INSERT", True)]


def test_a_submission_sends_its_rows_in_one_pipeline(db: Database, tenant: str,
                                                     sent: list[tuple[str, bool]]) -> None:
    key = uuid.uuid4().hex
    job_id, created = submit(db, tenant, steps=2, key=key)
    # The key's lookup waited for its answer; the job, its key, its steps and its first event
    # went in one pipeline
    assert created and sent == [("SELECT", False)] + [("INSERT", True)] * 4
    # and a repeat of the key still finds the job
    assert submit(db, tenant, steps=2, key=key) == (job_id, False)


def test_a_pipelined_writes_error_is_sqlalchemys_and_nothing_of_it_is_kept(
        db: Database, tenant: str) -> None:
    """Whenever psycopg raises it (at a later statement, or only when the pipeline ends), a
    write's error is SQLAlchemy's, as the store's callers expect (`DataError` fails a step
    instead of retrying it, for one)."""
    job_id, _ = submit(db, tenant, steps=1, key=uuid.uuid4().hex)
    insert_event = "INSERT INTO job_events (job_id, seq, type, data, created_at) " \
                   "VALUES (%s, 1, 't', '{}', now())"
    with pytest.raises(IntegrityError, match="uq_job_events_job_seq"), db.write() as session, \
            pipelined(session):
        raw = cast("psycopg.Connection[object]",
                   session.connection().connection.dbapi_connection)
        raw.execute(insert_event, [job_id])
        raw.execute(insert_event, [job_id])  # the same number again
    with db.read() as session:
        kept = session.execute(text("SELECT count(*) FROM job_events WHERE job_id = :job "
                                    "AND type = 't'"), {"job": job_id}).scalar_one()
    assert kept == 0
