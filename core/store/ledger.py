"""The step ledger: a step's start and outcome, written with its job's in one transaction.

Each function locks the job row, decides from the ledger (not from the message that brought
the step) and returns a `Handoff`: the events to publish and the step to send once committed.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, case, exists, tuple_, update
from sqlmodel import Session, select

from core import deliveries, refs
from core.db import pipelined
from core.errors import NotFound
from core.events import LiveEvent
from core.models import TERMINAL_EVENTS, EventType, JobStatus, StepStatus, utcnow
from core.store.events import insert_events, insert_many
from core.store.limits import LIMITS
from core.store.submission import STEPS_INSERT, step_rows
from core.store.tables import JOBS, STEPS, Handoff, Items, NewStep, NextStep


class StepVerdict(StrEnum):
    """What a worker should do with a step it was just handed."""

    run = "run"
    done = "done"
    skip = "skip"
    write = "write"  # asked with `claim` (nothing written), the answer needs a write


@dataclass(frozen=True)
class StartRecord:
    """A step's start not yet written: what `take_start` writes with the step's first
    write (its end, mostly), so a quick step costs one transaction."""

    job_id: str
    index: int
    attempts: int
    runner: str
    at: datetime


@dataclass
class StepStart:
    """The outcome of `begin_step`.

    `run` comes with the step's inputs (references resolved); `done` (it already succeeded)
    with the next step to send again; `skip` with the reason and any events; `write` (asked
    without writing) says to ask again in a transaction that may write.
    """

    verdict: StepVerdict
    reason: str = ""
    events: list[LiveEvent] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    intent: str = ""
    pool: str = ""
    tenant_id: str = ""
    approved: bool = False
    next: NextStep | None = None
    unrecorded: StartRecord | None = None
    attempts: int = 0  # asked with `claim`: the attempt it claimed (`write`: to ask again)
    throttled: dict[str, Any] | None = None  # asked with `claim`: the event to record
    rest: "Rest | None" = None  # `run`: the steps after it, for `finish_step`


@dataclass
class Ledger:
    """A job and one of its steps as the ledger has them, the job row locked; with
    `following`, the steps after it (idx, intent, pool, status), read in the same statement."""

    job_id: str
    index: int
    status: JobStatus
    step_status: StepStatus
    row: Any
    following: list[Any] | None = None


Rest = list[tuple[int, str, str]]
"""The steps after one, in order: index, intent, pool. They change only by that step's own
end (a plan it extends), so read when it begins they hold at its end."""

Admit = Callable[[Session, Ledger], dict[str, Any] | None]
"""Asked before a step starts: None lets it start; a dict (the limit) throttles it."""

Claim = Callable[[int], int | None]
"""Given the attempt a start would be, the attempt it is (None: a live runner has it)."""


# Whether the job's tenant has concurrency rules of its own, read with the job: a step of a
# tenant with none is admitted on the settings' defaults without a query of its own.
LIMITED = exists().where(LIMITS.c.tenant_id == JOBS.c.tenant_id).label("limited")
JOB_COLUMNS = (JOBS.c.status, JOBS.c.event_seq, JOBS.c.tenant_id,
               JOBS.c.intent.label("job_intent"), JOBS.c.mode, JOBS.c.callback_url,
               JOBS.c.created_at, JOBS.c.started_at, LIMITED)
STEP_COLUMNS = (STEPS.c.status.label("step"), STEPS.c.attempts, STEPS.c.intent, STEPS.c.pool,
                STEPS.c.inputs, STEPS.c.output, STEPS.c.runner, STEPS.c.attempts_base,
                STEPS.c.started_at.label("step_started_at"), STEPS.c.approved_at,
                STEPS.c.token_hash, STEPS.c.deadline, STEPS.c.early_output)
JOB_LOCK = (
    select(*JOB_COLUMNS)  # type: ignore[call-overload]
    .where(JOBS.c.id == bindparam("job_id")).with_for_update()
)
# A job and its step in one statement: where no row lock is taken (SQLite, whose writer holds
# the whole database from its BEGIN IMMEDIATE; a read that writes nothing).
JOB_STEP = (
    select(*JOB_COLUMNS, *STEP_COLUMNS)  # type: ignore[call-overload]
    .select_from(JOBS.join(STEPS, STEPS.c.job_id == JOBS.c.id))
    .where(JOBS.c.id == bindparam("job_id"), STEPS.c.index == bindparam("index"))
)
# The same, both rows locked (Postgres), the job's first: see `ledger()`.
JOB_STEP_LOCK = JOB_STEP.with_for_update()

# Many jobs locked at once, in id order (so two writers never wait on each other in a
# circle), and their steps read after: `record_starts`.
JOBS_LOCK = (
    select(JOBS.c.id, *JOB_COLUMNS)  # type: ignore[call-overload]
    .where(JOBS.c.id.in_(bindparam("ids", expanding=True))).order_by(JOBS.c.id)
    .with_for_update()
)
STEPS_AT = (
    select(STEPS.c.job_id, STEPS.c.index.label("idx"), *STEP_COLUMNS)  # type: ignore[call-overload]
    .where(tuple_(STEPS.c.job_id, STEPS.c.index).in_(bindparam("keys", expanding=True)))
)

REST = (
    select(STEPS.c.index.label("idx"), STEPS.c.intent, STEPS.c.pool, STEPS.c.status)
    .where(STEPS.c.job_id == bindparam("job_id"), STEPS.c.index > bindparam("index"))
    .order_by(STEPS.c.index)
)
# A step and the steps after it in one statement (a step's begin reads both): its own row
# first; the rows after carry only what `Rest` needs (their inputs and outputs left NULL).
_OWN_ONLY = {"inputs", "output", "early_output"}
STEP_ON_COLUMNS = (
    STEPS.c.index.label("idx"),
    *(case((STEPS.c.index == bindparam("index"), column), else_=None).label(column.name)
      if column.name in _OWN_ONLY else column for column in STEP_COLUMNS))
STEP_ON = (
    select(*STEP_ON_COLUMNS)
    .where(STEPS.c.job_id == bindparam("job_id"), STEPS.c.index >= bindparam("index"))
    .order_by(STEPS.c.index)
)
JOB_STEP_ON = (
    select(*JOB_COLUMNS, *STEP_ON_COLUMNS)  # type: ignore[call-overload]
    .select_from(JOBS.join(STEPS, STEPS.c.job_id == JOBS.c.id))
    .where(JOBS.c.id == bindparam("job_id"), STEPS.c.index >= bindparam("index"))
    .order_by(STEPS.c.index)
)
# Built once: the values to set are the parameters given with them. These run at every step's
# start and end; building them per call was about 40 % of a step's store time.
STEP_UPDATE = update(STEPS).where(STEPS.c.job_id == bindparam("at_job"),
                                  STEPS.c.index == bindparam("at_index"))
JOB_UPDATE = update(JOBS).where(JOBS.c.id == bindparam("at_job"))


def lock_job(session: Session, job_id: str) -> Any:
    """Lock the job row and read what recording a change to it needs."""
    job = session.execute(JOB_LOCK, {"job_id": job_id}).one_or_none()
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def ledger(session: Session, job_id: str, index: int, lock: bool = True,
           following: bool = False) -> Ledger:
    """Lock the job, then read it with step `index` (`lock=False`: only read them, for a
    transaction that writes nothing; `following`: and the steps after it, in the same read).

    On Postgres the job and its step are both locked, in one statement: under READ COMMITTED
    a statement that waited for a lock re-reads the rows it locks, and only those, so a step
    read unlocked beside its locked job could be the version from before the lock holder
    committed (a resume token used twice). Every path that changes a step locks its job
    first, or locks nothing else (`issue_resume_token`), so waiting for a step while holding
    its job never closes a circle. SQLite has no row locks (a writer holds the database from
    its first statement): one statement reads both, unlocked.
    """
    taken = _taken(session, job_id, index)
    if taken is not None:  # read and locked already, its start to be written
        return taken.then
    key = {"job_id": job_id, "index": index}
    rows: list[dict[str, Any]] = []
    if not lock or session.get_bind().dialect.name == "sqlite":
        rows = [dict(r._mapping) for r in session.execute(
            JOB_STEP_ON if following else JOB_STEP, key)]
    elif not following:
        rows = [dict(r._mapping) for r in session.execute(JOB_STEP_LOCK, key)]
    elif (job := session.execute(JOB_LOCK, key).one_or_none()) is not None:
        # A step and the steps after it, read after their job's lock (not locked themselves)
        rows = [{**job._mapping, **r._mapping} for r in session.execute(STEP_ON, key)]
    if not rows or rows[0].get("idx", index) != index:
        raise NotFound(f"step {index} of job {job_id} not found")
    row = SimpleNamespace(**rows[0])
    after = [SimpleNamespace(idx=r["idx"], intent=r["intent"], pool=r["pool"],
                             status=r["step"]) for r in rows[1:]] if following else None
    return Ledger(job_id, index, JobStatus(row.status), StepStatus(row.step), row, after)


def record(session: Session, at: Ledger, job: dict[str, Any], step: dict[str, Any],
           items: Items) -> list[LiveEvent]:
    """Write a step's and its job's new values and the events that say so (with its start
    first, when the transaction took it: `take_start`)."""
    taken = _taken(session, at.job_id, at.index)
    if taken is not None:
        del session.info[STARTING]
        at, job, step = taken.read, {**taken.job, **job}, {**taken.step, **step}
        items = [*taken.items, *items]
    return record_job(session, at.job_id, at.row, job, items,
                      {"at_job": at.job_id, "at_index": at.index, **step} if step else None)


def record_job(session: Session, job_id: str, locked: Any, job: dict[str, Any],
               items: Items, step: dict[str, Any] | None = None) -> list[LiveEvent]:
    """Write a locked job's new values (and a step's: `STEP_UPDATE`'s parameters) and the
    events that say so: every change of a job and its log goes through here, its writes in
    one round trip (`pipelined`).

    When these values end the job (and only then: a job that already ended scheduled its
    callback then), its callback is scheduled in the same transaction (the outbox).
    """
    ends = "status" in job and JobStatus(job["status"]).terminal
    if ends:
        items = [_ended(kind, data, locked) for kind, data in items]
    with pipelined(session):
        if ends and locked.callback_url:
            outcome = deliveries.Outcome(
                job_id=job_id, tenant_id=locked.tenant_id, callback_url=locked.callback_url,
                status=str(job["status"]), intent=locked.job_intent, mode=locked.mode,
                result=job.get("result"), error=job.get("error"), created_at=locked.created_at,
                started_at=job.get("started_at", locked.started_at),
                finished_at=job["finished_at"])
            items = [*items, _callback_item(session, outcome)]
        if step:
            session.execute(STEP_UPDATE, step)
        session.execute(JOB_UPDATE, {"at_job": job_id,
                                     "event_seq": locked.event_seq + len(items), **job})
        return insert_events(session, job_id, locked.event_seq, items)


def _ms(since: datetime | None) -> int | None:
    """Milliseconds from `since` to now (None if it never started)."""
    return None if since is None else int((utcnow() - since).total_seconds() * 1000)


def _ended(kind: EventType, data: dict[str, Any],
           locked: Any) -> tuple[EventType, dict[str, Any]]:
    """A job's terminal event names its intent and its latency from submission (the metrics
    count them, `core.observations`)."""
    if kind not in TERMINAL_EVENTS:
        return kind, data
    return kind, {**data, "intent": locked.job_intent, "latency_ms": _ms(locked.created_at)}


def _callback_item(session: Session,
                   outcome: deliveries.Outcome) -> tuple[EventType, dict[str, Any]]:
    """Schedule the job's callback (the outbox row) and the event that says so."""
    delivery_id = deliveries.schedule(session=session, outcome=outcome)
    return EventType.callback_scheduled, {"delivery_id": delivery_id, "url": outcome.callback_url}


