"""Inbound documents waiting for a person: the partner's policy is `approve`, or a line names a
SKU we have not mapped. Approving creates (or moves) our order as the partner last described
it; rejecting refuses it with a reason. Either way the partner hears the decision as a receipt
(accepted / rejected with the reason), written to the outbox in the same transaction as the
decision and the order (federation/approvals.py). A decision is final: deciding again is 409."""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from yggdrasil.federation.approvals import (
    ApprovalAlreadyDecided,
    ApprovalNotFound,
    approve_inbound_document,
    reject_inbound_document,
)
from yggdrasil.federation.errors import ApplyRefused, PartnerInactive, PartnerUnknown
from yggdrasil.tenant import errors
from yggdrasil.tenant.adapters import b2b_views
from yggdrasil.tenant.adapters.rows import equal_filters
from yggdrasil.tenant.api.cache import tags_for_tables
from yggdrasil.tenant.api.deps import AuthError, ServicesDep, TenantServices, require, write
from yggdrasil.tenant.api.fields import Note, PathId, text
from yggdrasil.tenant.api.pagination import After, Limit, Page, page_of
from yggdrasil.tenant.auth import Principal

router = APIRouter(prefix="/approvals", tags=["approvals"])

Reader = Annotated[Principal, Depends(require("auditor", "sales", "purchasing", action="read approvals"))]
Decider = Annotated[Principal, Depends(require("purchasing", "sales", action="decide approvals"))]

# Who decides a waiting document: the department whose order it would become. A seller's
# sales order becomes our purchase order; a buyer's purchase order becomes our sales order.
DECIDERS: dict[str, frozenset[str]] = {
    "sales_order": frozenset({"admin", "purchasing"}),
    "purchase_order": frozenset({"admin", "sales"}),
}
# A decision creates or moves an order and sends a receipt (an outbox row): both change what
# the orders' `federation` status shows.
DECISION_TAGS = tags_for_tables("purchasing_orders", "crm_sales_orders", "b2b_approvals", "b2b_events")


class ApprovalOut(BaseModel):
    id: int
    source_tenant: str
    event_id: UUID
    event_type: str
    aggregate_type: str
    aggregate_id: str
    sequence: int
    payload: dict[str, Any]
    waiting_reason: str
    waiting_detail: str
    state: str
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    purchase_order_id: int | None = Field(None, description="a seller's document: the purchase order it became")
    sales_order_id: int | None = Field(None, description="a buyer's document: the sales order it became")


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Note | None = None


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: text(2000, min_length=1)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _not_blank(self) -> "RejectIn":
        if not self.reason.strip():
            raise ValueError("reason must say why: the partner is told it")
        return self


@router.get("", response_model=Page[ApprovalOut], summary="Inbound documents waiting for (or given) a decision")
async def list_approvals(
    services: ServicesDep, _: Reader, limit: Limit = 50, after: After = 0,
    state: Literal["pending", "approved", "rejected"] | None = None,
    source_tenant: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9-]{1,62}$")] = None,
    aggregate_id: Annotated[text(100) | None, Query(description="the order's id at its source")] = None,
) -> dict:
    filters = equal_filters(state=state, source_tenant=source_tenant, aggregate_id=aggregate_id)

    async def load(conn):
        return page_of(await b2b_views.list_approvals(conn, filters, limit, after), limit)

    return await services.db.read(load)


@router.get("/{approval_id}", response_model=ApprovalOut, summary="One waiting (or decided) document")
async def get_approval(approval_id: PathId, services: ServicesDep, _: Reader) -> dict:
    return await services.db.read(lambda conn: b2b_views.get_approval(conn, approval_id))


@router.post("/{approval_id}/approve", response_model=ApprovalOut,
             summary="Approve: create (or move) our order as the partner last described it, and answer `accepted`")
async def approve(
    approval_id: PathId, services: ServicesDep, principal: Decider, body: ApproveIn | None = None,
) -> dict:
    reason = body.reason if body is not None else None

    async def decide(conn: psycopg.AsyncConnection) -> None:
        await approve_inbound_document(conn, approval_id, decided_by=principal.actor,
                                       tenant_id=services.settings.tenant_id,
                                       signing_key=services.outbound.signing_key, reason=reason)

    return await _decide(services, principal, approval_id, decide)


@router.post("/{approval_id}/reject", response_model=ApprovalOut,
             summary="Reject: create nothing, and answer `rejected` with the reason")
async def reject(approval_id: PathId, body: RejectIn, services: ServicesDep, principal: Decider) -> dict:
    async def decide(conn: psycopg.AsyncConnection) -> None:
        await reject_inbound_document(conn, approval_id, decided_by=principal.actor, reason=body.reason.strip(),
                                      tenant_id=services.settings.tenant_id,
                                      signing_key=services.outbound.signing_key)

    return await _decide(services, principal, approval_id, decide)


async def _decide(
    services: TenantServices, principal: Principal, approval_id: int,
    decide: Callable[[psycopg.AsyncConnection], Awaitable[None]],
) -> dict:
    async def work(conn):
        row = await b2b_views.get_approval(conn, approval_id)  # 404
        allowed = DECIDERS.get(row["aggregate_type"], frozenset({"admin"}))
        if principal.role not in allowed:
            raise AuthError(403, "approval.forbidden", role=principal.role, id=approval_id,
                            kind=row["aggregate_type"].replace("_", " "), allowed=", ".join(sorted(allowed)))
        if row["state"] != "pending":
            raise errors.Conflict("approval.already_decided", id=approval_id, state=row["state"])
        if services.outbound.signing_key is None:
            # The partner must hear the decision, and a receipt needs our signature.
            raise errors.FederationNotConfigured(partner=row["source_tenant"])
        try:
            await decide(conn)
        except ApprovalNotFound:
            raise errors.NotFound(resource="approval", id=approval_id) from None
        except ApprovalAlreadyDecided as decided:  # decided by someone else since we read it
            raise errors.Conflict("approval.already_decided", id=approval_id, state=decided.state) from None
        except ApplyRefused as refused:
            raise errors.Conflict("approval.blocked", id=approval_id, reason=refused.reason, detail=refused.detail,
                                  partner=row["source_tenant"]) from None
        except (PartnerUnknown, PartnerInactive) as gone:
            raise errors.Conflict("approval.partner_unavailable", id=approval_id, detail=str(gone)) from None
        return await b2b_views.get_approval(conn, approval_id)

    return await write(services, principal, DECISION_TAGS, work)
