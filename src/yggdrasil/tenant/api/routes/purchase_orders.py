"""Purchase orders: draft -> confirmed -> received, or cancelled. Receiving puts the goods into
the order's warehouse. Orders that arrived by federation show the seller's tenant and order id
(`b2b_source_tenant`, `b2b_source_order_id`), which no request can set."""

from datetime import date, datetime
from typing import Annotated, ClassVar, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict

from yggdrasil.events.catalogue import event_type
from yggdrasil.tenant import services as use_cases
from yggdrasil.tenant.adapters.orders import PURCHASES, OrderFilter, PgOrderRepository
from yggdrasil.tenant.api.cache import tags_for_tables
from yggdrasil.tenant.api.deps import AnyRole, ServicesDep, cached_read, require, write
from yggdrasil.tenant.api.fields import Currency, Note, PathId, RowId
from yggdrasil.tenant.api.pagination import After, Limit, Page, page_of
from yggdrasil.tenant.api.routes.order_actions import add_order_actions
from yggdrasil.tenant.api.routes.order_models import (
    DateFrom,
    DateTo,
    Lines,
    OrderOut,
    OrderPatch,
    PartyFilter,
    Reference,
    new_lines,
    with_federation,
    written_order_response,
)
from yggdrasil.tenant.auth import Principal
from yggdrasil.tenant.domain.commands import CreatePurchaseOrder
from yggdrasil.tenant.domain.purchasing import STATES

router = APIRouter(tags=["purchase-orders"])

# How the outbox names this kind of order (its events are keyed by it and the order id).
AGGREGATE_TYPE = event_type("purchasing.order.created").aggregate_type
ORDER_TAGS = tags_for_tables("purchasing_orders", "purchasing_order_lines")
RECEIVE_TAGS = ORDER_TAGS | tags_for_tables("stock_levels", "stock_moves")

Buyer = Annotated[Principal, Depends(require("purchasing", action="change purchase orders"))]
Receiver = Annotated[Principal, Depends(require("purchasing", "warehouse", action="receive purchase orders"))]
State = Literal[STATES]  # type: ignore[valid-type]


class PurchaseOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    supplier_id: RowId
    warehouse_id: RowId
    currency: Currency | None = None
    order_date: date | None = None
    expected_date: date | None = None
    reference: Reference = ""
    notes: Note = ""
    lines: Lines


class PurchaseOrderPatch(OrderPatch):
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"expected_date"})

    supplier_id: RowId | None = None
    warehouse_id: RowId | None = None
    currency: Currency | None = None
    order_date: date | None = None
    expected_date: date | None = None
    reference: Reference | None = None
    notes: Note | None = None
    lines: Lines | None = None


class PurchaseOrderOut(OrderOut):
    supplier_id: int
    expected_date: date | None
    received_at: datetime | None
    b2b_source_tenant: str | None
    b2b_source_order_id: str | None


def _out(order) -> PurchaseOrderOut:
    return PurchaseOrderOut.model_validate(order, from_attributes=True)


@router.get("/purchase-orders", response_model=Page[PurchaseOrderOut], summary="List purchase orders")
async def list_purchase_orders(
    request: Request, services: ServicesDep, _: AnyRole,
    limit: Limit = 50, after: After = 0, state: State | None = None,
    supplier_id: PartyFilter = None, date_from: DateFrom = None, date_to: DateTo = None,
) -> Response:
    f = OrderFilter(state=state, party_id=supplier_id, date_from=date_from, date_to=date_to)

    async def load(conn):
        orders = await PgOrderRepository(conn, PURCHASES).list(f, limit=limit + 1, after=after)
        outs = await with_federation(conn, AGGREGATE_TYPE, orders, _out)
        return page_of([o.model_dump(mode="json") for o in outs], limit)

    return await cached_read(request, services, ORDER_TAGS, load)


@router.post("/purchase-orders", response_model=PurchaseOrderOut, status_code=201,
             summary="Create a draft purchase order (unit_price defaults to the item's list price)")
async def create_purchase_order(body: PurchaseOrderIn, services: ServicesDep, principal: Buyer) -> Response:
    cmd = CreatePurchaseOrder(
        supplier_id=body.supplier_id, warehouse_id=body.warehouse_id, currency=body.currency,
        order_date=body.order_date, expected_date=body.expected_date, reference=body.reference,
        notes=body.notes, lines=new_lines(body.lines),
    )
    order = await write(services, principal, ORDER_TAGS, lambda conn: use_cases.create_purchase_order(conn, cmd, outbound=services.outbound))
    return await written_order_response(services, AGGREGATE_TYPE, order, _out, 201)


@router.get("/purchase-orders/{order_id}", response_model=PurchaseOrderOut,
            summary="Get one purchase order with its lines")
async def get_purchase_order(order_id: PathId, request: Request, services: ServicesDep, _: AnyRole) -> Response:
    async def load(conn):
        [out] = await with_federation(conn, AGGREGATE_TYPE, [await PgOrderRepository(conn, PURCHASES).get(order_id)], _out)
        return out

    return await cached_read(request, services, ORDER_TAGS, load)


@router.patch("/purchase-orders/{order_id}", response_model=PurchaseOrderOut,
              summary="Change a draft purchase order (send the version you read; `lines` replaces all lines)")
async def update_purchase_order(
    order_id: PathId, body: PurchaseOrderPatch, services: ServicesDep, principal: Buyer,
) -> Response:
    cmd = body.to_command(order_id)
    order = await write(services, principal, ORDER_TAGS, lambda conn: use_cases.update_purchase_order(conn, cmd, outbound=services.outbound))
    return await written_order_response(services, AGGREGATE_TYPE, order, _out)


add_order_actions(
    router, resource="purchase-orders", kind="purchase_order", response_model=PurchaseOrderOut, to_out=_out,
    aggregate_type=AGGREGATE_TYPE,
    actions=[
        ("confirm", use_cases.confirm_purchase_order, Buyer, ORDER_TAGS, "Confirm a draft purchase order"),
        ("receive", use_cases.receive_purchase_order, Receiver, RECEIVE_TAGS,
         "Receive a confirmed purchase order: puts its lines into stock"),
        ("cancel", use_cases.cancel_purchase_order, Buyer, ORDER_TAGS, "Cancel a draft or confirmed purchase order"),
    ],
)