def _rest(session: Session, job_id: str, index: int) -> list[Any]:
    """The steps after `index`, in order: idx, intent, pool, status."""
    return list(session.execute(REST, {"job_id": job_id, "index": index}))


def _after(session: Session, at: Ledger) -> list[Any]:
    """The steps after `at`'s, as read with it, else read now."""
    return at.following if at.following is not None else _rest(session, at.job_id, at.index)


def _output_of(session: Session, job_id: str, before: int) -> Callable[[int], Any]:
    def output(index: int) -> Any:
        if index >= before:
            raise LookupError(f"step {index} is not before step {before}")
        row = session.execute(select(STEPS.c.status, STEPS.c.output).where(
            STEPS.c.job_id == job_id, STEPS.c.index == index)).one_or_none()
        if row is None or StepStatus(row.status) != StepStatus.succeeded:
            raise LookupError(f"step {index} has no output")
        return row.output
    return output


def begin_step(*, session: Session, job_id: str, index: int, runner: str, max_deliveries: int,
               retries: int = 0, is_live: Callable[[str], bool] = lambda _: False,
               literal: Callable[[str, str], bool] = lambda _i, _t: False,
               admit: Admit | None = None, claim: Claim | None = None,
               attempts_from: int = 0) -> StepStart:
    """Record that `runner` (host:pid/start) took a step; say whether to run it, and with what.

    A step running on a live runner is a duplicate delivery (skipped); one whose runner died is
    taken over. `retries` is the Celery retry number of this message: each retry is a new
    message, so the poison limit counts the deliveries of each, not deliberate retries.
    References in the inputs are resolved unless `literal(intent, tenant)` says the intent
    takes them as they are (a planner whose inputs are steps for later). Last, `admit` may
    throttle it (a concurrency limit is full): it stays pending, unstarted and uncounted.

    With `claim`, nothing is written when the step is to run: the start comes back unrecorded
    (`StepStart.unrecorded`) for the caller to write with the step's first write, and `claim`
    (given the attempt this would be) says which attempt it is, counting starts that other
    runners never wrote (None: a live one runs it now). An answer that needs a write (poison,
    a broken reference) comes back as `write`, with `attempts_from` for the second ask.
    """
    # With `claim`, nothing is written; the steps after it are read with it (`Rest`)
    at = ledger(session, job_id, index, lock=claim is None, following=True)
    if at.status.terminal:
        return StepStart(StepVerdict.skip, reason=f"job is {at.status}")
    if at.step_status == StepStatus.succeeded:
        return _already_done(session, at)
    if at.step_status not in (StepStatus.pending, StepStatus.running):
        return StepStart(StepVerdict.skip, reason=f"step is {at.step_status}")
    if at.step_status == StepStatus.running and at.row.runner and is_live(at.row.runner):
        return StepStart(StepVerdict.skip, reason=f"a duplicate: running on {at.row.runner}")
    attempts = max(at.row.attempts + 1, attempts_from)
    if claim is not None:
        claimed = claim(attempts)
        if claimed is None:
            return StepStart(StepVerdict.skip, reason="a duplicate: its start is not written "
                             "yet by the live runner that has it")
        attempts = claimed
    if attempts - at.row.attempts_base > max_deliveries + retries:
        if claim is not None:
            return StepStart(StepVerdict.write, attempts=attempts)
        error = (f"step {index} ({at.row.intent}) was delivered {attempts} times without "
                 "finishing; failed as poison")
        handoff = fail(session, at, error, step={"attempts": attempts}, job_error=error)
        return StepStart(StepVerdict.skip, reason=error, events=handoff.events)
    try:
        inputs = at.row.inputs if literal(at.row.intent, at.row.tenant_id) else refs.resolve(
            at.row.inputs, _output_of(session, job_id, index))
    except refs.RefError as exc:
        if claim is not None:
            return StepStart(StepVerdict.write, attempts=attempts)
        handoff = fail(session, at, str(exc), step={"attempts": attempts})
        return StepStart(StepVerdict.skip, reason=str(exc), events=handoff.events)
    throttled = admit(session, at) if admit is not None else None
    if throttled is not None:
        if claim is not None:  # for the caller to write
            return StepStart(StepVerdict.skip, reason="throttled by its concurrency limit",
                             throttled=throttled, attempts=attempts)
        return StepStart(StepVerdict.skip, reason="throttled by its concurrency limit",
                         events=_throttled(session, at, throttled))
    start = StepStart(StepVerdict.run, inputs=inputs, intent=at.row.intent, pool=at.row.pool,
                      tenant_id=at.row.tenant_id, approved=at.row.approved_at is not None,
                      rest=[(r.idx, r.intent, r.pool) for r in _after(session, at)])
    record_at = StartRecord(job_id, index, attempts, runner, utcnow())
    if claim is not None:
        return replace(start, unrecorded=record_at)
    return replace(start, events=_start(session, at, record_at))


