"""Reports: open orders, sales by customer over a period, stock valuation, items to reorder.
Read by every role, cached, and dropped from the cache by any write to the tables they read."""

from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from yggdrasil.tenant import errors
from yggdrasil.tenant.adapters import reports
from yggdrasil.tenant.adapters.inventory import record_exists
from yggdrasil.tenant.api.deps import AnyRole, ServicesDep, cached_read
from yggdrasil.tenant.api.fields import MAX_ID

TAGS = frozenset({"reports"})

router = APIRouter(prefix="/reports", tags=["reports"])


class OpenOrder(BaseModel):
    kind: Literal["sales", "purchase"]
    id: int
    state: str
    order_date: date
    party_id: int
    party_code: str
    party_name: str
    currency: str
    reference: str
    line_count: int
    total: Decimal


class CurrencyTotal(BaseModel):
    currency: str
    order_count: int
    amount: Decimal


class KindCurrencyTotal(CurrencyTotal):
    kind: Literal["sales", "purchase"]


class OpenOrdersReport(BaseModel):
    orders: list[OpenOrder]
    totals: list[KindCurrencyTotal]


class CustomerSales(BaseModel):
    customer_id: int
    code: str
    name: str
    order_count: int
    totals: list[CurrencyTotal]


class SalesByCustomerReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: date = Field(alias="from")
    to: date
    customers: list[CustomerSales]
    totals: list[CurrencyTotal]


class ValuationLine(BaseModel):
    item_id: int
    sku: str
    name: str
    unit: str
    warehouse_id: int
    warehouse_code: str
    quantity: Decimal
    cost: Decimal
    value: Decimal


class StockValuationReport(BaseModel):
    warehouse_id: int | None
    lines: list[ValuationLine]
    total_value: Decimal


class ReorderLine(BaseModel):
    item_id: int
    sku: str
    name: str
    unit: str
    reorder_point: Decimal
    on_hand: Decimal
    on_order: Decimal
    shortfall: Decimal


class ReorderReport(BaseModel):
    items: list[ReorderLine]


@router.get("/open-orders", response_model=OpenOrdersReport,
            summary="Sales and purchase orders in draft or confirmed, with party and total")
async def open_orders(
    request: Request, services: ServicesDep, _: AnyRole,
    kind: Annotated[Literal["sales", "purchase"] | None, Query(description="only sales or only purchase orders")] = None,
) -> Response:
    async def load(conn):
        rows = await reports.open_orders(conn, kind)
        totals: dict[tuple[str, str], list] = defaultdict(lambda: [0, Decimal(0)])
        for row in rows:
            totals[row["kind"], row["currency"]][0] += 1
            totals[row["kind"], row["currency"]][1] += row["total"]
        return OpenOrdersReport(
            orders=rows,
            totals=[KindCurrencyTotal(kind=k, currency=c, order_count=n, amount=a)
                    for (k, c), (n, a) in sorted(totals.items())],
        ).model_dump(mode="json")

    return await cached_read(request, services, TAGS, load)


@router.get("/sales-by-customer", response_model=SalesByCustomerReport,
            summary="Confirmed and shipped sales orders dated in a period, per customer and currency")
async def sales_by_customer(
    request: Request, services: ServicesDep, _: AnyRole,
    start: Annotated[date, Query(alias="from", description="first order date included (YYYY-MM-DD)")],
    end: Annotated[date, Query(alias="to", description="last order date included (YYYY-MM-DD)")],
) -> Response:
    if start > end:
        raise errors.InvalidInput("report.invalid_period", start=start.isoformat(), end=end.isoformat())

    async def load(conn):
        rows = await reports.sales_by_customer(conn, start, end)
        customers: dict[int, CustomerSales] = {}
        overall: dict[str, list] = defaultdict(lambda: [0, Decimal(0)])
        for row in rows:  # ordered by customer, then currency
            customer = customers.get(row["customer_id"])
            if customer is None:
                customer = customers[row["customer_id"]] = CustomerSales(
                    customer_id=row["customer_id"], code=row["code"], name=row["name"], order_count=0, totals=[])
            customer.order_count += row["order_count"]
            customer.totals.append(CurrencyTotal(currency=row["currency"], order_count=row["order_count"],
                                                 amount=row["total"]))
            overall[row["currency"]][0] += row["order_count"]
            overall[row["currency"]][1] += row["total"]
        return SalesByCustomerReport(
            from_=start, to=end, customers=list(customers.values()),
            totals=[CurrencyTotal(currency=c, order_count=n, amount=a) for c, (n, a) in sorted(overall.items())],
        ).model_dump(mode="json", by_alias=True)

    return await cached_read(request, services, TAGS, load)


@router.get("/stock-valuation", response_model=StockValuationReport,
            summary="Quantity on hand valued at cost, per item and warehouse, with the grand total")
async def stock_valuation(
    request: Request, services: ServicesDep, _: AnyRole,
    warehouse_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="only this warehouse")] = None,
) -> Response:
    async def load(conn):
        if warehouse_id is not None and not await record_exists(conn, "warehouses", warehouse_id):
            raise errors.ReferenceUnknown(field="warehouse_id", id=warehouse_id)
        lines = await reports.stock_valuation(conn, warehouse_id)
        return StockValuationReport(
            warehouse_id=warehouse_id, lines=lines, total_value=sum((line["value"] for line in lines), Decimal(0)),
        ).model_dump(mode="json")

    return await cached_read(request, services, TAGS, load)


@router.get("/reorder", response_model=ReorderReport,
            summary="Active items whose quantity on hand (all warehouses) is below their reorder point")
async def reorder(request: Request, services: ServicesDep, _: AnyRole) -> Response:
    async def load(conn):
        return ReorderReport(items=await reports.items_below_reorder_point(conn)).model_dump(mode="json")

    return await cached_read(request, services, TAGS, load)
