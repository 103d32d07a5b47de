"""OpenTelemetry traces, off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

A process that traces exports its spans over OTLP/HTTP in batches. Celery's instrumentation
carries the trace in each message's headers (the API's request span → the step's span), and
httpx's makes each upstream call a span of the step that makes it, passing the trace on in
`traceparent`.
"""

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from core.settings import TelemetrySettings


def start_tracing(settings: TelemetrySettings, role: str) -> TracerProvider | None:
    """Trace this process (`role`: api, worker) if an endpoint is set; None if not."""
    if not settings.exporter_otlp_endpoint:
        return None
    provider = TracerProvider(resource=Resource.create(
        {"service.name": f"{settings.service_name}-{role}"}))
    endpoint = f"{settings.exporter_otlp_endpoint.rstrip('/')}/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    return provider


def stop_tracing(provider: TracerProvider | None) -> None:
    """Send the spans still buffered (a process ending)."""
    if provider is not None:
        provider.shutdown()