def _throttled(session: Session, at: Ledger, throttled: dict[str, Any]) -> list[LiveEvent]:
    return record(session, at, {}, {"status": StepStatus.pending, "runner": None},
                  [(EventType.step_throttled, {"index": at.index, **throttled})])


def record_throttled(*, session: Session, job_id: str, index: int,
                     throttled: dict[str, Any]) -> list[LiveEvent]:
    """Record that a step asked without writing was throttled (still pending, unstarted)."""
    at = ledger(session, job_id, index)
    if at.status.terminal or at.step_status != StepStatus.pending:
        return []
    return _throttled(session, at, throttled)


def record_starts(*, session: Session, starts: list[StartRecord]) -> list[LiveEvent]:
    """Write many steps' starts taken without writing, in the same few statements however
    many: their jobs locked in id order, then their steps read (after the locks, as `ledger`
    reads), one update of the steps, one of the jobs for each set of columns, one insert of
    events, these three in one round trip (`pipelined`). Each by `take_start`'s rules: a start
    whose job or step ended, whose start another delivery wrote since, or whose job is gone,
    is left out."""
    if not starts:
        return []
    jobs = {row.id: dict(row._mapping) for row in session.execute(
        JOBS_LOCK, {"ids": sorted({start.job_id for start in starts})})}
    steps = {(row.job_id, row.idx): row._mapping for row in session.execute(
        STEPS_AT, {"keys": [(start.job_id, start.index) for start in starts]})}
    step_values, job_values, logs = [], dict[str, dict[str, Any]](), []
    for start in sorted(starts, key=lambda start: (start.job_id, start.index)):
        job, step = jobs.get(start.job_id), steps.get((start.job_id, start.index))
        if job is None or step is None:
            continue
        at = Ledger(start.job_id, start.index, JobStatus(job["status"]),
                    StepStatus(step["step"]), SimpleNamespace(**job, **step))
        if not _startable(at, start):
            continue
        values, step_set, items = _start_values(at, start)
        step_values.append({"at_job": start.job_id, "at_index": start.index, **step_set})
        logs.append((start.job_id, job["event_seq"], items))
        job |= {**values, "event_seq": job["event_seq"] + len(items)}  # for its next start
        job_values[start.job_id] = {**job_values.get(start.job_id, {}), **values,
                                    "event_seq": job["event_seq"]}
    by_columns: dict[frozenset[str], list[dict[str, Any]]] = {}
    for job_id, values in job_values.items():  # executemany takes one set of columns
        by_columns.setdefault(frozenset(values), []).append({"at_job": job_id, **values})
    with pipelined(session):
        if step_values:
            session.execute(STEP_UPDATE, step_values)
        for rows in by_columns.values():
            session.execute(JOB_UPDATE, rows)
        return insert_many(session, logs)


