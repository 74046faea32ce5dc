"""Sales orders: draft -> confirmed -> shipped, or cancelled. Shipping takes the goods out of the
order's warehouse and is refused (409) when any line is short. Orders that arrived by federation
(a buyer's purchase order) show the buyer's tenant and order id (`b2b_source_tenant`,
`b2b_source_order_id`), which no request can set."""

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict

from yggdrasil.events.catalogue import event_type
from yggdrasil.tenant import services as use_cases
from yggdrasil.tenant.adapters.orders import SALES, OrderFilter, PgOrderRepository
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
from yggdrasil.tenant.domain.commands import CreateSalesOrder
from yggdrasil.tenant.domain.sales import STATES

router = APIRouter(tags=["sales-orders"])

# How the outbox names this kind of order (its events are keyed by it and the order id).
AGGREGATE_TYPE = event_type("sales.order.created").aggregate_type
ORDER_TAGS = tags_for_tables("crm_sales_orders", "crm_sales_order_lines")
SHIP_TAGS = ORDER_TAGS | tags_for_tables("stock_levels", "stock_moves")

Seller = Annotated[Principal, Depends(require("sales", action="change sales orders"))]
Shipper = Annotated[Principal, Depends(require("sales", "warehouse", action="ship sales orders"))]
State = Literal[STATES]  # type: ignore[valid-type]


class SalesOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: RowId
    warehouse_id: RowId
    currency: Currency | None = None
    order_date: date | None = None
    reference: Reference = ""
    notes: Note = ""
    lines: Lines


class SalesOrderPatch(OrderPatch):
    customer_id: RowId | None = None
    warehouse_id: RowId | None = None
    currency: Currency | None = None
    order_date: date | None = None
    reference: Reference | None = None
    notes: Note | None = None
    lines: Lines | None = None


class SalesOrderOut(OrderOut):
    customer_id: int
    shipped_at: datetime | None
    b2b_source_tenant: str | None
    b2b_source_order_id: str | None


def _out(order) -> SalesOrderOut:
    return SalesOrderOut.model_validate(order, from_attributes=True)


@router.get("/sales-orders", response_model=Page[SalesOrderOut], summary="List sales orders")
async def list_sales_orders(
    request: Request, services: ServicesDep, _: AnyRole,
    limit: Limit = 50, after: After = 0, state: State | None = None,
    customer_id: PartyFilter = None, date_from: DateFrom = None, date_to: DateTo = None,
) -> Response:
    f = OrderFilter(state=state, party_id=customer_id, date_from=date_from, date_to=date_to)

    async def load(conn):
        orders = await PgOrderRepository(conn, SALES).list(f, limit=limit + 1, after=after)
        outs = await with_federation(conn, AGGREGATE_TYPE, orders, _out)
        return page_of([o.model_dump(mode="json") for o in outs], limit)

    return await cached_read(request, services, ORDER_TAGS, load)


@router.post("/sales-orders", response_model=SalesOrderOut, status_code=201,
             summary="Create a draft sales order (unit_price defaults to the item's list price)")
async def create_sales_order(body: SalesOrderIn, services: ServicesDep, principal: Seller) -> Response:
    cmd = CreateSalesOrder(
        customer_id=body.customer_id, warehouse_id=body.warehouse_id, currency=body.currency,
        order_date=body.order_date, reference=body.reference, notes=body.notes, lines=new_lines(body.lines),
    )
    order = await write(services, principal, ORDER_TAGS, lambda conn: use_cases.create_sales_order(conn, cmd, outbound=services.outbound))
    return await written_order_response(services, AGGREGATE_TYPE, order, _out, 201)


@router.get("/sales-orders/{order_id}", response_model=SalesOrderOut, summary="Get one sales order with its lines")
async def get_sales_order(order_id: PathId, request: Request, services: ServicesDep, _: AnyRole) -> Response:
    async def load(conn):
        [out] = await with_federation(conn, AGGREGATE_TYPE, [await PgOrderRepository(conn, SALES).get(order_id)], _out)
        return out

    return await cached_read(request, services, ORDER_TAGS, load)


@router.patch("/sales-orders/{order_id}", response_model=SalesOrderOut,
              summary="Change a draft sales order (send the version you read; `lines` replaces all lines)")
async def update_sales_order(order_id: PathId, body: SalesOrderPatch, services: ServicesDep, principal: Seller) -> Response:
    cmd = body.to_command(order_id)
    order = await write(services, principal, ORDER_TAGS, lambda conn: use_cases.update_sales_order(conn, cmd, outbound=services.outbound))
    return await written_order_response(services, AGGREGATE_TYPE, order, _out)


add_order_actions(
    router, resource="sales-orders", kind="sales_order", response_model=SalesOrderOut, to_out=_out,
    aggregate_type=AGGREGATE_TYPE,
    actions=[
        ("confirm", use_cases.confirm_sales_order, Seller, ORDER_TAGS, "Confirm a draft sales order"),
        ("ship", use_cases.ship_sales_order, Shipper, SHIP_TAGS,
         "Ship a confirmed sales order: takes its lines out of stock (409 if any is short)"),
        ("cancel", use_cases.cancel_sales_order, Seller, ORDER_TAGS, "Cancel a draft or confirmed sales order"),
    ],
)
