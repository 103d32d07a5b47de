"""The one exception tree; the API maps it to HTTP answers."""


class OrchestratorError(Exception):
    """Raised when anything in the orchestrator fails; the root of every error here."""

    status_code = 500
    # A refusal (bad input, a refused target or host key, an upstream's 4xx), not a fault
    # here: a step that ends with one is logged in one line, without a traceback.
    expected = False


class ConfigError(OrchestratorError):
    """Raised when a setting is invalid; the message names the variable and the form it wants."""


class NotFound(OrchestratorError):
    """Raised when a job or resource does not exist for this tenant."""

    status_code = 404
    expected = True


class IntentNotFound(NotFound):
    """Raised when a request names an intent that is not registered."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(f"Intent '{name}' not found. Available: {available}")
        self.available = available


class InvalidRequest(OrchestratorError):
    """Raised when a request is well-formed JSON but asks for something impossible."""

    status_code = 422
    expected = True

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Conflict(OrchestratorError):
    """Raised when a request conflicts with the job's current state."""

    status_code = 409


class Unauthorized(OrchestratorError):
    """Raised when a request has no valid API key."""

    status_code = 401


class Forbidden(OrchestratorError):
    """Raised when a valid API key may not do what it asked."""

    status_code = 403
    expected = True


class RateLimited(OrchestratorError):
    """Raised when a key or its tenant is over its request rate; `headers` say when to retry."""

    status_code = 429
    expected = True

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.headers = headers

class BudgetExhausted(OrchestratorError):
    """Raised when a tenant's model budget for the day or month is spent (402: paying, or
    waiting for the next period, cures it; retrying soon does not, so not 429)."""

    status_code = 402
    expected = True


class Unavailable(OrchestratorError):
    """Raised when a dependency (broker, database) cannot be reached."""

    status_code = 503


class UpstreamUnavailable(OrchestratorError):
    """Raised when an upstream's circuit breaker is open: the call is not attempted."""

    status_code = 503

    def __init__(self, upstream: str, retry_after: float) -> None:
        super().__init__(f"upstream {upstream} unavailable, retry after {retry_after:.0f}s")
        self.upstream = upstream
        self.retry_after = retry_after


class UpstreamError(OrchestratorError):
    """Raised when an upstream answered with an error or could not be reached."""

    status_code = 502

    def __init__(self, upstream: str, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"upstream {upstream}: {message}")
        self.upstream = upstream
        self.status = status
        self.retry_after = retry_after
        self.expected = status is not None and 400 <= status < 500  # it said no


class RefusedTarget(InvalidRequest):
    """Raised when a callback URL points at an address that is not allowed."""


class EmbedderMismatch(Conflict):
    """Raised when a namespace's items were embedded by another model than the one in use."""
