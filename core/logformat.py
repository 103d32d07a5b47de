"""Log lines as plain text or JSON (`LOG_FORMAT`), each carrying the context of the step
being run: `job_id`, `step`, `tenant`, `worker` (never inputs, outputs or secrets)."""

import logging
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

CONTEXT: ContextVar[dict[str, Any]] = ContextVar("orch_log_context", default={})  # noqa: B039
TEXT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}
# Celery hands its task lines `data` (arguments, return value): a step's are ids, but what
# another task returns may be anything, so it is never written.
UNWRITTEN = [*RESERVED_ATTRS, "data", "taskName"]
# httpx names every URL it calls at INFO: tenants' URLs may carry credentials in a query.
QUIETED = ("httpx", "httpcore")


def set_context(**values: Any) -> None:
    """Name what this thread works on now (a new step replaces the last one's context)."""
    CONTEXT.set(values)


def bind(**values: Any) -> None:
    """Add to this thread's context (e.g. the tenant, once the ledger has named it)."""
    CONTEXT.set({**CONTEXT.get(), **values})


class ContextFilter(logging.Filter):
    """Put the thread's context on each record, where a formatter can show it."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in CONTEXT.get().items():
            setattr(record, key, value)
        return True


def formatter(kind: str) -> logging.Formatter:
    """JSON objects, one a line, with the context's fields; else plain text."""
    if kind == "json":
        return JsonFormatter(JSON_FIELDS, rename_fields=RENAMED, reserved_attrs=UNWRITTEN)
    return logging.Formatter(TEXT)


def quiet_libraries() -> None:
    """Keep the `QUIETED` libraries' INFO lines out of every log, text or JSON."""
    for name in QUIETED:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure(kind: str, level: int = logging.INFO) -> None:
    """Log to stderr in the `kind` format through one root handler, with the context."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(kind))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    quiet_libraries()


def uvicorn_config(base: dict[str, Any], kind: str) -> dict[str, Any]:
    """uvicorn's logging dictConfig, its lines as JSON when `kind` is json; the `QUIETED`
    libraries from warnings up (a config, so each of several API processes applies it)."""
    base = {**base, "loggers": {**base.get("loggers", {}),
                                **{name: {"level": "WARNING"} for name in QUIETED}}}
    if kind != "json":
        return base
    json_formatter = {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": JSON_FIELDS,
                      "rename_fields": RENAMED, "reserved_attrs": UNWRITTEN}
    handlers = {name: {**handler, "filters": ["context"]}
                for name, handler in base["handlers"].items()}
    return {**base, "filters": {"context": {"()": "core.logformat.ContextFilter"}},
            "formatters": {name: json_formatter for name in base["formatters"]},
            "handlers": handlers}
