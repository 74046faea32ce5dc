"""The partner registry: which tenants may send us events, with which public key, whether their
documents wait for a person's approval, and how their SKUs map to our items.

The sidecar's relay reads this table for every inbound batch, so a change here (a suspended
partner, a rotated key, a new SKU mapping) takes effect on the next event. Not cached: the
registry is small, and an admin who just changed it must see the change."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, model_validator

from yggdrasil.events.signing import decode_public_key, encode_public_key
from yggdrasil.federation.partners import APPROVAL_POLICIES, STATUSES, add_partner, map_partner_item, set_partner_status
from yggdrasil.tenant import errors
from yggdrasil.tenant.adapters import b2b_views
from yggdrasil.tenant.adapters.rows import equal_filters
from yggdrasil.tenant.api.deps import ServicesDep, require, write
from yggdrasil.tenant.api.fields import MAX_ID, Name, RowId, TenantRef, refuse_nulls, text
from yggdrasil.tenant.api.pagination import After, Limit, Page, page_of
from yggdrasil.tenant.auth import Principal

router = APIRouter(prefix="/partners", tags=["partners"])

Reader = Annotated[Principal, Depends(require("auditor", "sales", "purchasing", action="read the partner registry"))]
Admin = Annotated[Principal, Depends(require("admin", action="change the partner registry"))]
Mapper = Annotated[Principal, Depends(require("purchasing", action="map partner SKUs to items"))]

NO_TAGS: frozenset[str] = frozenset()  # nothing here is cached
Policy = Literal[APPROVAL_POLICIES]  # type: ignore[valid-type]
Status = Literal[STATUSES]  # type: ignore[valid-type]
PartnerId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{1,62}$", description="the partner's tenant id")]
MappingId = Annotated[int, Path(ge=1, le=MAX_ID, description="the mapping's id")]
PartnerSku = text(100, min_length=1)


def _canonical_public_key(value: str) -> str:
    try:
        return encode_public_key(decode_public_key(value))
    except ValueError as error:
        raise ValueError(f"not an Ed25519 public key (base64 of its 32 raw bytes): {error}") from None


PublicKey = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=200),
    AfterValidator(_canonical_public_key),
]


class PartnerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant_id: TenantRef
    name: Name | None = None
    public_key: PublicKey
    approval_policy: Policy = "approve"


class PartnerPatch(BaseModel):
    """Only what is sent changes. A new `public_key` is a key rotation: events signed with the
    old key are refused (quarantined) from then on."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    public_key: PublicKey | None = None
    approval_policy: Policy | None = None
    status: Status | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> "PartnerPatch":
        refuse_nulls(self)
        return self


class PartnerOut(BaseModel):
    id: int
    tenant_id: str
    name: str
    public_key: str
    key_id: str
    approval_policy: str
    status: str
    modules: list[str]
    source: str
    created_at: datetime
    updated_at: datetime


class PartnerItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    partner_sku: PartnerSku
    item_id: RowId


class PartnerItemOut(BaseModel):
    id: int
    partner_tenant_id: str
    partner_sku: str
    item_id: int
    item_sku: str
    created_at: datetime


@router.get("", response_model=Page[PartnerOut], summary="List partner tenants")
async def list_partners(
    services: ServicesDep, _: Reader, limit: Limit = 50, after: After = 0, status: Status | None = None,
    approval_policy: Policy | None = None,
) -> dict:
    filters = equal_filters(status=status, approval_policy=approval_policy)

    async def load(conn):
        return page_of(await b2b_views.list_partners(conn, filters, limit, after), limit)

    return await services.db.read(load)


@router.post("", response_model=PartnerOut, status_code=201,
             summary="Register a partner tenant (409 if it is registered: PATCH it instead)")
