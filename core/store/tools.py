"""HTTP tools tenants registered: one row per tenant and name."""

from sqlmodel import Session, select

from core.errors import NotFound
from core.models import HttpTool
from core.vault import Vault


def save_tool(*, session: Session, tool: HttpTool, vault: Vault) -> HttpTool:
    """Register a tool, or replace the tenant's tool of that name; its header values (API
    keys, bearer tokens) are stored sealed."""
    tool.headers = vault.seal_values(tool.headers)
    existing = find_tool(session=session, tenant_id=tool.tenant_id, name=tool.name)
    if existing is not None:
        session.delete(existing)
        session.flush()
    session.add(tool)
    session.flush()
    session.refresh(tool)
    return tool


def find_tool(*, session: Session, tenant_id: str, name: str) -> HttpTool | None:
    return session.exec(select(HttpTool).where(HttpTool.tenant_id == tenant_id,
                                               HttpTool.name == name)).first()


def list_tools(*, session: Session, tenant_id: str) -> list[HttpTool]:
    """The tenant's tools, by name."""
    return list(session.exec(select(HttpTool).where(HttpTool.tenant_id == tenant_id)
                             .order_by(HttpTool.name)))


def delete_tool(*, session: Session, tenant_id: str, name: str) -> None:
    """Remove the tenant's tool; NotFound when it has none of that name."""
    tool = find_tool(session=session, tenant_id=tenant_id, name=name)
    if tool is None:
        raise NotFound(f"tool '{name}' not found")
    session.delete(tool)
