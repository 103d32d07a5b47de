"""Starts written late: a step's start is written with its first write (its end, mostly), so
a quick step costs one store transaction, not two; one still running after `RECORD_AFTER`
seconds has its start written then, with the others due, in one transaction.

Until its start is written the ledger still says `pending`, so a lease in Redis says who has
it: `orch:start:{job}-{index}` holds the runner and the attempt (`SET NX`, one command). A
second delivery meanwhile finds it: a live holder runs the step (skipped as a duplicate); a
dead one's attempt counts as a delivery (the poison limit sees a step that kills its worker
before its start is written). A lease whose attempt the ledger has reached is stale: its start
was written, and the ledger says the rest. What recovers a dead runner's steps is unchanged:
a pending step its runner held is sent again (`heartbeat.Holdings`, the sweeper).
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from core.db import Database
from core.events import publish
from core.store.ledger import StartRecord, record_starts

log = logging.getLogger(__name__)
RECORD_AFTER = 0.5
"""Seconds a step runs before its start is written without waiting for its end."""
LEASE = "orch:start:{job_id}-{index}"

# KEYS: the lease. ARGV: the value to set, the value expected now, the lease's milliseconds.
# Sets it (for that long) when it still holds what the caller saw (another taker may have been
# first); returns what it holds otherwise.
TAKE_OVER = """
local now = redis.call('GET', KEYS[1])
if now and now ~= ARGV[2] then return now end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return false
"""
# KEYS: the lease. ARGV: this run's value. Frees it if it is still this run's.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class Pending:
    """A step's start, known to this process only until `recorded`; `lock` lets one writer
    write it (the step's own write, or the recorder's round)."""

    start: StartRecord
    since: float = field(default_factory=time.monotonic)
    recorded: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Starts:
    """This process's starts not written yet, their leases, and the thread that writes those
    of steps running past `RECORD_AFTER`."""

    def __init__(self, db: Database, client: redis.Redis, runner: str, lease_seconds: float,
                 after: float = RECORD_AFTER) -> None:
        self.db, self.client, self.runner, self.after = db, client, runner, after
        self.lease_ms = int(lease_seconds * 1000)
        self._take_over = client.register_script(TAKE_OVER)
        self._release = client.register_script(RELEASE)
        self._pending: dict[tuple[str, int], Pending] = {}
        self._claimed: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._recorder: threading.Thread | None = None
        self._stop = threading.Event()

    def claim(self, job_id: str, index: int, attempts: int,
              is_live: Callable[[str], bool]) -> int | None:
        """The attempt this delivery is (`attempts`, or one past a dead runner's unwritten
        one), its lease taken; None when a live runner has the step."""
        key = LEASE.format(job_id=job_id, index=index)
        held = self.client.set(key, f"{self.runner} {attempts}", nx=True, px=self.lease_ms,
                               get=True)
        for _ in range(3):
            if held is None:
                with self._lock:
                    self._claimed.add((job_id, index))
                return attempts
            now = held.decode() if isinstance(held, bytes) else str(held)
            holder, _, attempt = now.rpartition(" ")
            if int(attempt) >= attempts:  # a start not written yet: its holder has it
                if self._runs(holder, job_id, index) or is_live(holder):
                    return None
                attempts = int(attempt) + 1  # the dead holder's delivery counts
            held = self._take_over(keys=[key], args=[f"{self.runner} {attempts}", now,
                                                     self.lease_ms])
        return None  # others kept taking it: leave it to them

    def _runs(self, holder: str, job_id: str, index: int) -> bool:
        """Whether `holder` is this process and has the step claimed (from its claim until
        the run ends: before `is_live` would see it executing)."""
        with self._lock:
            return holder == self.runner and (job_id, index) in self._claimed

    def hold(self, start: StartRecord) -> Pending:
        """Keep `start` until it is written; the recorder writes it if the step runs long."""
        pending = Pending(start)
        with self._lock:
            self._pending[(start.job_id, start.index)] = pending
            if self._recorder is None:
                self._recorder = threading.Thread(target=self._record_loop, daemon=True,
                                                  name="orch-starts")
                self._recorder.start()
        return pending

    def pending(self, job_id: str, index: int) -> Pending | None:
        """The start of step `index` this process runs and has not written, if any."""
        with self._lock:
            return self._pending.get((job_id, index))

    def drop(self, pending: Pending) -> None:
        """The run ended: forget its start, and free its lease if the start was never
        written (a cancel, an error): a later delivery must not wait for it."""
        with self._lock:
            key = (pending.start.job_id, pending.start.index)
            if self._pending.get(key) is pending:
                del self._pending[key]
            self._claimed.discard(key)
        if not pending.recorded:
            self.release(*key, pending.start.attempts)

    def release(self, job_id: str, index: int, attempts: int) -> None:
        """Free this runner's lease of `attempts` (a step it took but does not run)."""
        with self._lock:
            self._claimed.discard((job_id, index))
        try:
            self._release(keys=[LEASE.format(job_id=job_id, index=index)],
                          args=[f"{self.runner} {attempts}"])
        except redis.RedisError as exc:  # it expires on its own
            log.warning("lease of %s/%d not freed (%s)", job_id, index, type(exc).__name__)

    def record_due(self) -> int:
        """Write, in one transaction, the starts of steps running past `after`; returns how
        many. A step writing its own start meanwhile is left to it."""
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._pending.values()
                   if not p.recorded and now - p.since >= self.after]
        taken = [p for p in sorted(due, key=lambda p: (p.start.job_id, p.start.index))
                 if p.lock.acquire(blocking=False)]
        try:
            todo = [p for p in taken if not p.recorded]
            if not todo:
                return 0
            with self.db.write() as session:  # a removed job's: left to the run's own end
                events = record_starts(session=session, starts=[p.start for p in todo])
            for pending in todo:
                pending.recorded = True
        finally:
            for pending in taken:
                pending.lock.release()
        publish(self.client, events)
        return len(todo)

    def _record_loop(self) -> None:
        while not self._stop.wait(self.after / 2):
            try:
                self.record_due()
            except Exception as exc:  # noqa: BLE001 - the thread outlives any one round
                log.warning("starts not written this round (%s); trying again",
                            type(exc).__name__)

    def close(self) -> None:
        self._stop.set()
