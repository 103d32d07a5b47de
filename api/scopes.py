"""The one table of what each keyed route and MCP method needs: a key without it gets 403.

`get_caller` (api/deps.py) looks the route up here by its `operationId`; `check_routes`
refuses to build an app with a keyed route missing from it, so none is open by omission.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from core.errors import ConfigError
from core.models import Scope

# None: any live key of the tenant (it only reads the key itself).
ROUTE_SCOPES: dict[str, Scope | None] = {
    # jobs
    "createJob": Scope.jobs_write, "createJobs": Scope.jobs_write, "cancelJob": Scope.jobs_write,
    "retryJob": Scope.jobs_write,
    "orchestrate": Scope.jobs_write, "chat": Scope.jobs_write, "chatV1": Scope.jobs_write,
    "invokeAgent": Scope.jobs_write, "redeliver": Scope.jobs_write,
    "resetBreaker": Scope.jobs_write,
    "listJobs": Scope.jobs_read, "getJob": Scope.jobs_read, "getJobEvents": Scope.jobs_read,
    "getCompatJob": Scope.jobs_read, "getRunEvents": Scope.jobs_read,
    "getSessionMessages": Scope.jobs_read, "listSessions": Scope.jobs_read,
    "listIntents": Scope.jobs_read,
    "listTools": Scope.jobs_read, "listToolsContract": Scope.jobs_read,
    "listAgents": Scope.jobs_read, "checkAgentHealth": Scope.jobs_read,
    "listDeliveries": Scope.jobs_read,
    "getDelivery": Scope.jobs_read, "listBreakers": Scope.jobs_read,
    "listLlmModels": Scope.jobs_read, "testLlmConnection": Scope.jobs_read,
    "getMemoryStats": Scope.jobs_read, "listPendingSteps": Scope.jobs_read,
    "getUsage": Scope.jobs_read,
    # held steps (ORCHESTRATOR_APPROVAL_POLICY decides further: api/service.py)
    "approveStep": Scope.approve, "rejectStep": Scope.approve,
    # the registry
    "registerTool": Scope.registry_write, "deleteTool": Scope.registry_write,
    "registerAgent": Scope.registry_write, "deleteAgent": Scope.registry_write,
    "clearMemory": Scope.memory_write,
    # the tenant's own keys and secrets
    "getWebhookSecret": Scope.admin, "rotateWebhookSecret": Scope.admin,
    "listKeys": Scope.admin, "createKey": Scope.admin, "revokeKey": Scope.admin,
    "getMe": None,
}

# MCP (`/mcp`) by JSON-RPC method; a method not named here needs no more than a live key.
MCP_SCOPES: dict[str, Scope] = {
    "tools/list": Scope.jobs_read, "tools/call": Scope.jobs_write,
    "tasks/get": Scope.jobs_read, "tasks/result": Scope.jobs_read,
    "tasks/list": Scope.jobs_read, "tasks/cancel": Scope.jobs_write,
}


def needed(operation_id: str, approval_policy: str) -> Scope | None:
    """The scope a route needs: its row, except that ORCHESTRATOR_APPROVAL_POLICY=any lets
    a key that may submit jobs approve them too (as before scopes)."""
    scope = ROUTE_SCOPES[operation_id]
    if scope is Scope.approve and approval_policy == "any":
        return Scope.jobs_write
    return scope


def lacks(scope: Scope) -> str:
    """The refusal of a key without `scope`."""
    return f"this key lacks the scope '{scope.value}'"


def check_routes(app: FastAPI, keyed: object) -> None:
    """Every route that depends on `keyed` (the caller) has its row in ROUTE_SCOPES.

    FastAPI keeps an included router as one entry of `app.routes`; its routes are walked
    through `iter_route_contexts`, as the OpenAPI document is built."""
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        if keyed in _calls(route.dependant) and route.operation_id not in ROUTE_SCOPES:
            raise ConfigError(f"route {route.path} ({route.operation_id}) has no scope in "
                              "api/scopes.py ROUTE_SCOPES")


def _calls(dependant: Dependant) -> set[Any]:
    """Every dependency a route's dependant calls, however deep."""
    found: set[Any] = set()
    for sub in dependant.dependencies:
        found |= {sub.call} | _calls(sub)
    return found
