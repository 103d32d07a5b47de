"""`/v1/intents`: the registry."""

from fastapi import APIRouter

from api.deps import TenantDep
from api.schemas import IntentPublic
from tasks.intents import REGISTRY

router = APIRouter(prefix="/v1/intents", tags=["intents"])


@router.get("", operation_id="listIntents", response_model=list[IntentPublic])
def list_intents(tenant: TenantDep) -> list[IntentPublic]:
    """Every intent the caller's tenant may use, with its pool, mode and JSON input schema."""
    return [
        IntentPublic(name=i.name, pool=i.pool, mode=i.mode, description=i.description,
                     dangerous=i.dangerous, timeout=i.timeout, input_schema=i.schema())
        for i in REGISTRY.all(tenant)
    ]
