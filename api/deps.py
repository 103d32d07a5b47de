"""Dependencies: the app state and the calling tenant."""

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.state import AppState
from core.errors import Forbidden, Unauthorized

bearer = HTTPBearer(auto_error=False, description="An API key from `orchestrator keys create`.")


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.orch
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_tenant(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The tenant whose API key is in `Authorization: Bearer …`."""
    if credentials is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    tenant = state.tenant_for_key(credentials.credentials)
    if tenant is None:
        raise Unauthorized("unknown or revoked API key")
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]


def metrics_reader(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Admit the metrics token (API_METRICS_TOKEN) or an operator's API key."""
    token = state.settings.api.metrics_token
    if token and credentials and hmac.compare_digest(credentials.credentials.encode(),
                                                      token.encode()):
        return
    if not state.is_operator(get_tenant(state, credentials)):
        raise Forbidden("/metrics needs the metrics token (API_METRICS_TOKEN) or an operator "
                        "key (orchestrator keys create --operator)")
