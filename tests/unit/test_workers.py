"""Celery configuration, routing and the chain builder (no broker needed)."""

import time

from core.store import NewStep
from tasks import debug
from tasks.chain import build_chain
from workers.app import celery_app


def test_the_app_is_json_only_with_late_acks() -> None:
    conf = celery_app.conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.broker_transport_options["visibility_timeout"] > 0
    assert conf.task_ignore_result


def test_tasks_route_to_their_modules_pool() -> None:
    route = celery_app.amqp.router.route({}, "tasks.tools.echo")
    assert route["queue"].name == "tools"
    assert celery_app.amqp.router.route({}, "tasks.llm.plan")["queue"].name == "llm"


def test_each_pool_queue_has_its_own_exchange_and_key() -> None:
    queues = celery_app.conf.task_queues
    assert [(q.name, q.exchange.name, q.routing_key) for q in queues] == [
        (q.name, q.name, q.name) for q in queues]
    assert {q.name for q in queues} == {"llm", "tools", "memory", "flow", "callbacks"}


def test_a_chain_has_one_immutable_signature_per_step_with_derived_ids() -> None:
    steps = [NewStep("debug.chain", "tasks.tools.chain_link", "tools", {"step": i})
             for i in range(3)]
    chain = build_chain(celery_app, "job_1", steps)
    signatures = chain.tasks
    assert [s.options["task_id"] for s in signatures] == ["job_1-0", "job_1-1", "job_1-2"]
    assert all(s.immutable and s.options["queue"] == "tools" for s in signatures)
    assert signatures[1].kwargs == {"job_id": "job_1", "index": 1, "inputs": {"step": 1}}


def test_sleep_stops_early_when_cancelled() -> None:
    started = time.monotonic()
    result = debug.sleep(5, cancelled=lambda: time.monotonic() - started > 0.2, tick=0.05)
    assert result["cancelled"] and result["slept"] < 1
