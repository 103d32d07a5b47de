"""`/v1/intents`: the registry."""

from fastapi import APIRouter

from api.deps import TenantDep
from api.schemas import IntentPublic
from tasks.registry import REGISTRY

router = APIRouter(prefix="/v1/intents", tags=["intents"])


@router.get("", operation_id="listIntents", response_model=list[IntentPublic])
def list_intents(_: TenantDep) -> list[IntentPublic]:
    """Every registered intent with its pool, mode and JSON input schema."""
    return [
        IntentPublic(name=i.name, pool=i.pool, mode=i.mode, description=i.description,
                     input_schema=i.schema())
        for i in REGISTRY.all()
    ]
