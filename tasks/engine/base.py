"""The base of every step task: a step's whole lifecycle, in one place.

Begin (the ledger's verdict, references resolved) → validate the inputs against the intent's
model → hold it for approval if it must be → run the handler → record the outcome (success,
the plan grown, a wait, a retry or the failure) → hand off. Handlers are plain functions of a
`StepContext`; they never touch the ledger.

A run goes on with the job's next step when it is of the same pool and the run is under a
second old (`CONTINUE_SECONDS`): the transaction that records a success also begins the next
step, and no message goes through the broker between them. Past that second, or on another
pool, the next step is sent as a message, and other work gets its turn.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn, TypeVar, cast

import redis
from celery import Task
from celery.exceptions import Ignore
from kombu.exceptions import OperationalError
from pydantic import BaseModel
from sqlalchemy.exc import DataError, SQLAlchemyError
from sqlmodel import Session
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_delay,
    wait_exponential,
)

from core import refs
from core.errors import IntentNotFound, InvalidRequest, NotFound, UpstreamUnavailable
from core.events import LiveEvent, publish
from core.logformat import bind, set_context
from core.models import EventType
from core.storable import REPLACEMENT, NotStorable, storable
from core.store.events import append_events
from core.store.ledger import (
    StepStart,
    StepVerdict,
    begin_step,
    fail_step,
    finish_step,
    record_throttled,
    retry_step,
    take_start,
    write_start,
)
from core.store.tables import Handoff, NewStep, NextStep, new_token
from core.store.waits import hold_step, issue_resume_token, wait_step
from tasks.engine.admission import Admission
from tasks.engine.app import shutting_down
from tasks.engine.cancellation import is_cancelled
from tasks.engine.chain import hand_off, send_step, step_task_name
from tasks.engine.context import Cancelled, Extend, Hold, StepContext, Wait
from tasks.engine.registry import REGISTRY, Intent
from tasks.engine.resources import Resources, resources
from tasks.engine.starts import Pending

log = logging.getLogger(__name__)
T = TypeVar("T")
RECORD_RETRY_SECONDS = 3
RECORD_RETRIES = 20
RECORD_PATIENCE_SECONDS = 30
BROKER_RETRY_SECONDS = 5
BROKER_RETRIES = 20
CONTINUE_SECONDS = 1.0
STORE_ERRORS = (SQLAlchemyError, redis.RedisError)


@dataclass(frozen=True)
class Delivery:
    """The step a run of a step task is on: its message's own (`retries` is that message's
    retry number), or the next one of the same pool, continued in the same run (`follow`):
    no broker round trip between two steps of a chain that stay on one pool."""

    job_id: str
    index: int
    retries: int = 0
    follow: NextStep | None = None


@dataclass(frozen=True)
class Next:
    """A step begun in the transaction that ended the one before it, for the run to go on."""

    step: NextStep
    start: StepStart
    admission: Admission


@dataclass
class Run:
    """One step's part of a run: when the run began, its start if not written yet (written
    with its first write), and the next step if it goes on."""

    began: float
    pending: Pending | None = None
    next: Next | None = None


def _may_continue(rt: Resources, began: float) -> bool:
    """Whether this run may take on the next step: only within `CONTINUE_SECONDS` of its
    start (and the pool's margin between soft and hard time limits, which ends a prefork run),
    so a run stays about as long as one step and a chain's steps interleave with other work."""
    pool = rt.settings.pool
    budget = min(CONTINUE_SECONDS, pool.time_limit - pool.soft_time_limit)
    return time.monotonic() - began < budget and not shutting_down.is_set()


class Unleased(Exception):
    """Raised when a step's lease could not be asked for (Redis did not answer)."""


class StepRefused(Exception):
    """Raised when a step failed by a refusal (an error marked `expected`): the step is failed
    in the ledger already, and the worker logs it in one line, without a traceback."""


class StepTask(Task):  # type: ignore[misc]
    """A step called as `task(job_id=…, index=…)`; everything else is read from the ledger."""

    acks_late = True
    reject_on_worker_lost = True
    typing = False
    throws = (StepRefused,)

    def before_start(self, task_id: str, args: Any, kwargs: dict[str, Any]) -> None:
        """Every log line of this step names it (Celery's own `succeeded` line too)."""
        set_context(job_id=kwargs.get("job_id"), step=kwargs.get("index"),
                    worker=resources().runner)

    def __call__(self, job_id: str, index: int, **_: Any) -> None:
        rt, began = resources(), time.monotonic()
        follow = self._run(rt, Delivery(job_id, int(index), self.request.retries or 0), began)
        while follow is not None:
            set_context(step=follow.step.index)
            follow = self._run(rt, Delivery(job_id, follow.step.index, follow=follow.step),
                               began, follow)

    def _run(self, rt: Resources, delivery: Delivery, began: float,
             begun: Next | None = None) -> Next | None:
        """Begin (unless the previous step's record `begun` it), execute and record one step,
        and hand off what follows; the next step, when this run goes on with it, is returned
        begun: its start was written in the transaction that recorded this one's end."""
        job_id, index = delivery.job_id, delivery.index
        admission = begun.admission if begun else Admission(rt)
        if begun is None:
            try:
                start = self._begin(rt, delivery, admission)
            except BaseException:
                admission.release(self.app, job_id, index)
                raise
            self._hand_off(rt, Handoff(start.events, start.next))
        else:
            start = begun.start
        bind(tenant=start.tenant_id or None)
        if start.verdict != StepVerdict.run:
            raise Ignore(start.reason or "already done")
        run = Run(began, rt.starts.hold(start.unrecorded) if start.unrecorded else None)
        with rt.lock:
            rt.executing.add((job_id, index))
        try:
            outcome = self._execute(rt, delivery, start, run)
        except BaseException:
            # A retry, a cancel or a failure: recorded already; the slot is free (and the
            # next step's, if its start was in a transaction that did not commit).
            admission.release(self.app, job_id, index)
            if run.next is not None:
                run.next.admission.release(self.app, run.next.step.job_id, run.next.step.index)
            raise
        finally:
            with rt.lock:
                rt.executing.discard((job_id, index))
            if run.pending is not None:
                rt.starts.drop(run.pending)
        self._hand_off(rt, outcome)
        admission.release(self.app, job_id, index)
        return run.next

    def _begin(self, rt: Resources, delivery: Delivery, admission: Admission) -> StepStart:
        """The ledger's verdict, asked without writing: a step to run comes with its start to
        write with its first write (`tasks.engine.starts`). A verdict that must be written
        (throttled, poison, a broken reference) is. A step never runs without the ledger's
        word, so retry until the store answers."""
        job_id, index = delivery.job_id, delivery.index
        claimed: list[int] = []

        def live(runner: str) -> bool:
            return rt.is_live(runner, (job_id, index))

        def claim(attempts: int) -> int | None:
            try:
                taken = rt.starts.claim(job_id, index, attempts, live)
            except redis.RedisError as exc:
                raise Unleased from exc
            claimed.extend([] if taken is None else [taken])
            return taken

        def ask(session: Session, attempts_from: int = 0, deferred: bool = True) -> StepStart:
            return begin_step(
                session=session, job_id=job_id, index=index, runner=rt.runner,
                max_deliveries=rt.settings.orchestrator.max_step_deliveries,
                retries=delivery.retries, is_live=live, literal=_literal, admit=admission,
                claim=claim if deferred else None, attempts_from=attempts_from)
        try:
            try:
                with rt.db.read() as session:
                    start = ask(session)
            except Unleased:
                # Redis cannot lease it (an outage): its start is written now, and the ledger
                # guards it as before starts were written late
                with rt.db.write() as session:
                    return ask(session, deferred=False)
            if start.verdict == StepVerdict.run:
                return start  # its lease kept until its start is written
            if claimed:  # taken, but it does not run from here
                rt.starts.release(job_id, index, claimed.pop())
            if start.verdict == StepVerdict.write:
                with rt.db.write() as session:
                    return ask(session, start.attempts, deferred=False)
            if start.throttled is not None:
                with rt.db.write() as session:
                    return replace(start, events=record_throttled(
                        session=session, job_id=job_id, index=index,
                        throttled=start.throttled))
            return start
        except BaseException as exc:
            if claimed:
                rt.starts.release(job_id, index, claimed[-1])
            if isinstance(exc, NotFound):
                # Not in the ledger: its job was removed (a batch whose broker trip failed
                # after the messages arrived; the client was told to retry). Nothing to run.
                raise Ignore(str(exc)) from exc
            if isinstance(exc, STORE_ERRORS):
                log.warning("step %s/%d: could not ask the ledger (%s); retrying", job_id,
                            index, type(exc).__name__)
                raise self.retry(countdown=RECORD_RETRY_SECONDS, max_retries=RECORD_RETRIES,
                                 exc=exc) from exc
            raise

    def _execute(self, rt: Resources, delivery: Delivery, start: StepStart,
                 run: Run) -> Handoff:
        job_id, index = delivery.job_id, delivery.index
        try:
            intent = REGISTRY.get(start.intent, start.tenant_id)
            inputs = intent.validate(start.inputs)
            intent.authorize(inputs, start.tenant_id)
        except (IntentNotFound, InvalidRequest, NotFound) as exc:
            error = str(exc)
            return self._write(rt, job_id, index, lambda s: fail_step(session=s, job_id=job_id,
                                                             index=index, error=error))
        hold = None if start.approved else intent.hold(inputs)
        if hold is not None:
            return self._hold(rt, job_id, index, start.inputs, hold)
        context = self._context(rt, job_id, index, start, intent, inputs)
        try:
            result = intent.handler(context)
        except Cancelled as exc:
            raise Ignore("job cancelled") from exc
        except UpstreamUnavailable as exc:
            self._retry(rt, delivery, exc, exc.retry_after,
                        rt.settings.orchestrator.upstream_retries)
        except redis.RedisError as exc:
            self._retry(rt, delivery, exc, BROKER_RETRY_SECONDS, BROKER_RETRIES)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._hand_off(rt, self._write(rt, job_id, index, lambda s: fail_step(
                session=s, job_id=job_id, index=index, error=error)))
            if getattr(exc, "expected", False):
                raise StepRefused(error) from None
            raise
        return self._outcome(rt, context, result, start, run)

    def _context(self, rt: Resources, job_id: str, index: int, start: StepStart, intent: Intent,
                 inputs: BaseModel) -> StepContext:
        limit = rt.settings.pool.soft_time_limit
        seconds = min(intent.timeout or limit, limit)
        return StepContext(
            job_id=job_id, index=index, tenant_id=start.tenant_id, intent=intent.name,
            inputs=inputs, deadline=time.monotonic() + seconds,
            is_cancelled=lambda: _cancelled(rt, job_id),
            issue_resume_url=lambda: self._issue_resume_url(rt, job_id, index),
            plan_step=lambda name, step_inputs: _plan_step(start.tenant_id, name, step_inputs),
            emit=lambda kind, data: self._emit(rt, job_id, index, kind, data), resources=rt)

    def _outcome(self, rt: Resources, context: StepContext, result: Any, start: StepStart,
                 run: Run) -> Handoff:
        settings = rt.settings.orchestrator
        job_id, index = context.job_id, context.index
        if isinstance(result, Wait):
            ttl = min(result.timeout or settings.wait_timeout, settings.wait_timeout)
            url = context.resume_url()
            return self._write(rt, job_id, index, lambda s: wait_step(
                session=s, job_id=job_id, index=index, ttl=ttl, reason=result.reason,
                resume_url=url, vault=rt.vault))
        output, steps = (result.output, result.steps) if isinstance(result, Extend) else (
            result, [])
        try:
            output = self._storable(rt, job_id, index, output)
            return self._write(rt, job_id, index, lambda s: self._go_on(rt, s, run, finish_step(
                session=s, job_id=job_id, index=index, output=output, extend=steps,
                max_steps=settings.max_steps, rest=start.rest)))
        except (NotStorable, DataError) as exc:
            # Never left running (the sweeper would run it again): the step fails, saying why.
            error = f"its output cannot be stored: {getattr(exc, 'orig', None) or exc}"
            return self._write(rt, job_id, index, lambda s: fail_step(session=s, job_id=job_id,
                                                             index=index, error=error))

    def _go_on(self, rt: Resources, session: Session, run: Run, done: Handoff) -> Handoff:
        """With the end just recorded, begin the next step in the same transaction when this
        run goes on with it (same pool, run under a second old): no message, one transaction
        less. A start that is not a go (throttled, ...) is handed off as its own would be."""
        step, run.next = done.send, None
        if step is None or step_task_name(step.pool) != self.name or \
                not _may_continue(rt, run.began):
            return done
        admission = Admission(rt)
        try:
            start = begin_step(
                session=session, job_id=step.job_id, index=step.index, runner=rt.runner,
                max_deliveries=rt.settings.orchestrator.max_step_deliveries,
                is_live=lambda runner: rt.is_live(runner, (step.job_id, step.index)),
                literal=_literal, admit=admission)
        except redis.RedisError as exc:
            # Its limit's slot could not be asked (Redis, from `admit`, which comes before any
            # write of the start): the end alone commits, and the step goes by message.
            log.warning("step %s/%d: not continued (%s); sent as a message", step.job_id,
                        step.index, type(exc).__name__)
            return done
        events = [*done.events, *start.events]
        if start.verdict != StepVerdict.run:  # it took no slot: a slot is taken to run
            return replace(done, events=events, send=start.next)
        run.next = Next(step, start, admission)
        return replace(done, events=events, send=None)

    def _storable(self, rt: Resources, job_id: str, index: int, output: Any) -> Any:
        """The output as the store can hold it; what was replaced is said in an event."""
        output, replaced = storable(output)
        for paths, value, reason in (
                (replaced.numbers, None, "NaN and Infinity are not JSON"),
                (replaced.text, REPLACEMENT, "NUL and lone surrogates cannot be stored as text")):
            if paths:
                # The paths go to the tenant's event only: keys are the tenant's payload.
                log.warning("step %s/%d: %d value(s) of its output replaced (%s)",
                            job_id, index, len(paths), reason)
                self._emit(rt, job_id, index, EventType.step_output_replaced, {
                    "index": index, "paths": paths, "value": value, "reason": reason})
        return output

    def _hold(self, rt: Resources, job_id: str, index: int, inputs: dict[str, Any],
              hold: Hold) -> Handoff:
        ttl = min(hold.ttl or rt.settings.orchestrator.approval_ttl,
                  rt.settings.orchestrator.approval_ttl)
        token = new_token("apv")
        approve = f"{rt.settings.api.base_url}/v1/jobs/{job_id}/approve"
        return self._write(rt, job_id, index, lambda s: hold_step(
            session=s, job_id=job_id, index=index, inputs=inputs, reason=hold.reason,
            token=token, ttl=ttl, approve_url=approve, vault=rt.vault))

    def _emit(self, rt: Resources, job_id: str, index: int, kind: EventType,
              data: dict[str, Any]) -> None:
        """Append one event while the step runs, then announce it."""
        events = self._write(rt, job_id, index, lambda s: append_events(
            session=s, job_id=job_id, items=[(kind, data)]), recorded=False)
        publish(rt.redis, events)

    def _issue_resume_url(self, rt: Resources, job_id: str, index: int) -> str:
        token = new_token("rsm")
        self._write(rt, job_id, index, lambda s: issue_resume_token(
            session=s, job_id=job_id, index=index, token=token), recorded=False)
        return f"{rt.settings.api.base_url}/v1/resume/{token}"

    def _retry(self, rt: Resources, delivery: Delivery, exc: Exception, countdown: float,
               max_retries: int) -> NoReturn:
        """Try the step again later by a new message, or fail it once the retries are spent."""
        job_id, index = delivery.job_id, delivery.index
        if delivery.retries >= max_retries:
            error = f"{type(exc).__name__}: {exc}"
            self._hand_off(rt, self._write(rt, job_id, index, lambda s: fail_step(
                session=s, job_id=job_id, index=index, error=error)))
            raise exc
        reason = str(exc)
        self._hand_off(rt, self._write(rt, job_id, index, lambda s: retry_step(
            session=s, job_id=job_id, index=index, reason=reason)))
        if delivery.follow is None:
            raise self.retry(countdown=countdown, max_retries=max_retries, exc=exc)
        # A continued step has no message to retry: its first retry is a message of its own.
        try:
            send_step(self.app, delivery.follow, countdown=countdown,
                      retries=delivery.retries + 1)
        except (OperationalError, redis.RedisError, OSError) as failed:
            log.warning("retry of a continued step not sent (%s); the sweeper will send it",
                        type(failed).__name__)
        raise Ignore(f"retried in {countdown:g}s by a message of its own: {reason}")

    def _write(self, rt: Resources, job_id: str, index: int, change: Callable[[Session], T],
               recorded: bool = True) -> T:
        """Run `change` to step `index` in a transaction, with the step's start when it is not
        written yet (`tasks.engine.starts`): written by the change's own record of the step
        (`recorded`: one update of each row, one insert of events), else before it. Its events
        go with the change's `Handoff`, or are announced at once."""
        pending = rt.starts.pending(job_id, index)
        if pending is None:
            return self._transaction(rt, job_id, change)
        with pending.lock:
            if pending.recorded:
                return self._transaction(rt, job_id, change)
            started: list[LiveEvent] = []

            def with_start(session: Session) -> T:
                take_start(session=session, start=pending.start)
                started[:] = [] if recorded else write_start(session=session)
                done = change(session)
                started.extend(write_start(session=session))  # a change that recorded none
                return done
            done = self._transaction(rt, job_id, with_start)
            pending.recorded = True
        if isinstance(done, Handoff):
            return cast(T, replace(done, events=[*started, *done.events]))
        publish(rt.redis, started)
        return done

    def _transaction(self, rt: Resources, job_id: str, change: Callable[[Session], T]) -> T:
        """Run `change` to a job in a transaction, maybe with other steps' (`core.commits`),
        patiently: a short store outage must not lose it (a value the store refuses,
        DataError, is not an outage: it is not tried again)."""
        retry = retry_if_exception_type(SQLAlchemyError) & retry_if_not_exception_type(DataError)
        for attempt in Retrying(stop=stop_after_delay(RECORD_PATIENCE_SECONDS),
                                wait=wait_exponential(multiplier=0.1, max=2),
                                retry=retry, reraise=True):
            with attempt:
                return rt.commits.run(job_id, change)
        raise AssertionError("unreachable")  # pragma: no cover

    def _hand_off(self, rt: Resources, handoff: Handoff) -> None:
        try:
            hand_off(self.app, rt.redis, handoff)
        except (OperationalError, redis.RedisError, OSError) as exc:
            # Committed already: the sweeper finds the job quiet with no message and sends it.
            log.warning("hand-off failed (%s); the sweeper will send the step",
                        type(exc).__name__)


def _literal(intent: str, tenant_id: str) -> bool:
    """Whether the intent takes step references in its inputs as they are (planners do)."""
    try:
        return REGISTRY.get(intent, tenant_id).literal_inputs
    except IntentNotFound:
        return False


def _cancelled(rt: Resources, job_id: str) -> bool:
    try:
        return is_cancelled(rt.redis, job_id)
    except redis.RedisError:
        return False  # a broker outage is not a cancel; the ledger has the last word


def _plan_step(tenant_id: str, name: str, inputs: dict[str, Any]) -> NewStep:
    """A step to add to a plan, checked against the registry (inputs now, unless they refer)."""
    intent = REGISTRY.get(name, tenant_id)
    if intent.planner is not None:
        raise InvalidRequest(f"planned step {name}: it plans steps of its own, so it can only "
                             "be submitted, not planned", field="intent")
    if not refs.has_refs(inputs):
        try:
            intent.validate(inputs)
        except InvalidRequest as exc:
            raise InvalidRequest(f"planned step {name}: {exc}", field=exc.field) from exc
    return NewStep(name, intent.pool, inputs)
