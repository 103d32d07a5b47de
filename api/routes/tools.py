"""`/v1/tools`: the tools a tenant may use, and the HTTP tools it registers (`tool.<name>`)."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from api.deps import StateDep, TenantDep
from api.openapi import BODY, KEYED, POST, errors
from api.schemas import HeaderName, HeaderValue, HttpUrlText
from core.models import HttpTool
from core.store import tools
from tasks.engine.registry import Intent, exposed
from tasks.intents import REGISTRY, TOOLS
from tasks.tools import TOOL_PREFIX, check_tool

router = APIRouter(prefix="/v1/tools", tags=["tools"])
NAME = r"^[a-z][a-z0-9_-]{0,62}(\.[a-z0-9_-]{1,63}){0,3}$"
BUILTIN_TOOLS = ("http.", "ssh.")


class ToolCreate(BaseModel):
    """An HTTP tool: called with the step's inputs, through the SSRF guard."""

    name: str = Field(pattern=NAME, max_length=100,
                      description="Its name; the intent is `tool.<name>`.")
    description: str = Field("", max_length=1000, description="What it does (for planners).")
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = Field(
        "POST", description="GET, HEAD and DELETE send the inputs as the query, others as JSON.")
    url: HttpUrlText = Field(description=(
        "http(s) URL template: `{field}` in the path or query takes that input, URL-encoded. "
        "Private addresses are refused unless in CALLBACK_ALLOWED_NETWORKS."))
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict, max_length=50, json_schema_extra={"additionalProperties": False},
        description="Headers sent with every call (an API key of the service, say); never "
        "listed back. Names are RFC 7230 tokens; values visible ASCII, spaces and tabs.")
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="The JSON schema of its inputs (an object); submissions are checked by it.")
    timeout: float | None = Field(None, gt=0, le=300,
                                  description="Seconds a call may take (default HTTP_TIMEOUT).")


class ToolPublic(BaseModel):
    """A tool the tenant may use: a built-in one or an HTTP tool it registered."""

    name: str = Field(description="The tool's name.")
    intent: str = Field(description="The intent to submit to use it.")
    kind: Literal["builtin", "http"] = Field(description="Built in, or registered over HTTP.")
    description: str = Field(description="What it does.")
    input_schema: dict[str, Any] = Field(description="The JSON schema of its inputs.")
    method: str | None = Field(None, description="An HTTP tool's method.")
    url: str | None = Field(None, description="An HTTP tool's URL template.")
    headers: list[str] = Field(default_factory=list,
                               description="The names of the headers it sends (not values).")
    timeout: float | None = Field(None, description="Seconds a call may take.")
    dangerous: bool = Field(False, description="Whether a step may be held for approval.")


def _builtin(intent: Intent) -> ToolPublic:
    return ToolPublic(name=intent.name, intent=intent.name, kind="builtin",
                      description=intent.description, input_schema=intent.schema(),
                      timeout=intent.timeout, dangerous=intent.dangerous)


def _registered(tool: HttpTool) -> ToolPublic:
    return ToolPublic(name=tool.name, intent=f"{TOOL_PREFIX}{tool.name}", kind="http",
                      description=tool.description, input_schema=tool.input_schema,
                      method=tool.method, url=tool.url, headers=sorted(tool.headers),
                      timeout=tool.timeout)


def _tools(state: StateDep, tenant: str) -> list[ToolPublic]:
    patterns = state.settings.orchestrator.exposed_intents
    builtin = [_builtin(i) for i in REGISTRY.offered(tenant, patterns)
               if i.name.startswith(BUILTIN_TOOLS)]
    with state.db.read() as session:
        registered = tools.list_tools(session=session, tenant_id=tenant)
    return builtin + [_registered(tool) for tool in registered
                      if exposed(f"{TOOL_PREFIX}{tool.name}", patterns)]


@router.get("", operation_id="listTools", response_model=list[ToolPublic],
            summary="List tools", responses=errors(*KEYED))
def list_tools(state: StateDep, tenant: TenantDep) -> list[ToolPublic]:
    """Every tool the caller may use — the built-in `http.request`, `ssh.exec`,
    `ssh.exec.peek` and its registered HTTP tools — each with the JSON schema of its inputs."""
    return _tools(state, tenant)


@router.get("/list", operation_id="listToolsContract", response_model=list[ToolPublic],
            summary="List tools (contract path)", responses=errors(*KEYED))
def list_tools_contract(state: StateDep, tenant: TenantDep) -> list[ToolPublic]:
    """The same list as `GET /v1/tools`, at the path of the tool-registry contract."""
    return _tools(state, tenant)


@router.post("/register", operation_id="registerTool", response_model=ToolPublic,
             status_code=201, summary="Register an HTTP tool", responses=errors(*KEYED, *BODY))
def register_tool(body: ToolCreate, state: StateDep, tenant: TenantDep) -> ToolPublic:
    """Register an HTTP tool for the caller's tenant only: it becomes the intent
    `tool.<name>` at once. A tool of the same name is replaced. A URL whose host is a refused
    literal address, a template filling the host, or an input schema that is not an object
    schema is a 422."""
    host = check_tool(body.url, body.input_schema, state.resources.allowed_networks)
    tool = HttpTool(tenant_id=tenant, host=host, **body.model_dump())
    with state.db.write() as session:
        saved = _registered(tools.save_tool(session=session, tool=tool, vault=state.vault))
    TOOLS.forget(tenant)
    return saved


@router.delete("/{name}", operation_id="deleteTool", status_code=204, response_class=Response,
               summary="Delete an HTTP tool", responses=errors(*KEYED, *POST, 404))
def delete_tool(name: Annotated[str, Path(description="The tool's name.")],
                state: StateDep, tenant: TenantDep) -> Response:
    """Remove one of the caller's HTTP tools; its intent goes with it (404 if it has none of
    that name)."""
    with state.db.write() as session:
        tools.delete_tool(session=session, tenant_id=tenant, name=name)
    TOOLS.forget(tenant)
    return Response(status_code=204)
