"""Stock levels and moves, and manual adjustments (counts, write-offs, opening stock).
Shipping and receiving move stock through the order routes; every change leaves a move."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict

from yggdrasil.tenant import errors
from yggdrasil.tenant.adapters.inventory import list_stock_levels, list_stock_moves, record_exists
from yggdrasil.tenant.adapters.stock import move_stock
from yggdrasil.tenant.api.cache import tags_for_tables
from yggdrasil.tenant.api.deps import AnyRole, ServicesDep, cached_read, require, write
from yggdrasil.tenant.api.fields import MAX_ID, Note, RowId, SignedQuantity, text
from yggdrasil.tenant.api.pagination import After, Limit, Page, page_of
from yggdrasil.tenant.auth import Principal

TAGS = tags_for_tables("stock_levels", "stock_moves")

router = APIRouter(tags=["stock"])
Writer = Annotated[Principal, Depends(require("warehouse", action="adjust stock"))]
IdFilter = Annotated[int | None, Query(ge=1, le=MAX_ID)]
Reason = Literal["sales_shipment", "purchase_receipt", "adjustment"]


def _not_zero(value: Decimal) -> Decimal:
    if value == 0:
        raise ValueError("must not be zero: positive adds stock, negative takes it out")
    return value


class AdjustmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: RowId
    warehouse_id: RowId
    quantity: Annotated[SignedQuantity, AfterValidator(_not_zero)]
    note: Note = ""


class AdjustmentOut(BaseModel):
    item_id: int
    warehouse_id: int
    quantity: Decimal  # on hand after the adjustment
    adjusted_by: Decimal


class StockLevelOut(BaseModel):
    id: int
    item_id: int
    sku: str
    item_name: str
    unit: str
    warehouse_id: int
    warehouse_code: str
    quantity: Decimal
    updated_at: datetime


class StockMoveOut(BaseModel):
    id: int
    item_id: int
    sku: str
    warehouse_id: int
    warehouse_code: str
    quantity: Decimal
    reason: str
    reference_type: str | None
    reference_id: int | None
    note: str
    created_at: datetime


@router.get("/stock", response_model=Page[StockLevelOut], summary="Stock levels per item and warehouse")
async def list_stock(
    request: Request, services: ServicesDep, _: AnyRole,
    limit: Limit = 50, after: After = 0, item_id: IdFilter = None, warehouse_id: IdFilter = None,
) -> Response:
    async def load(conn):
        rows = await list_stock_levels(conn, limit=limit, after=after, item_id=item_id, warehouse_id=warehouse_id)
        return page_of([StockLevelOut(**r).model_dump(mode="json") for r in rows], limit)

    return await cached_read(request, services, TAGS, load)


@router.get("/stock/moves", response_model=Page[StockMoveOut], summary="Stock moves, oldest first")
async def list_moves(
    request: Request, services: ServicesDep, _: AnyRole,
    limit: Limit = 50, after: After = 0, item_id: IdFilter = None, warehouse_id: IdFilter = None,
    reason: Reason | None = None,
    reference_type: Annotated[text(50) | None, Query(description="e.g. sales_order, purchase_order")] = None,
    reference_id: IdFilter = None,
) -> Response:
    async def load(conn):
        rows = await list_stock_moves(conn, limit=limit, after=after, item_id=item_id, warehouse_id=warehouse_id,
                                      reason=reason, reference_type=reference_type, reference_id=reference_id)
        return page_of([StockMoveOut(**r).model_dump(mode="json") for r in rows], limit)

    return await cached_read(request, services, TAGS, load)


@router.post("/stock/adjustments", response_model=AdjustmentOut, status_code=201,
             summary="Adjust the quantity on hand (positive adds, negative takes out; a shortage gets 409)")
async def adjust_stock(body: AdjustmentIn, services: ServicesDep, principal: Writer) -> AdjustmentOut:
    async def work(conn) -> Decimal:
        # Checked first so the answer names the field; the foreign keys would only say "violates".
        if not await record_exists(conn, "items", body.item_id):
            raise errors.ReferenceUnknown(field="item_id", id=body.item_id)
        if not await record_exists(conn, "warehouses", body.warehouse_id):
            raise errors.ReferenceUnknown(field="warehouse_id", id=body.warehouse_id)
        return await move_stock(conn, item_id=body.item_id, warehouse_id=body.warehouse_id,
                                quantity=body.quantity, reason="adjustment", note=body.note)

    on_hand = await write(services, principal, TAGS, work)
    return AdjustmentOut(item_id=body.item_id, warehouse_id=body.warehouse_id, quantity=on_hand,
                         adjusted_by=body.quantity)
