"""Admin: partnerships between tenants (`/api/v1/partnerships`), proposed by one side and
accepted by the other."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from yggdrasil.mesh.adapters import registry
from yggdrasil.mesh.api.deps import State, require_admin
from yggdrasil.mesh.domain.registry import MODULES

router = APIRouter(prefix="/partnerships", tags=["partnerships"], dependencies=[Depends(require_admin)])

Limit = Annotated[int, Query(ge=1, le=500, description="page size (1-500)")]
After = Annotated[int, Query(ge=0, description="return partnerships with id greater than this cursor")]
PartnershipStatus = Literal["proposed", "active", "suspended", "ended", "declined"]


class Proposal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    proposed_by: str = Field(description="the proposing tenant")
    partner: str = Field(description="the tenant invited to trade")
    modules: list[str] = Field(default_factory=lambda: list(MODULES), description="sales, purchasing, b2b")
    approval_policy: str = Field("approve", description="auto, or approve: documents wait for a person")


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str = Field(description="the invited tenant, answering the proposal")


@router.get("", summary="List partnerships (filter by tenant and status)")
async def list_partnerships(state: State, limit: Limit = 100, after: After = 0, tenant: str | None = None,
                            status: PartnershipStatus | None = None) -> dict:
    async with state.pool.connection() as conn:
        rows = await registry.list_partnerships(conn, tenant_id=tenant, status=status, after=after, limit=limit)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_after": rows[-1]["id"] if more and rows else None}


@router.get("/{partnership_id}", summary="One partnership")
async def get_partnership(partnership_id: int, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.get_partnership(conn, partnership_id)


@router.post("", status_code=201, summary="Propose a partnership (409 if the pair has one)")
async def propose(body: Proposal, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.propose_partnership(conn, proposed_by=body.proposed_by, partner=body.partner,
                                                  modules=body.modules, approval_policy=body.approval_policy)


@router.post("/{partnership_id}/accept", summary="The invited side accepts the proposal")
async def accept(partnership_id: int, body: Answer, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.act_on_partnership(conn, partnership_id, "accept", by=body.by)


@router.post("/{partnership_id}/decline", summary="The invited side declines the proposal")
async def decline(partnership_id: int, body: Answer, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.act_on_partnership(conn, partnership_id, "decline", by=body.by)


@router.post("/{partnership_id}/suspend", summary="Suspend an active partnership (sidecars refuse after the next sync)")
async def suspend(partnership_id: int, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.act_on_partnership(conn, partnership_id, "suspend")


@router.post("/{partnership_id}/resume", summary="Resume a suspended partnership")
async def resume(partnership_id: int, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.act_on_partnership(conn, partnership_id, "resume")


@router.post("/{partnership_id}/end", summary="End a partnership or withdraw a proposal")
async def end(partnership_id: int, state: State) -> dict:
    async with state.pool.connection() as conn:
        return await registry.act_on_partnership(conn, partnership_id, "end")
