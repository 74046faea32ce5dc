"""The federation's working tables, read-only: the outbox (what we sent and what each partner
answered), the inbox (every inbound event we recorded), events held for a missing predecessor,
and the quarantine (inbound messages that failed a check, never applied).

Not cached: these are operational views of tables the sidecar changes from another process
all the time, and an operator chasing a stuck event must see them as they are now. While the
database is down they answer 503 like any write."""

import base64
import codecs
import json
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from yggdrasil.events.catalogue import ReceiptOutcome
from yggdrasil.tenant.adapters import b2b_views
from yggdrasil.tenant.adapters.rows import Filter, equal_filters
from yggdrasil.tenant.api.deps import ServicesDep, require, write
from yggdrasil.tenant.api.fields import MAX_ID, text
from yggdrasil.tenant.api.pagination import After, Limit, Page, page_of
from yggdrasil.tenant.auth import Principal

router = APIRouter(prefix="/b2b", tags=["b2b"])

Reader = Annotated[Principal, Depends(require("auditor", "sales", "purchasing", action="read federation records"))]

OutboxStatus = Literal["pending", "published", "acknowledged", "rejected"]
InboxOutcome = Literal["applied", "duplicate", "held", "awaiting_approval", "rejected"]
# A quarantined message is shown up to this many bytes in a list, and in full up to the larger
# cap on its own: oversized messages are among the reasons for quarantine.
LIST_RAW_BYTES = 4 * 1024
ONE_RAW_BYTES = 1024 * 1024

TenantFilter = Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9-]{1,62}$")]
AggregateId = Annotated[text(100) | None, Query(description="the order's id at its source")]
AggregateType = Annotated[text(40) | None, Query(description="sales_order, purchase_order, b2b_event, ...")]
EventType = Annotated[text(100) | None, Query(description="e.g. sales.order.confirmed")]
IncludeEnvelope = Annotated[bool, Query(description="add the signed envelope, decoded, as `envelope`")]


class OutboxEventOut(BaseModel):
    id: int
    event_id: UUID
    event_type: str
    module: str
    source_tenant: str
    dest_tenant: str
    aggregate_type: str
    aggregate_id: str
    sequence: int
    subject: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    published_at: datetime | None
    acknowledged_at: datetime | None
    receipt_outcome: str | None
    receipt_reason: str | None
    replay_requested_at: datetime | None
    replays: int
    envelope: dict[str, Any] | None = None


class InboxEventOut(BaseModel):
    id: int
    source_tenant: str
    event_id: UUID
    event_type: str
    aggregate_type: str
    aggregate_id: str
    sequence: int
    outcome: str
    received_at: datetime
    applied_at: datetime | None


class HeldEventOut(BaseModel):
    id: int
    source_tenant: str
    aggregate_type: str
    aggregate_id: str
    sequence: int
    event_id: UUID
    subject: str
    held_at: datetime
    resync_requested_at: datetime | None
    size: int
    last_applied_sequence: int


class QuarantinedOut(BaseModel):
    id: int
    received_at: datetime
    source_tenant: str | None
    event_id: UUID | None
    subject: str
    reason: str
    detail: str
    size: int
    raw: str
    raw_encoding: Literal["utf-8", "base64"]
    raw_truncated: bool


def _event_out(row: dict[str, Any]) -> dict[str, Any]:
    envelope = row.pop("envelope", None)
    if envelope is not None:
        row["envelope"] = json.loads(bytes(envelope))  # written by us, canonical JSON
    return row


def _quarantined_out(row: dict[str, Any]) -> dict[str, Any]:
    raw = bytes(row.pop("raw"))
    truncated = row["size"] > len(raw)
    try:
        # Not final when truncated: a character cut in two at the cap is not an encoding error.
        shown, encoding = codecs.getincrementaldecoder("utf-8")().decode(raw, final=not truncated), "utf-8"
    except UnicodeDecodeError:
        shown, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return {**row, "raw": shown, "raw_encoding": encoding, "raw_truncated": truncated}


@router.get("/events", response_model=Page[OutboxEventOut],
            summary="The outbox: events we sent (or are about to), their delivery status and the partner's receipt")
async def list_outbox_events(
    services: ServicesDep, _: Reader, limit: Limit = 50, after: After = 0,
    status: OutboxStatus | None = None, dest_tenant: TenantFilter = None, event_type: EventType = None,
    aggregate_type: AggregateType = None, aggregate_id: AggregateId = None,
    receipt_outcome: ReceiptOutcome | None = None, include_envelope: IncludeEnvelope = False,
) -> dict:
    filters = equal_filters(status=status, dest_tenant=dest_tenant, event_type=event_type, aggregate_type=aggregate_type,
                     aggregate_id=aggregate_id, receipt_outcome=receipt_outcome)

    async def load(conn):
        rows = await b2b_views.list_events(conn, filters, limit, after, include_envelope=include_envelope)
        return page_of([_event_out(row) for row in rows], limit)

    return await services.db.read(load)


