"""Worker log lines name tasks, ids and outcomes, never what a step returned (tenant data)."""

import logging

from celery.app import trace

# Celery's default ends with `: %(return_value)s`, a step's whole output at INFO.
trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"


class NoBackendNoise(logging.Filter):
    """Drop "Failed to mark task … as revoked in backend: No result backend is configured".

    Every worker logs it for every revoked step it does not run: there is no result backend by
    design (the job store holds outcomes), so it reports nothing wrong.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "No result backend is configured" not in record.getMessage()


logging.getLogger("celery.worker.control").addFilter(NoBackendNoise())
