"""Admin: the tenants of the mesh (`/api/v1/tenants`)."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from yggdrasil.mesh.adapters import registry
from yggdrasil.mesh.api.deps import State, require_admin

router = APIRouter(prefix="/tenants", tags=["tenants"], dependencies=[Depends(require_admin)])

Limit = Annotated[int, Query(ge=1, le=500, description="page size (1-500)")]


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="the tenant id: 2-63 of a-z, 0-9, '-', starting with a letter")
    name: str
    api_url: str = Field(description="where the mesh reaches the tenant server, e.g. https://erp.acme.example")
    public_key: str = Field(description="base64 of the tenant's 32-byte Ed25519 public key")
    broker_credentials_ref: str = Field("", description="where the broker password is kept (never the secret)")


class TenantPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    api_url: str | None = None
    public_key: str | None = None
    broker_credentials_ref: str | None = None


@router.get("", summary="List tenants (keyset pagination by id, optional status filter)")
async def list_tenants(state: State, limit: Limit = 100, after: str | None = None,
                       status: Literal["active", "suspended", "departed"] | None = None) -> dict:
    async with state.pool.connection() as conn:
        rows = await registry.list_tenants(conn, status=status, after=after, limit=limit)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_after": rows[-1]["id"] if more and rows else None}


@router.get("/{tenant_id}", summary="One tenant")
async def get_tenant(tenant_id: str, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.get_tenant(conn, tenant_id)


@router.post("", status_code=201, summary="Register a tenant (status active)")
async def register_tenant(body: TenantIn, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.register_tenant(
            conn, tenant_id=body.id, name=body.name, api_url=body.api_url, public_key=body.public_key,
            broker_credentials_ref=body.broker_credentials_ref)


@router.patch("/{tenant_id}", summary="Change a tenant's name, API URL, public key or credentials reference")
async def update_tenant(tenant_id: str, body: TenantPatch, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.update_tenant(conn, tenant_id, **body.model_dump(exclude_unset=True))


@router.post("/{tenant_id}/suspend",
             summary="Suspend an active tenant (partners refuse its events after their next sync)")
async def suspend_tenant(tenant_id: str, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.change_tenant_status(conn, tenant_id, "suspend")


@router.post("/{tenant_id}/reactivate", summary="Reactivate a suspended tenant")
async def reactivate_tenant(tenant_id: str, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.change_tenant_status(conn, tenant_id, "reactivate")


@router.post("/{tenant_id}/depart", summary="Mark a tenant departed (final)")
async def depart_tenant(tenant_id: str, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.change_tenant_status(conn, tenant_id, "depart")
