"""`/v1/keys` and `/v1/me`: a tenant's API keys as objects (never their secret after creation),
and what the calling key is."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import AwareDatetime, BaseModel, Field

from api import service
from api.deps import CallerDep, StateDep
from api.openapi import BODY, KEYED, POST, errors
from core.models import DEFAULT_SCOPES, ApiKey, Scope
from core.store.keys import find_tenant, list_keys, scopes_of
from core.store.rates import Rate, rates_for, tenant_limits

router = APIRouter(tags=["keys"])
KeyId = Annotated[str, Path(description="The key's `id` (`key_…`).")]
TenantQuery = Annotated[str | None, Query(
    max_length=200, pattern=r"^[^\x00]*$",
    description="Another tenant's id or name (an `operator` key only); default: the caller's.")]


class KeyCreate(BaseModel):
    """A new key of the tenant: what it may do, and until when."""

    name: str = Field("", max_length=200, pattern=r"^[^\x00]*$",
                      description="A name for people (what uses the key).")
    scopes: list[Scope] = Field(
        default_factory=lambda: sorted(DEFAULT_SCOPES), max_length=len(Scope),
        description="What it may do; default `jobs:write` and `jobs:read`. A key grants only "
        "scopes it holds itself.")
    expires_at: AwareDatetime | None = Field(
        None, description="When it stops working (with a time zone); none: never.")


class KeyPublic(BaseModel):
    """An API key as the API shows it: everything but the key itself."""

    id: str
    tenant_id: str
    name: str
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None = Field(description="Its last use, to the minute.")
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    """A new key: `key` is shown this once; only its hash is kept."""

    key: str = Field(description="The bearer key (`ork_…`); store it now.")


class RateLimitPublic(BaseModel):
    """A token bucket: `per_second` sustained, `burst` at once; `per_second` 0 is no limit."""

    per_second: float
    burst: int


class LimitsPublic(BaseModel):
    """The limits that apply to the calling key."""

    rate_per_key: RateLimitPublic
    rate_per_tenant: RateLimitPublic


class MePublic(BaseModel):
    """Who the caller is: its tenant, its key, what the key may do, its limits."""

    tenant_id: str = Field(description="The tenant's id (`ten_…`), as SSH hosts and flows "
                           "are granted by.")
    tenant_name: str
    key_id: str
    scopes: list[Scope]
    limits: LimitsPublic


def public(key: ApiKey) -> KeyPublic:
    return KeyPublic(id=key.id, tenant_id=key.tenant_id, name=key.name,
                     scopes=sorted(scopes_of(key)), created_at=key.created_at,
                     last_used_at=key.last_used_at, expires_at=key.expires_at,
                     revoked_at=key.revoked_at)


def _bucket(rate: Rate) -> RateLimitPublic:
    return RateLimitPublic(per_second=rate.rate, burst=rate.burst)


@router.get("/v1/me", operation_id="getMe", response_model=MePublic, summary="Who am I",
            responses=errors(*KEYED))
def get_me(state: StateDep, caller: CallerDep) -> MePublic:
    """The caller's tenant (id and name), key id, scopes and limits."""
    with state.db.read() as session:
        tenant = find_tenant(session=session, tenant=caller.tenant_id)
        rates = rates_for(tenant_limits(session=session, tenant_id=tenant.id),
                          state.default_rates)
    return MePublic(tenant_id=tenant.id, tenant_name=tenant.name, key_id=caller.key_id,
                    scopes=sorted(caller.scopes),
                    limits=LimitsPublic(rate_per_key=_bucket(rates.key),
                                        rate_per_tenant=_bucket(rates.tenant)))


@router.get("/v1/keys", operation_id="listKeys", response_model=list[KeyPublic],
            summary="List API keys", responses=errors(*KEYED, 404, 422))
def get_keys(state: StateDep, caller: CallerDep, tenant: TenantQuery = None) -> list[KeyPublic]:
    """The tenant's keys, revoked ones too, oldest first; never the keys themselves."""
    tenant_id = service.managed_tenant(state, caller.tenant_id, caller.operator, tenant)
    with state.db.read() as session:
        return [public(key) for key in list_keys(session=session, tenant_id=tenant_id)]


@router.post("/v1/keys", operation_id="createKey", response_model=KeyCreated, status_code=201,
             summary="Create an API key", responses=errors(*KEYED, *BODY, 404))
def create_key(body: KeyCreate, state: StateDep, caller: CallerDep,
               tenant: TenantQuery = None) -> KeyCreated:
    """A new key of the tenant with the scopes asked for (only ones the caller's key holds);
    the answer is the one time the key is shown."""
    tenant_id = service.managed_tenant(state, caller.tenant_id, caller.operator, tenant)
    key, raw = service.create_key(state, tenant_id, set(body.scopes), caller.scopes, body.name,
                                  body.expires_at)
    return KeyCreated(**public(key).model_dump(), key=raw)


@router.delete("/v1/keys/{key_id}", operation_id="revokeKey", status_code=204,
               response_class=Response, summary="Revoke an API key",
               responses=errors(*KEYED, *POST, 404))
def revoke_key(key_id: KeyId, state: StateDep, caller: CallerDep) -> Response:
    """Revoke a key of the tenant (any tenant's, for an operator key): every API process
    refuses it within API_KEY_CACHE_SECONDS. Revoking a revoked key changes nothing."""
    service.revoke_key(state, key_id, None if caller.operator else caller.tenant_id)
    return Response(status_code=204)
