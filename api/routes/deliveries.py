"""`/v1/deliveries`: callback deliveries with every attempt, and redelivery."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from api import service
from api.deps import StateDep, TenantDep
from api.openapi import KEYED, POST, errors
from core import deliveries
from core.models import Delivery, DeliveryStatus

router = APIRouter(prefix="/v1/deliveries", tags=["callbacks"])
DeliveryId = Annotated[str, Path(description="The delivery's id: the `webhook-id` it is sent "
                                             "with.")]


class AttemptPublic(BaseModel):
    """One attempt: when, what the receiver answered, how long it took, what went wrong."""

    number: int
    started_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None


class DeliveryPublic(BaseModel):
    """A callback delivery; its id is the `webhook-id` header of every attempt."""

    id: str
    job_id: str
    url: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[AttemptPublic] = []


def _public(delivery: Delivery, attempt_log: list[AttemptPublic] | None = None) -> DeliveryPublic:
    fields = delivery.model_dump(exclude={"tenant_id", "body", "lease_until"})
    return DeliveryPublic(**fields, attempt_log=attempt_log or [])


@router.get("", operation_id="listDeliveries", response_model=list[DeliveryPublic],
            summary="List callback deliveries", responses=errors(*KEYED, 422))
def list_deliveries(
    state: StateDep,
    tenant: TenantDep,
    job_id: Annotated[str | None, Query(description="Only this job's deliveries.")] = None,
    status: Annotated[DeliveryStatus | None, Query(
        description="Only deliveries in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Most deliveries answered.")] = 50,
) -> list[DeliveryPublic]:
    """The caller's callback deliveries, newest first, by job and status (without their
    attempts: read one delivery for those)."""
    with state.db.read() as session:
        rows = deliveries.list_deliveries(session=session, tenant_id=tenant, job_id=job_id,
                                          status=status, limit=limit)
    return [_public(row) for row in rows]


@router.get("/{delivery_id}", operation_id="getDelivery", response_model=DeliveryPublic,
            summary="Get a callback delivery", responses=errors(*KEYED, 404))
def get_delivery(delivery_id: DeliveryId, state: StateDep, tenant: TenantDep) -> DeliveryPublic:
    """A delivery with every attempt: when, the receiver's status code, latency, error."""
    with state.db.read() as session:
        delivery = deliveries.get_delivery(session=session, tenant_id=tenant,
                                           delivery_id=delivery_id)
        log = [AttemptPublic.model_validate(a, from_attributes=True)
               for a in deliveries.attempts(session=session, delivery_id=delivery_id)]
    return _public(delivery, log)


@router.post("/{delivery_id}/redeliver", operation_id="redeliver", summary="Send a delivery again",
             response_model=DeliveryPublic, responses=errors(*KEYED, *POST, 404, 409))
def redeliver(delivery_id: DeliveryId, state: StateDep, tenant: TenantDep) -> DeliveryPublic:
    """Send a finished delivery again now, with the same `webhook-id`; one still pending or
    being sent is a 409."""
    return _public(service.redeliver(state, tenant, delivery_id))