def _startable(at: Ledger, start: StartRecord) -> bool:
    """Whether a start taken without writing is still to be written: its job and its step
    have not ended, and no other delivery's start was written since."""
    return not at.status.terminal and at.step_status in (
        StepStatus.pending, StepStatus.running) and at.row.attempts < start.attempts


def _already_done(session: Session, at: Ledger) -> StepStart:
    rest = _after(session, at)
    if rest and StepStatus(rest[0].status) != StepStatus.pending:
        return StepStart(StepVerdict.skip, reason="a redelivery of a step whose chain went on")
    following = NextStep(at.job_id, rest[0].idx, rest[0].intent, rest[0].pool) if rest else None
    return StepStart(StepVerdict.done, next=following)


def _start(session: Session, at: Ledger, start: StartRecord) -> list[LiveEvent]:
    return record(session, at, *_start_values(at, start))


def _start_values(at: Ledger, start: StartRecord) -> tuple[dict[str, Any], dict[str, Any],
                                                            Items]:
    """What writing a start sets on the job and the step, and the events that say so."""
    items: Items = []
    job: dict[str, Any] = {}
    if at.status == JobStatus.queued:
        job = {"status": JobStatus.running, "started_at": start.at}
        items.append((EventType.job_started, {}))
    items.append((EventType.step_started, {"index": at.index, "intent": at.row.intent,
                                           "pool": at.row.pool, "attempt": start.attempts,
                                           "worker": start.runner}))
    return job, {"status": StepStatus.running, "attempts": start.attempts,
                 "runner": start.runner, "started_at": start.at}, items


