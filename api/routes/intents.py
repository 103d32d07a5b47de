"""`/v1/intents`: the registry."""

from fastapi import APIRouter

from api.deps import StateDep, TenantDep
from api.openapi import KEYED, errors
from api.schemas import IntentPublic
from tasks.intents import REGISTRY

router = APIRouter(prefix="/v1/intents", tags=["intents"])


@router.get("", operation_id="listIntents", response_model=list[IntentPublic],
            summary="List intents", responses=errors(*KEYED))
def list_intents(state: StateDep, tenant: TenantDep) -> list[IntentPublic]:
    """Every intent the caller's tenant may submit (those ORCHESTRATOR_EXPOSED_INTENTS offers;
    internal steps never), with its pool, mode, description, whether it is dangerous, its
    effect (`read` or `write`), its timeout and the JSON schema of its inputs."""
    return [
        IntentPublic(name=i.name, pool=i.pool, mode=i.mode, description=i.description,
                     dangerous=i.dangerous, effect=i.effect, timeout=i.timeout,
                     input_schema=i.schema())
        for i in REGISTRY.offered(tenant, state.settings.orchestrator.exposed_intents)
    ]
