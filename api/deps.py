"""Dependencies: the app state and the calling tenant."""

import hmac
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection

from api.schemas import JsonFault, json_fault
from api.scopes import lacks, needed
from api.state import AppState
from core.errors import Forbidden, RateLimited, Unauthorized
from core.models import Scope
from core.store.rates import Rates

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
    """Who calls: the tenant, the id of the API key it used (for the audit), its scopes."""

    tenant_id: str
    key_id: str
    scopes: frozenset[Scope] = frozenset()

    @property
    def operator(self) -> bool:
        return Scope.operator in self.scopes

    def require(self, scope: Scope) -> None:
        """403 unless the key holds `scope`."""
        if scope not in self.scopes:
            raise Forbidden(lacks(scope))


def authenticate(state: AppState, raw_key: str | None) -> tuple[Caller, Rates]:
    """The caller a bearer key is (401 when it is missing, unknown, revoked or expired)."""
    if not raw_key:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    found = state.authorize(raw_key)
    if found is None:
        raise Unauthorized("unknown or revoked API key")
    key = found.key
    return Caller(key.tenant_id, key.key_id, key.scopes), found.rates


def admit(state: AppState, caller: Caller, rates: Rates) -> dict[str, str]:
    """Take the request's tokens (429 when the key or its tenant is over its rate); the
    RateLimit headers to send."""
    verdict = state.limiter.take(caller.key_id, caller.tenant_id, rates)
    if verdict is None:
        return {}
    if not verdict.allowed:
        raise RateLimited(f"too many requests: retry after {verdict.retry_after} s "
                          "(see the RateLimit headers)", verdict.headers())
    return verdict.headers()


def get_caller(
    request: Request,
    response: Response,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The tenant and key in `Authorization: Bearer …`, holding the scope the route needs
    (api/scopes.py), within its rate limits."""
    caller, rates = authenticate(state, credentials.credentials if credentials else None)
    route = request.scope.get("route")
    scope = needed(route.operation_id, state.settings.orchestrator.approval_policy) \
        if isinstance(route, APIRoute) and route.operation_id else None
    if scope is not None:
        caller.require(scope)
    response.headers.update(admit(state, caller, rates))
    return caller


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
        found = state.authorize(credentials.credentials)
        return found is not None and Scope.operator in found.key.scopes
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
    caller, _ = authenticate(state, credentials.credentials if credentials else None)
    if not caller.operator:
        raise Forbidden("/metrics needs the metrics token (API_METRICS_TOKEN) or an operator "
                        "key (orchestrator keys create --operator)")