@dataclass
class _Starting:
    """A start taken into a transaction (`take_start`): the ledger as it was read, the values
    and events the start adds, and the ledger as it will be once they are written."""

    read: Ledger
    job: dict[str, Any]
    step: dict[str, Any]
    items: Items
    then: Ledger


STARTING = "orch_starting"


def take_start(*, session: Session, start: StartRecord) -> None:
    """Take a step's start (taken without writing) into this transaction: the step's next
    `record` writes it with its own values, in one update of each row and one insert of
    events, and the ledger reads in between see the step as started. Nothing is taken when its
    job or the step ended, or another delivery's start was written since (this run's end then
    finds the ledger as the other left it). `write_start` writes what no record took."""
    at = ledger(session, start.job_id, start.index)
    if not _startable(at, start):
        return
    job, step, items = _start_values(at, start)
    row = SimpleNamespace(**{**vars(at.row), "step": StepStatus.running,
                             "attempts": start.attempts, "runner": start.runner,
                             "step_started_at": start.at, **job})
    then = Ledger(at.job_id, at.index, JobStatus(row.status), StepStatus.running, row)
    session.info[STARTING] = _Starting(at, job, step, items, then)


def write_start(*, session: Session) -> list[LiveEvent]:
    """Write the start `take_start` took, if no record took it."""
    starting = session.info.pop(STARTING, None)
    if starting is None:
        return []
    return record(session, starting.read, starting.job, starting.step, starting.items)


