"""Items: what is bought, stocked and sold. Quantities on hand live in stock levels (`stock.py`);
an item carries its prices, unit and reorder point."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, model_validator

from yggdrasil.tenant.adapters.inventory import list_items
from yggdrasil.tenant.adapters.rows import delete_row, get_row, insert_row, update_row
from yggdrasil.tenant.api.cache import tags_for_tables
from yggdrasil.tenant.api.deps import AnyRole, ServicesDep, cached_read, require, write
from yggdrasil.tenant.api.fields import Money, Name, NonNegativeQuantity, PathId, Sku, Unit, Version, refuse_nulls, text
from yggdrasil.tenant.api.pagination import After, Limit, Page, page_of
from yggdrasil.tenant.auth import Principal

TABLE = "items"
TAGS = tags_for_tables(TABLE)

router = APIRouter(tags=["items"])
Writer = Annotated[Principal, Depends(require("warehouse", action="change items"))]


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: Sku
    name: Name
    unit: Unit = "pcs"
    list_price: Money = Decimal(0)
    cost: Money = Decimal(0)
    reorder_point: NonNegativeQuantity = Decimal(0)
    active: bool = True


class ItemPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Version
    sku: Sku | None = None
    name: Name | None = None
    unit: Unit | None = None
    list_price: Money | None = None
    cost: Money | None = None
    reorder_point: NonNegativeQuantity | None = None
    active: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> "ItemPatch":
        refuse_nulls(self)
        return self


class ItemOut(BaseModel):
    id: int
    sku: str
    name: str
    unit: str
    list_price: Decimal
    cost: Decimal
    reorder_point: Decimal
    active: bool
    created_at: datetime
    updated_at: datetime
    version: int


@router.get("/items", response_model=Page[ItemOut], summary="List items")
async def list_items_route(
    request: Request, services: ServicesDep, _: AnyRole,
    limit: Limit = 50, after: After = 0,
    q: Annotated[text(200) | None, Query(description="case-insensitive substring of the name")] = None,
    sku: Annotated[text(64) | None, Query(description="exact SKU")] = None,
    active: bool | None = None,
    below_reorder: Annotated[bool | None, Query(
        description="only items whose quantity on hand (all warehouses) is below their reorder point (true), "
                    "or only the others (false)")] = None,
) -> Response:
    async def load(conn):
        rows = await list_items(conn, limit=limit, after=after, q=q, sku=sku, active=active,
                                below_reorder=below_reorder)
        return page_of([ItemOut(**r).model_dump(mode="json") for r in rows], limit)

    return await cached_read(request, services, TAGS, load)


@router.post("/items", response_model=ItemOut, status_code=201, summary="Create an item")
async def create_item(body: ItemIn, services: ServicesDep, principal: Writer) -> ItemOut:
    row = await write(services, principal, TAGS, lambda conn: insert_row(conn, TABLE, body.model_dump()))
    return ItemOut(**row)


@router.get("/items/{item_id}", response_model=ItemOut, summary="Get one item")
async def get_item(item_id: PathId, request: Request, services: ServicesDep, _: AnyRole) -> Response:
    async def load(conn):
        return ItemOut(**await get_row(conn, TABLE, item_id, "item"))

    return await cached_read(request, services, TAGS, load)


@router.patch("/items/{item_id}", response_model=ItemOut,
              summary="Change an item (send the version you read; a stale one gets 409)")
async def update_item(item_id: PathId, body: ItemPatch, services: ServicesDep, principal: Writer) -> ItemOut:
    values = body.model_dump(exclude_unset=True, exclude={"version"})
    row = await write(services, principal, TAGS,
                      lambda conn: update_row(conn, TABLE, item_id, body.version, values, "item"))
    return ItemOut(**row)


@router.delete("/items/{item_id}", status_code=204,
               summary="Delete an item nothing refers to (stock, orders: else 409; deactivate it instead)")
async def delete_item(
    item_id: PathId, services: ServicesDep, principal: Writer,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="refuse if the row moved past this version")] = None,
) -> Response:
    await write(services, principal, TAGS, lambda conn: delete_row(conn, TABLE, item_id, version, "item"))
    return Response(status_code=204)
