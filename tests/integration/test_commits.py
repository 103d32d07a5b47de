"""Group commits (`core.commits`) on both job stores: writes asked for at once commit together,
each gets its own result, a failing change fails alone, and a change runs in its asker's
context."""

import contextvars
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import Session

from core.commits import Commits
from core.db import Database
from core.events import LiveEvent
from core.models import EventType
from core.store.events import append_events
from core.store.queries import list_events
from core.store.tenants import create_tenant_key
from core.vault import Vault, new_key
from tests.unit.test_store import submit

ASKER: contextvars.ContextVar[str] = contextvars.ContextVar("asker", default="")


@pytest.fixture
def db(own_store: Database) -> Database:
    return own_store


@pytest.fixture
def jobs(db: Database) -> list[str]:
    """Twelve jobs of a new tenant."""
    with db.write() as session:
        tenant = create_tenant_key(session=session, vault=Vault([new_key()]),
                                   tenant_name=f"t-{uuid.uuid4().hex[:8]}")[0].id
    return [submit(db, tenant, steps=1, key=uuid.uuid4().hex)[0] for _ in range(12)]


@pytest.fixture
def commits(db: Database) -> Iterator[list[int]]:
    """The transactions committed meanwhile (one entry each)."""
    seen: list[int] = []

    def note(_conn: Any) -> None:
        seen.append(1)

    event.listen(db.engine, "commit", note)
    yield seen
    event.remove(db.engine, "commit", note)


def _note(job_id: str, text: str) -> Callable[[Session], list[LiveEvent]]:
    return lambda session: append_events(session=session, job_id=job_id, items=[
        (EventType.step_output, {"text": text})])


def _texts(db: Database, job_id: str) -> list[str]:
    with db.read() as session:
        return [e.data["text"] for e in list_events(session=session, job_id=job_id, after=0,
                                                    limit=100) if "text" in e.data]


def _ask_at_once(group: Commits, changes: list[Callable[[Session], Any]]) -> list[Any]:
    """Each change asked for by a thread of its own while the first is being written (so the
    others wait for it); what each thread got back, a result or an error."""
    got: list[Any] = [None] * len(changes)
    first = changes[0]

    def slow_first(session: Session) -> Any:
        deadline = time.monotonic() + 10
        while len(group._waiting) < len(changes) - 1 and time.monotonic() < deadline:
            time.sleep(0.005)  # the others ask meanwhile
        return first(session)

    def ask(n: int, change: Callable[[Session], Any]) -> None:
        try:
            got[n] = group.run(f"key{n:02d}", change)
        except Exception as exc:  # noqa: BLE001 - what the asker would raise
            got[n] = exc

    threads = [threading.Thread(target=ask, args=(0, slow_first))]
    threads[0].start()
    while not group._leading:
        time.sleep(0.001)
    threads += [threading.Thread(target=ask, args=(n, change))
                for n, change in enumerate(changes[1:], start=1)]
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return got


def test_writes_asked_for_at_once_commit_together(db: Database, jobs: list[str],
                                                  commits: list[int]) -> None:
    # Given twelve threads each writing an event of its own job, eleven asking while the
    # first is being written
    got = _ask_at_once(Commits(db), [_note(job_id, f"n{n}") for n, job_id in enumerate(jobs)])
    # Then the first committed alone and the eleven others in one transaction
    assert len(commits) == 2
    # And each thread got its own events back, and each is in the store
    assert [[e["data"]["text"] for e in events] for events in got] == [
        [f"n{n}"] for n in range(len(jobs))]
    assert [_texts(db, job_id) for job_id in jobs] == [[f"n{n}"] for n in range(len(jobs))]


def test_a_group_commits_at_most_its_size(db: Database, jobs: list[str],
                                          commits: list[int]) -> None:
    # Given groups of at most five, and twelve threads asking at once
    _ask_at_once(Commits(db, most=5), [_note(job_id, "x") for job_id in jobs])
    # Then the first is alone, and the eleven others go in groups of 5, 5 and 1
    assert len(commits) == 4
    assert all(_texts(db, job_id) == ["x"] for job_id in jobs)


def test_a_change_that_fails_fails_alone(db: Database, jobs: list[str]) -> None:
    # Given a group in which one change writes and then fails
    def failing(session: Session) -> None:
        _note(jobs[3], "lost")(session)
        raise ValueError("refused")

    changes = [_note(job_id, "kept") for job_id in jobs]
    changes[3] = failing
    got = _ask_at_once(Commits(db), changes)
    # Then its asker gets its error, and what it wrote is not kept
    assert isinstance(got[3], ValueError) and _texts(db, jobs[3]) == []
    # And every other change is written, once
    assert all(_texts(db, job_id) == ["kept"] for n, job_id in enumerate(jobs) if n != 3)
    assert all(isinstance(result, list) for n, result in enumerate(got) if n != 3)


def test_a_change_runs_in_the_context_of_the_thread_that_asked(db: Database) -> None:
    # Given threads each with its own context (as its log fields and trace are)
    def change(n: int) -> Callable[[Session], Any]:
        ASKER.set(f"asker{n}")  # in the asking thread, before it asks

        def seen(session: Session) -> str:
            return ASKER.get()

        return seen

    names: list[Any] = [None] * 6
    group = Commits(db)

    def ask(n: int) -> None:
        names[n] = group.run(f"k{n}", change(n)) if n else group.run("k0", slow)

    def slow(session: Session) -> str:
        ASKER.set("leader")
        while len(group._waiting) < 5:
            time.sleep(0.005)
        return "leader"

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(6)]
    threads[0].start()
    while not group._leading:
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then each change saw its own asker's context, though one thread wrote them all
    assert names == ["leader", *(f"asker{n}" for n in range(1, 6))]
