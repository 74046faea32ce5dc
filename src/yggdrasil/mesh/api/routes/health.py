"""Admin: what the health monitor has seen (`/api/v1/health`)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from yggdrasil.mesh.adapters import health, registry
from yggdrasil.mesh.api.deps import State, require_admin

router = APIRouter(prefix="/health", tags=["health"], dependencies=[Depends(require_admin)])

Limit = Annotated[int, Query(ge=1, le=500, description="page size (1-500)")]
Before = Annotated[int | None, Query(ge=1, description="return rows with id less than this cursor (newest first)")]


def _page(rows: list[dict], limit: int) -> dict:
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_before": rows[-1]["id"] if more and rows else None}


@router.get("/tenants", summary="Current health of every tenant (null health: never checked)")
async def current(state: State) -> dict:
    async with state.pool.connection() as conn:
        return {"items": await health.current_statuses(conn)}


@router.get("/tenants/{tenant_id}", summary="Current health of one tenant")
async def current_one(tenant_id: str, state: State) -> dict:
    async with state.pool.connection() as conn:
        await registry.get_tenant(conn, tenant_id)
        return (await health.current_statuses(conn, tenant_id))[0]


@router.get("/tenants/{tenant_id}/checks", summary="Check history of one tenant, newest first")
async def checks(tenant_id: str, state: State, limit: Limit = 100, before: Before = None) -> dict:
    async with state.pool.connection() as conn:
        await registry.get_tenant(conn, tenant_id)
        return _page(await health.check_history(conn, tenant_id, before=before, limit=limit), limit)


@router.get("/transitions", summary="Status changes (up / degraded / down), newest first")
async def transitions(state: State, limit: Limit = 100, before: Before = None, tenant: str | None = None) -> dict:
    async with state.pool.connection() as conn:
        return _page(await health.transitions(conn, tenant_id=tenant, before=before, limit=limit), limit)
