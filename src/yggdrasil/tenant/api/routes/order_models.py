"""HTTP models and helpers shared by the sales-order and purchase-order routes."""

from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, ClassVar, Literal
from uuid import UUID

import psycopg
from fastapi import Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from yggdrasil.tenant.adapters.b2b_views import is_federated, order_federation
from yggdrasil.tenant.api.deps import TenantServices
from yggdrasil.tenant.api.fields import MAX_ID, Money, Quantity, RowId, Version, text
from yggdrasil.tenant.domain.commands import NewLine, UpdateOrder
from yggdrasil.tenant.domain.orders import Order
from yggdrasil.tenant.errors import DatabaseUnavailable

MAX_LINES = 500

Reference = text(200)


class OrderLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: RowId
    quantity: Quantity
    unit_price: Money | None = Field(None, description="defaults to the item's list price")


Lines = Annotated[list[OrderLineIn], Field(min_length=1, max_length=MAX_LINES)]


class OrderLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    line_no: int
    item_id: int
    quantity: Decimal
    unit_price: Decimal
    total: Decimal


class FederationStatus(BaseModel):
    """Where an order stands with the partner tenant it federates with.

    `outbound` (we send the order's changes): `state` is the partner's latest answer to our
    latest event (applied, duplicate, held, awaiting_approval, accepted, rejected), or without
    one how far that event got (pending: not yet at the broker; published: sent, not answered),
    or not_sent. `inbound` (a partner's order created this one: a seller's sales order this
    purchase order, a buyer's purchase order this sales order): `state` is awaiting_approval,
    held (a later event waits for a missing one) or applied; the last_* and receipt_* fields
    then describe the events we send back (the goods received; the sales order confirmed,
    shipped or cancelled)."""

    partner: str
    direction: Literal["outbound", "inbound"]
    state: str
    last_event_id: UUID | None = None
    last_event_type: str | None = None
    last_sequence: int | None = None
    outbox_status: str | None = None
    receipt_outcome: str | None = None
    receipt_reason: str | None = None
    partner_state: str | None = Field(
        None, description="the partner's state of its copy of the order, as last applied here (inbound: the "
                          "order it came from; outbound: the order the partner made of ours, once it reports one)")
    inbound_sequence: int | None = Field(None, description="inbound: the partner's last event applied here")
    held_events: int | None = Field(None, description="inbound: later events waiting for a missing one")
    awaiting_approval: bool | None = Field(None, description="inbound: a document waits in /approvals")


class OrderOut(BaseModel):
    """Fields every order has; each kind adds its party, dates and stamps."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    warehouse_id: int
    state: str
    currency: str
    order_date: date
    reference: str
    notes: str
    total: Decimal
    lines: list[OrderLineOut]
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None
    cancelled_at: datetime | None
    version: int
    federation: FederationStatus | None = Field(
        None, description="null unless the customer or supplier is a partner tenant")


class OrderPatch(BaseModel):
    """A partial change: only the fields sent are changed; `lines`, if sent, replaces all lines."""

    model_config = ConfigDict(extra="forbid")
    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    version: Version

    @model_validator(mode="after")
    def _no_null_for_required_fields(self) -> "OrderPatch":
        nulls = sorted(name for name in self.model_fields_set
                       if getattr(self, name) is None and name not in self.NULLABLE)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null; leave a field out to keep its value")
        return self

    def to_command(self, order_id: int) -> UpdateOrder:
        changes = self.model_dump(exclude_unset=True, exclude={"version", "lines"})
        lines = self.lines if "lines" in self.model_fields_set else None  # type: ignore[attr-defined]
        return UpdateOrder(order_id=order_id, version=self.version, changes=changes,
                           lines=new_lines(lines) if lines is not None else None)


class OrderAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Version | None = Field(None, description="refuse (409) if the order moved past this version")


def new_lines(lines: list[OrderLineIn]) -> list[NewLine]:
    return [NewLine(item_id=line.item_id, quantity=line.quantity, unit_price=line.unit_price) for line in lines]


async def with_federation(
    conn: psycopg.AsyncConnection, aggregate_type: str, orders: Sequence[Order], to_out: Callable[[Order], OrderOut],
) -> list[OrderOut]:
    """`orders` as output models, each with its `federation` status (one query for all)."""
    statuses = await order_federation(conn, aggregate_type, orders)
    outs = [to_out(order) for order in orders]
    for out in outs:
        status = statuses.get(out.id)
        if status is not None:
            out.federation = FederationStatus(**status)
    return outs


async def written_order_response(
    services: TenantServices, aggregate_type: str, order: Order, to_out: Callable[[Order], OrderOut],
    status_code: int = 200,
) -> Response:
    """The answer to a write: the order, with its federation status read after the commit
    (the write transaction stays as short as it was). The write is committed by now, so losing
    the database at this point must not turn its answer into an error: the status is then left
    out (null), and the next GET shows it."""
    if is_federated(order):
        try:
            [out] = await services.db.read(lambda conn: with_federation(conn, aggregate_type, [order], to_out))
            return json_response(out, status_code)
        except DatabaseUnavailable:
            pass
    return json_response(to_out(order), status_code)


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    # Serialise once; returning the model would make FastAPI validate it a second time.
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


def action_version(body: OrderAction | None) -> int | None:
    return body.version if body is not None else None


PartyFilter = Annotated[int | None, Query(ge=1, le=MAX_ID)]
DateFrom = Annotated[date | None, Query(alias="from", description="order_date on or after")]
DateTo = Annotated[date | None, Query(alias="to", description="order_date on or before")]

