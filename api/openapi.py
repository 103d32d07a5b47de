"""The OpenAPI document: the error answers of each route, and only those, with one body shape.

Every route declares `summary=`, a docstring (its description) and `responses=errors(...)`
naming each error code it can answer; `KEYED` and `BODY` are the codes every keyed route and
every route reading a JSON body share.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.schemas import ErrorBody
from api.scopes import ROUTE_SCOPES

Responses = dict[int | str, dict[str, Any]]

WHY = {
    400: "The body could not be parsed (not UTF-8, or nested too deep to read).",
    401: "No API key, or an unknown or revoked one (`Authorization: Bearer <key>`).",
    402: "The tenant's model budget for the day or month is spent (prompts and chat only).",
    403: "The API key is valid but may not do this (it lacks the scope the route needs).",
    404: "No such resource for this tenant.",
    409: "The resource's current state does not allow this.",
    413: "The body is over API_MAX_BODY_BYTES.",
    429: "The API key or its tenant is over its request rate; retry after `Retry-After` "
         "seconds (`RateLimit-Policy` and `RateLimit` say the limits and what is left).",
    422: "The request is well-formed but invalid; `detail` lists each problem with its field.",
    502: "An upstream this route calls (the model server) answered with an error.",
    503: "The broker or the job store is unavailable; retry shortly.",
}
KEYED = (401, 403, 429, 503)
BODY = (400, 413, 422)
POST = (413,)


def job_links() -> dict[str, Any]:
    """OpenAPI links from an answer carrying `job_id` to the routes that follow the job."""
    follow = {"GetJob": "getJob", "GetJobEvents": "getJobEvents", "CancelJob": "cancelJob"}
    return {name: {"operationId": operation, "parameters": {"job_id": "$response.body#/job_id"}}
            for name, operation in follow.items()}


RATE_HEADERS = {
    "Retry-After": {"description": "Seconds until a request may succeed again.",
                    "schema": {"type": "integer"}},
    "RateLimit-Policy": {"description": "The limits (IETF draft: `\"key\";q=…;w=…`).",
                         "schema": {"type": "string"}},
    "RateLimit": {"description": "What is left of each limit (IETF draft: `\"key\";r=…;t=…`).",
                  "schema": {"type": "string"}},
}


def errors(*codes: int) -> Responses:
    """The `responses=` of a route: each error code it can answer, each with ErrorBody."""
    found: Responses = {code: {"model": ErrorBody, "description": WHY[code]}
                        for code in sorted(set(codes))}
    if 429 in found:
        found[429]["headers"] = RATE_HEADERS
    return found


def _state_scopes(document: dict[str, Any]) -> None:
    """Each keyed operation names the scope its key needs: as the role of its bearer security
    requirement (OpenAPI 3.1) and in its description."""
    for item in document["paths"].values():
        for operation in item.values():
            if operation.get("operationId") not in ROUTE_SCOPES or "security" not in operation:
                continue
            scope = ROUTE_SCOPES[operation["operationId"]]
            operation["security"] = [{name: [scope.value] if scope else []}
                                     for entry in operation["security"] for name in entry]
            needs = f"Needs an API key with the scope `{scope.value}`." if scope else \
                "Needs any live API key of the tenant."
            operation["description"] = f"{operation.get('description', '')}\n\n{needs}".strip()


def _drop_default_422(document: dict[str, Any]) -> None:
    """FastAPI adds a 422 to every route with parameters; routes that can answer one say so."""
    for item in document["paths"].values():
        for operation in item.values():
            answer = operation["responses"].get("422", {})
            schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref", "").endswith("/HTTPValidationError"):
                del operation["responses"]["422"]
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _absent_not_null(document: dict[str, Any]) -> None:
    """An optional parameter is left out, never sent as null: drop `null` from its schema."""
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
                if len(options) == 1 and len(schema["anyOf"]) == 2:
                    extra = {k: v for k, v in schema.items() if k != "anyOf"}
                    parameter["schema"] = {**options[0], **extra}


TEXT = r"^[^\u0000]*$"  # no NUL: what Postgres text cannot hold
STORED_VALUE = "StoredValue"


def _state_the_json_rule(document: dict[str, Any]) -> None:
    """Say in every request body's schema the part of the stored-JSON rule (`json_fault`) that
    JSON Schema can say: strings and keys without NUL, free-form values included."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    ref = {"$ref": f"#/components/schemas/{STORED_VALUE}"}
    schemas[STORED_VALUE] = {"description": "Any JSON value the API stores.", "anyOf": [
        {"type": "string", "pattern": TEXT}, {"type": "number"}, {"type": "boolean"},
        {"type": "null"}, {"type": "array", "items": ref},
        {"type": "object", "propertyNames": {"pattern": TEXT}, "additionalProperties": ref}]}
    seen: set[str] = {STORED_VALUE}

    def visit(schema: Any) -> None:
        if not isinstance(schema, dict):
            return
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                visit(schemas[name])
            return
        # A string with a pattern of its own already excludes NUL (a test checks it).
        if schema.get("type") == "string" and not {"enum", "const", "format",
                                                   "pattern"} & set(schema):
            schema["pattern"] = TEXT
        if schema.get("type") == "object":
            schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": TEXT}
            if schema.get("additionalProperties", True) is True:
                schema["additionalProperties"] = ref
        for key in ("properties", "patternProperties"):
            for sub in schema.get(key, {}).values():
                visit(sub)
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(key, []):
                visit(sub)
        for key in ("items", "additionalProperties"):
            visit(schema.get(key))

    for item in document["paths"].values():
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {})
            visit(content.get("application/json", {}).get("schema"))


def _state_the_url_rule(document: dict[str, Any]) -> None:
    """Say in each path and query parameter's schema that it holds no NUL (`NoNulInUrl`)."""
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                if parameter["in"] in ("path", "query") and schema.get("type") == "string" \
                        and not {"enum", "const", "format", "pattern"} & set(schema):
                    schema["pattern"] = TEXT


def install(app: FastAPI) -> None:
    """Serve the document built once, with only the error answers each route declares."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version,
                                   description=app.description, routes=app.routes,
                                   servers=app.servers, tags=app.openapi_tags)
            _drop_default_422(document)
            _absent_not_null(document)
            _state_the_json_rule(document)
            _state_the_url_rule(document)
            _state_scopes(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
