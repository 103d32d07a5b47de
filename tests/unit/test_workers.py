"""Celery configuration, routing and the chain builder (no broker needed)."""

import time

import pytest

from core.store.tables import NextStep
from tasks import debug
from tasks.engine.app import celery_app
from tasks.engine.chain import step_signature
from tasks.engine.context import Cancelled, StepContext
from tasks.engine.pools import POOLS


def test_the_app_is_json_only_with_late_acks() -> None:
    conf = celery_app.conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.broker_transport_options["visibility_timeout"] > 0
    assert conf.task_ignore_result


def test_a_worker_reconnects_to_the_broker_without_a_limit() -> None:
    # Celery's default (100 tries, kombu waiting up to 30 s between) ends a worker after ~46
    # minutes of broker outage; the faults suite's outages are short, so the limit is read here
    assert celery_app.conf.broker_connection_max_retries is None
    assert celery_app.conf.broker_connection_retry_on_startup is True


def test_tasks_route_to_their_modules_pool() -> None:
    route = celery_app.amqp.router.route({}, "tasks.tools.step")
    assert route["queue"].name == "tools"
    assert celery_app.amqp.router.route({}, "tasks.llm.step")["queue"].name == "llm"


def test_every_pool_has_a_step_task() -> None:
    import tasks.engine.steps  # noqa: F401  (registers them)

    assert {f"tasks.{pool}.step" for pool in POOLS} <= set(celery_app.tasks)


def test_network_bound_pools_run_threads_and_embedding_runs_processes() -> None:
    assert {name: pool.execution for name, pool in POOLS.items()} == {
        "llm": "threads", "tools": "threads", "memory": "prefork", "flow": "threads",
        "callbacks": "threads"}


def test_each_pool_queue_has_its_own_exchange_and_key() -> None:
    queues = celery_app.conf.task_queues
    assert [(q.name, q.exchange.name, q.routing_key) for q in queues] == [
        (q.name, q.name, q.name) for q in queues]
    assert {q.name for q in queues} == {"llm", "tools", "memory", "flow", "callbacks"}


def test_a_step_message_carries_ids_only_and_a_derived_task_id() -> None:
    signature = step_signature(celery_app, NextStep("job_1", 2, "debug.wait", "flow"))
    assert signature.task == "tasks.flow.step" and signature.immutable
    assert signature.options["task_id"] == "job_1-2" and signature.options["queue"] == "flow"
    assert signature.kwargs == {"job_id": "job_1", "index": 2, "intent": "debug.wait"}


def context(inputs: debug.SleepInputs, cancelled: object, limit: float = 60) -> StepContext:
    return StepContext(job_id="j", index=0, tenant_id="t", intent="debug.sleep", inputs=inputs,
                       deadline=time.monotonic() + limit, is_cancelled=cancelled,  # type: ignore[arg-type]
                       issue_resume_url=lambda: "", plan_step=lambda *_: None,  # type: ignore[arg-type,return-value]
                       emit=lambda *_: None, resources=None)  # type: ignore[arg-type]


def test_sleep_stops_early_when_cancelled() -> None:
    started = time.monotonic()
    with pytest.raises(Cancelled):
        debug.sleep(context(debug.SleepInputs(seconds=5),
                            lambda: time.monotonic() - started > 0.2))
    assert time.monotonic() - started < 1


def test_sleep_stops_at_the_time_limit() -> None:
    with pytest.raises(debug.TimeLimitExceeded):
        debug.sleep(context(debug.SleepInputs(seconds=5), lambda: False, limit=0.2))
