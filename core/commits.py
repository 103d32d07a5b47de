"""Writes of many threads committed together (a group commit).

A worker's steps each write their end in a transaction. When hundreds end at once, each pays
its own BEGIN and COMMIT (and, on Postgres, the pool's ping on checkout), and hundreds of
threads wait on the store's round trips at once, sharing one GIL with the thread that takes
new messages. Here the first thread to write leads: it writes, in one transaction, its own
change and those the other threads asked for meanwhile (up to `most`, in key order so two
groups lock rows in the same order), commits once, and hands each its result; the next
waiting thread then leads the next group. A thread writing alone writes at once, as before.

A group that fails (one change's error, a lock it lost, an outage) is rolled back, and each of
its changes is then written alone: one change's error is its own, and no change is lost or
written twice. A change runs in the context of the thread that asked for it (its log fields,
its trace). Changes must not keep anything of a session but what they return.
"""

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlmodel import Session

from core.db import Database

T = TypeVar("T")
MOST = 50  # changes in one group: a longer transaction holds its rows' locks longer


@dataclass
class _Ask(Generic[T]):
    """One thread's change, and what came of it."""

    key: str
    change: Callable[[Session], T]
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    woken: threading.Event = field(default_factory=threading.Event)  # settled, or to lead
    settled: bool = False
    result: Any = None
    error: BaseException | None = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.settled = result, error, True

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[no-any-return]


class Commits:
    """A process's group commits to one store."""

    def __init__(self, db: Database, most: int = MOST) -> None:
        self.db, self.most = db, most
        self._lock = threading.Lock()
        self._waiting: list[_Ask[Any]] = []
        self._leading = False

    def run(self, key: str, change: Callable[[Session], T]) -> T:
        """Run `change` in a transaction, maybe with other threads' (`key`: the row it locks
        first, a job id); its result, or its error."""
        ask = _Ask(key, change)
        with self._lock:
            self._waiting.append(ask)
            leads, self._leading = not self._leading, True
        if not leads:
            ask.woken.wait()
        if not ask.settled:  # first, or woken to lead: its change is in the group it leads
            self._lead()
        return ask.outcome()

    def _lead(self) -> None:
        with self._lock:
            group, self._waiting = self._waiting[:self.most], self._waiting[self.most:]
        try:
            self._write(group)
        finally:
            for ask in group:
                if not ask.settled:  # the leader stopped (an interrupt): not written
                    ask.settle(error=RuntimeError("the group's leader stopped"))
                ask.woken.set()
            with self._lock:
                if self._waiting:  # the next group's leader: the longest waiting
                    self._waiting[0].woken.set()
                else:
                    self._leading = False

    def _write(self, group: list[_Ask[Any]]) -> None:
        if len(group) > 1:
            ordered = sorted(group, key=lambda ask: ask.key)
            try:
                with self.db.write() as session:
                    results = [ask.context.run(ask.change, session) for ask in ordered]
            except Exception:  # noqa: BLE001 - each change is written alone, its error its own
                pass
            else:
                for ask, result in zip(ordered, results, strict=True):
                    ask.settle(result)
                return
        for ask in group:
            try:
                with self.db.write() as session:
                    ask.settle(ask.context.run(ask.change, session))
            except Exception as exc:  # noqa: BLE001 - the asking thread raises it
                ask.settle(error=exc)
