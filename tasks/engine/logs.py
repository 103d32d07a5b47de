"""Worker log lines name tasks, ids and outcomes, never what a step returned (tenant data)."""

import logging

from celery.app import trace

# Celery's default ends with `: %(return_value)s`, a step's whole output at INFO.
trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"
# A step that failed as expected (its task's `throws`: a refusal) is one WARNING line, with
# no traceback; unexpected errors keep Celery's ERROR with the traceback.
trace.log_policy_expected = trace.log_policy_t(trace.LOG_FAILURE, "failed", logging.WARNING,
                                               0, 0)


class NoBackendNoise(logging.Filter):
    """Drop "Failed to mark task … as revoked in backend: No result backend is configured".

    Every worker logs it for every revoked step it does not run: there is no result backend by
    design (the job store holds outcomes), so it reports nothing wrong.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "No result backend is configured" not in record.getMessage()


logging.getLogger("celery.worker.control").addFilter(NoBackendNoise())