def _taken(session: Session, job_id: str, index: int) -> "_Starting | None":
    starting = session.info.get(STARTING)
    if isinstance(starting, _Starting) and (starting.read.job_id, starting.read.index) == \
            (job_id, index):
        return starting
    return None


def finish_step(*, session: Session, job_id: str, index: int, output: Any,
                extend: list[NewStep] | None = None, max_steps: int = 0,
                rest: Rest | None = None) -> Handoff:
    """Record a step's output, and the steps it adds to the plan; say what runs next (from
    `rest`, the steps after it as its start read them, when given).

    The job ends when no step follows. A step that already ended (a duplicate, or cancelled
    with its job) is left as it is.
    """
    at = ledger(session, job_id, index)
    if at.step_status.finished:
        return Handoff()
    return succeed(session, at, output, extend or [], max_steps, [], rest)


def succeed(session: Session, at: Ledger, output: Any, extend: list[NewStep], max_steps: int,
            items: Items, rest: Rest | None = None) -> Handoff:
    """Mark the step succeeded, grow the plan by `extend`, end the job or name the next step."""
    rest = [*rest] if rest is not None else [
        (r.idx, r.intent, r.pool) for r in _rest(session, at.job_id, at.index)]
    items = [*items, (EventType.step_succeeded, {"index": at.index, "intent": at.row.intent,
                                                 "worker": at.row.runner,
                                                 "duration_ms": _ms(at.row.step_started_at)})]
    if extend:
        total = at.index + 1 + len(rest) + len(extend)
        if max_steps and total > max_steps:
            return fail(session, at, f"the plan would grow to {total} steps, more than the "
                        f"limit of {max_steps} (ORCHESTRATOR_MAX_STEPS)")
        start = at.index + 1 + len(rest)
        session.execute(STEPS_INSERT, step_rows(at.job_id, start, extend))
        added = [(start + n, step.intent, step.pool) for n, step in enumerate(extend)]
        rest += added
        items.append((EventType.plan_extended, {"index": at.index, "steps": [
            {"index": i, "intent": intent} for i, intent, _ in added]}))
    now, job, send = utcnow(), dict[str, Any](), None
    if not at.status.terminal:
        job = {"status": JobStatus.running,
               "progress": round((at.index + 1) / (at.index + 1 + len(rest)), 4)}
        if rest:
            send = NextStep(at.job_id, *rest[0])
        else:
            job |= {"status": JobStatus.succeeded, "result": output, "finished_at": now}
            items.append((EventType.job_succeeded, {"result": output}))
    events = record(session, at, job, {
        "status": StepStatus.succeeded, "output": output, "finished_at": now,
        "token_hash": None, "deadline": None}, items)
    return Handoff(events, send)