async def create_partner(body: PartnerIn, services: ServicesDep, principal: Admin) -> dict:
    if body.tenant_id == services.settings.tenant_id:
        raise errors.InvalidInput("partner.is_self", tenant_id=body.tenant_id)

    async def work(conn):
        # `add_partner` registers or replaces; a POST must not silently replace a partner's key.
        # The table lock makes check-then-insert atomic against a concurrent registration; the
        # relay's reads do not conflict with it, and partners are registered rarely.
        await conn.execute("LOCK TABLE b2b_partners IN SHARE ROW EXCLUSIVE MODE")
        cur = await conn.execute("SELECT 1 FROM b2b_partners WHERE tenant_id = %s", (body.tenant_id,))
        if await cur.fetchone() is not None:
            raise errors.Conflict("partner.exists", tenant_id=body.tenant_id)
        await add_partner(conn, tenant_id=body.tenant_id, public_key=body.public_key, name=body.name or "",
                          approval_policy=body.approval_policy)
        return await b2b_views.get_partner(conn, body.tenant_id)

    return await write(services, principal, NO_TAGS, work)


@router.get("/{tenant_id}", response_model=PartnerOut, summary="Get one partner tenant")
async def get_partner(tenant_id: PartnerId, services: ServicesDep, _: Reader) -> dict:
    return await services.db.read(lambda conn: b2b_views.get_partner(conn, tenant_id))


@router.patch("/{tenant_id}", response_model=PartnerOut,
              summary="Change a partner: name, approval policy, status (active, suspended, departed), public key")
async def update_partner(tenant_id: PartnerId, body: PartnerPatch, services: ServicesDep, principal: Admin) -> dict:
    changes = body.model_dump(exclude_unset=True)

    async def work(conn):
        current = await b2b_views.get_partner(conn, tenant_id, for_update=True)
        status = changes.get("status", current["status"])
        if changes.keys() & {"name", "public_key", "approval_policy"}:
            await add_partner(
                conn, tenant_id=tenant_id, name=changes.get("name", current["name"]),
                public_key=changes.get("public_key", current["public_key"]),
                approval_policy=changes.get("approval_policy", current["approval_policy"]),
            )
            # add_partner reactivates (it is also the CLI's "register again"); keep the status.
            if status != "active":
                await set_partner_status(conn, tenant_id, status)
        elif status != current["status"]:
            await set_partner_status(conn, tenant_id, status)
        return await b2b_views.get_partner(conn, tenant_id)

    return await write(services, principal, NO_TAGS, work)


@router.get("/{tenant_id}/items", response_model=Page[PartnerItemOut],
            summary="The partner's SKUs mapped to our items (inbound lines are matched by them)")
async def list_partner_items(
    tenant_id: PartnerId, services: ServicesDep, _: Reader, limit: Limit = 50, after: After = 0,
    partner_sku: Annotated[PartnerSku | None, Query(description="exact partner SKU")] = None,
    item_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> dict:
    filters = equal_filters(partner_tenant_id=tenant_id, partner_sku=partner_sku, item_id=item_id)

    async def load(conn):
        await b2b_views.get_partner(conn, tenant_id)  # 404 for an unknown partner, not an empty page
        return page_of(await b2b_views.list_partner_items(conn, filters, limit, after), limit)

    return await services.db.read(load)


@router.post("/{tenant_id}/items", response_model=PartnerItemOut, status_code=201,
             summary="Map a partner SKU to one of our items (re-maps it if mapped); waiting approvals "
                     "blocked by the SKU can then be approved")
async def map_partner_item_route(
    tenant_id: PartnerId, body: PartnerItemIn, services: ServicesDep, principal: Mapper,
) -> dict:
    async def work(conn):
        await b2b_views.get_partner(conn, tenant_id)
        sku = await b2b_views.item_sku(conn, body.item_id)
        if sku is None:
            raise errors.ReferenceUnknown(field="item_id", id=body.item_id)
        await map_partner_item(conn, tenant_id=tenant_id, partner_sku=body.partner_sku, item_sku=sku)
        return await b2b_views.get_partner_item(conn, tenant_id, body.partner_sku)

    return await write(services, principal, NO_TAGS, work)


@router.delete("/{tenant_id}/items/{mapping_id}", status_code=204, summary="Remove a SKU mapping")
async def delete_partner_item(
    tenant_id: PartnerId, mapping_id: MappingId, services: ServicesDep, principal: Mapper,
) -> Response:
    await write(services, principal, NO_TAGS, lambda conn: b2b_views.delete_partner_item(conn, tenant_id, mapping_id))
    return Response(status_code=204)
