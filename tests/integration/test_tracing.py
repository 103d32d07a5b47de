"""Traces and JSON logs across the real processes: API → step → upstream call, one trace."""

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.integration.conftest import Stack, running_stack, wait_job
from tests.integration.receiver import Server, reply, serve


@dataclass
class Traced:
    """A stack that traces to `collector` (a loopback OTLP/HTTP receiver) and logs JSON."""

    stack: Stack
    collector: Server


@pytest.fixture(scope="module")
def traced(request: pytest.FixtureRequest) -> Iterator[Traced]:
    with serve(reply(200)) as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "200",
               "LOG_FORMAT": "json"}
        with running_stack(request, "sqlite", 11, env, name="traced",
                           split_workers=False, concurrency=4) as stack:
            yield Traced(stack, collector)


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    kind: int


def spans(collector: Server) -> list[Span]:
    """Every span the collector received, decoded from OTLP protobuf."""
    found = []
    for seen in list(collector.received):
        assert seen.path == "/v1/traces"
        export = ExportTraceServiceRequest.FromString(seen.body)
        for resource in export.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes
                           if a.key == "service.name")
            found += [Span(service, span.name, span.trace_id.hex(), span.kind)
                      for scope in resource.scope_spans for span in scope.spans]
    return found


def test_one_trace_covers_the_api_the_step_and_its_upstream_call(traced: Traced) -> None:
    with serve(reply(200)) as upstream, traced.stack.client() as client:
        # Given a job whose step calls an upstream
        job = client.post("/v1/jobs", json={"intent": "debug.http", "inputs": {
            "url": f"{upstream.url}/hook", "body": {"n": 1}}}).json()
        assert wait_job(client, job["job_id"])["status"] == "succeeded"
        # Then the upstream got the trace in traceparent
        trace_id = upstream.received[0].headers["traceparent"].split("-")[1]
    # And the collector gets the API's request, the step and the upstream call in that trace
    # (each process exports its spans in batches as they end: the request's own span, which
    # ends after its answer, may come in a later batch than its parts)
    wanted = {("orchestrator-api", "POST /v1/jobs"),
              ("orchestrator-worker", "run/tasks.tools.step"), ("orchestrator-worker", "POST")}
    deadline = time.monotonic() + 30
    while not wanted <= (ours := {(s.service, s.name) for s in spans(traced.collector)
                                  if s.trace_id == trace_id}):
        assert time.monotonic() < deadline, ours
        time.sleep(0.2)


def json_lines(log: Path) -> list[dict[str, object]]:
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def test_log_lines_are_json_with_the_job_step_tenant_and_worker(traced: Traced) -> None:
    secret = uuid.uuid4().hex
    with traced.stack.client() as client:
        accepted = client.post("/v1/jobs", json={"intent": "debug.echo",
                                                 "inputs": {"secret": secret}}).json()
        job = wait_job(client, accepted["job_id"])
    log = traced.stack.logs / "all.log"
    deadline = time.monotonic() + 10
    while not any(line.get("job_id") == job["job_id"] for line in json_lines(log)):
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)
    # Every worker line is JSON; the step's lines name its job, step, tenant and worker
    text = log.read_text()
    assert all(line.startswith("{") for line in text.splitlines() if line.strip()), text[-2000:]
    ours = [line for line in json_lines(log) if line.get("job_id") == job["job_id"]]
    assert all(line["step"] == 0 and line["tenant"] and line["worker"] == job["steps"][0][
        "worker"] for line in ours), ours
    # No payload reaches a log line
    assert secret not in text
    for process in ("api", "sweeper"):
        text = (traced.stack.logs / f"{process}.log").read_text()
        assert text.strip() and all(json.loads(line) for line in text.splitlines()
                                    if line.strip()), text[-2000:]