def fail(session: Session, at: Ledger, error: str, items: Items | None = None,
         step: dict[str, Any] | None = None, job_error: str | None = None) -> Handoff:
    """Mark the step failed with `error`; its job fails with it (unless it already ended)."""
    now = utcnow()
    items = [*(items or []), (EventType.step_failed, {
        "index": at.index, "intent": at.row.intent, "error": error,
        "duration_ms": _ms(at.row.step_started_at)})]
    job: dict[str, Any] = {}
    if not at.status.terminal:
        reason = job_error or f"step {at.index} ({at.row.intent}) failed: {error}"
        job = {"status": JobStatus.failed, "error": reason, "finished_at": now}
        items.append((EventType.job_failed, {"error": reason}))
    events = record(session, at, job, {
        "status": StepStatus.failed, "error": error, "finished_at": now, "token_hash": None,
        **(step or {})}, items)
    return Handoff(events)


def fail_step(*, session: Session, job_id: str, index: int, error: str) -> Handoff:
    """Record a step's final failure; the job fails with it."""
    at = ledger(session, job_id, index)
    if at.step_status.finished:
        return Handoff()
    return fail(session, at, error)


def retry_step(*, session: Session, job_id: str, index: int, reason: str) -> Handoff:
    """Record that a step will be tried again (by a new message): it is pending until then."""
    at = ledger(session, job_id, index)
    if at.step_status.finished:
        return Handoff()
    events = record(session, at, {}, {"status": StepStatus.pending, "runner": None},
                    [(EventType.step_retrying, {"index": index, "reason": reason})])
    return Handoff(events)


def deadline_passed(at: Ledger, now: datetime) -> bool:
    return at.row.deadline is not None and at.row.deadline <= now
