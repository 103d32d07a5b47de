"""Dependencies: the app state and the calling tenant."""

import hmac
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection

from api.schemas import JsonFault, json_fault
from api.state import AppState
from core.errors import Forbidden, Unauthorized

bearer = HTTPBearer(auto_error=False, description="An API key from `orchestrator keys create`.")


async def json_body_rule(connection: HTTPConnection) -> None:
    """Refuse (422, naming the field) a JSON body that breaks the storage rule of every JSON
    the API keeps (`json_fault`: depth, finite numbers, Unicode text), before any route reads
    it; a body that is not JSON is left to the route's own parsing."""
    if not isinstance(connection, Request) or connection.method not in ("POST", "PUT", "PATCH"):
        return  # a WebSocket checks each message itself (api/routes/chat.py)
    try:
        body = json.loads(await connection.body())
    except (ValueError, RecursionError):
        return
    if found := _body_fault(body):
        where, fault = found
        raise RequestValidationError([{"type": "value_error", "loc": where, "msg": str(fault),
                                       "input": None}])


def _body_fault(body: Any) -> tuple[tuple[str, ...], JsonFault] | None:
    """Each field of an object body is a stored value; any other body is one."""
    if not isinstance(body, dict):
        fault = json_fault(body)
        return None if fault is None else (("body",), fault)
    for name, value in body.items():
        if fault := json_fault(name):  # not echoed: it cannot be written back
            return ("body",), JsonFault((), f"a field name: {fault.reason}")
        if fault := json_fault(value):
            return ("body", name), fault
    return None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.orch
    return state


StateDep = Annotated[AppState, Depends(get_state)]


@dataclass(frozen=True)
class Caller:
    """Who calls: the tenant and the id of the API key it used (for the audit)."""

    tenant_id: str
    key_id: str


def get_caller(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The tenant and key in `Authorization: Bearer …`."""
    if credentials is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    owner = state.key_owner(credentials.credentials)
    if owner is None:
        raise Unauthorized("unknown or revoked API key")
    return Caller(*owner)


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_tenant(caller: CallerDep) -> str:
    """The tenant whose API key is in `Authorization: Bearer …`."""
    return caller.tenant_id


TenantDep = Annotated[str, Depends(get_tenant)]


def is_operator_caller(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> bool:
    """Whether the caller holds an operator's key; no key or an unknown one is no error here."""
    if credentials is None:
        return False
    try:
        owner = state.key_owner(credentials.credentials)
        return owner is not None and state.is_operator(owner[0])
    except SQLAlchemyError:
        return False  # the store may be what /ready reports down; the key is not checked then


OperatorFlagDep = Annotated[bool, Depends(is_operator_caller)]


def metrics_reader(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Admit the metrics token (API_METRICS_TOKEN) or an operator's API key."""
    token = state.settings.api.metrics_token
    if token and credentials and hmac.compare_digest(credentials.credentials.encode(),
                                                      token.encode()):
        return
    if not state.is_operator(get_caller(state, credentials).tenant_id):
        raise Forbidden("/metrics needs the metrics token (API_METRICS_TOKEN) or an operator "
                        "key (orchestrator keys create --operator)")
