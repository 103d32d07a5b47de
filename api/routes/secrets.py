"""`/v1/webhook-secret`: the secret a tenant verifies its callbacks with, and its rotation."""

from datetime import datetime, timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import StateDep, TenantDep
from api.openapi import KEYED, POST, errors
from core import deliveries
from core.models import Tenant
from core.vault import Vault

router = APIRouter(prefix="/v1/webhook-secret", tags=["callbacks"])


class SecretPublic(BaseModel):
    """The signing secret (`whsec_…`), and the previous one while it still signs."""

    secret: str = Field(description="The current secret (`whsec_` and base64).")
    previous_secret: str | None = Field(description="The secret before the last rotation.")
    previous_expires_at: datetime | None = Field(
        description="When the previous secret stops signing.")


def _public(tenant: Tenant, vault: Vault) -> SecretPublic:
    previous = tenant.previous_webhook_secret
    return SecretPublic(secret=vault.open(tenant.webhook_secret),
                        previous_secret=vault.open(previous) if previous else None,
                        previous_expires_at=tenant.previous_secret_expires_at)


@router.get("", operation_id="getWebhookSecret", response_model=SecretPublic,
            summary="Get the webhook secret", responses=errors(*KEYED))
def get_secret(state: StateDep, tenant: TenantDep) -> SecretPublic:
    """The secret the caller's callbacks are signed with (Standard Webhooks), to verify the
    `webhook-signature` header."""
    with state.db.read() as session:
        return _public(session.get_one(Tenant, tenant), state.vault)


@router.post("/rotate", operation_id="rotateWebhookSecret", response_model=SecretPublic,
             summary="Rotate the webhook secret", responses=errors(*KEYED, *POST))
def rotate_secret(state: StateDep, tenant: TenantDep) -> SecretPublic:
    """Make a new secret; for CALLBACK_SECRET_OVERLAP (24 h) callbacks carry signatures by both
    the new and the old."""
    overlap = timedelta(seconds=state.settings.callback.secret_overlap)
    with state.db.write() as session:
        return _public(deliveries.rotate_secret(session=session, tenant_id=tenant,
                                                vault=state.vault, overlap=overlap),
                       state.vault)