@router.get("/events/{event_id}", response_model=OutboxEventOut, summary="One outbox event, by event id")
async def get_outbox_event(
    event_id: Annotated[UUID, Path(description="the event id (the envelope's, and the broker's message id)")],
    services: ServicesDep, _: Reader, include_envelope: IncludeEnvelope = False,
) -> dict:
    row = await services.db.read(lambda conn: b2b_views.get_event(conn, event_id, include_envelope=include_envelope))
    return _event_out(row)


@router.get("/inbox", response_model=Page[InboxEventOut],
            summary="Inbound events we recorded, once each, with what became of them")
async def list_inbox_events(
    services: ServicesDep, _: Reader, limit: Limit = 50, after: After = 0,
    source_tenant: TenantFilter = None, outcome: InboxOutcome | None = None, event_type: EventType = None,
    aggregate_type: AggregateType = None, aggregate_id: AggregateId = None,
) -> dict:
    filters = equal_filters(source_tenant=source_tenant, outcome=outcome, event_type=event_type,
                     aggregate_type=aggregate_type, aggregate_id=aggregate_id)

    async def load(conn):
        return page_of(await b2b_views.list_inbox(conn, filters, limit, after), limit)

    return await services.db.read(load)


@router.get("/held", response_model=Page[HeldEventOut],
            summary="Inbound events that arrived ahead of a predecessor and wait for it "
                    "(the missing ones are last_applied_sequence + 1 up to sequence - 1)")
async def list_held_events(
    services: ServicesDep, _: Reader, limit: Limit = 50, after: After = 0,
    source_tenant: TenantFilter = None, aggregate_id: AggregateId = None,
) -> dict:
    filters = equal_filters(source_tenant=source_tenant, aggregate_id=aggregate_id)

    async def load(conn):
        return page_of(await b2b_views.list_held(conn, filters, limit, after), limit)

    return await services.db.read(load)


@router.get("/quarantine", response_model=Page[QuarantinedOut],
            summary=f"Inbound messages refused by a check, with the reason; never applied "
                    f"(raw: text if UTF-8, else base64; first {LIST_RAW_BYTES} bytes)")
async def list_quarantine(
    services: ServicesDep, _: Reader, limit: Limit = 50, after: After = 0,
    source_tenant: TenantFilter = None,
    reason: Annotated[text(100) | None, Query(description="e.g. signature.invalid, partner.unknown")] = None,
) -> dict:
    filters = equal_filters(source_tenant=source_tenant, reason=reason)

    async def load(conn):
        rows = await b2b_views.list_quarantine(conn, filters, limit, after, raw_cap=LIST_RAW_BYTES)
        return page_of([_quarantined_out(row) for row in rows], limit)

    return await services.db.read(load)


@router.get("/quarantine/{quarantine_id}", response_model=QuarantinedOut,
            summary=f"One quarantined message (raw up to {ONE_RAW_BYTES} bytes)")
async def get_quarantined(
    quarantine_id: Annotated[int, Path(ge=1, le=MAX_ID)], services: ServicesDep, _: Reader,
) -> dict:
    row = await services.db.read(lambda conn: b2b_views.get_quarantined(conn, quarantine_id, raw_cap=ONE_RAW_BYTES))
    return _quarantined_out(row)


class DivergenceOut(BaseModel):
    id: int
    source_tenant: str
    aggregate_type: str
    aggregate_id: str
    event_id: UUID
    event_type: str
    sequence: int
    order_table: str
    order_id: int
    expected_hash: str | None
    actual_hash: str
    detail: str
    detected_at: datetime
    resolved_at: datetime | None


Resolver = Annotated[Principal, Depends(require("sales", "purchasing", action="resolve divergences"))]


@router.get("/divergences", response_model=Page[DivergenceOut],
            summary="Orders whose state here differs from the partner's after an event (open ones by default)")
async def list_divergences(
    services: ServicesDep, _: Reader, limit: Limit = 50, after: After = 0,
    source_tenant: TenantFilter = None,
    resolved: Annotated[bool, Query(description="false: open ones; true: resolved ones")] = False,
    order_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="our order's id")] = None,
) -> dict:
    filters = [*equal_filters(source_tenant=source_tenant, order_id=order_id),
               Filter("resolved_at", "IS NOT NULL" if resolved else "IS NULL", None)]

    async def load(conn):
        return page_of(await b2b_views.list_divergences(conn, filters, limit, after), limit)

    return await services.db.read(load)


@router.post("/divergences/{divergence_id}/resolve", response_model=DivergenceOut,
             summary="Mark a divergence resolved once the two sides agree again (409 if already resolved)")
async def resolve_divergence(
    divergence_id: Annotated[int, Path(ge=1, le=MAX_ID)], services: ServicesDep, principal: Resolver,
) -> dict:
    return await write(services, principal, frozenset(),
                       lambda conn: b2b_views.resolve_divergence(conn, divergence_id))
