"""Warehouses: where stock is held. Sales orders ship from one, purchase orders receive into one."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, model_validator

from yggdrasil.tenant.adapters.inventory import like_pattern
from yggdrasil.tenant.adapters.rows import Filter, delete_row, get_row, insert_row, list_rows, update_row
from yggdrasil.tenant.api.cache import tags_for_tables
from yggdrasil.tenant.api.deps import AnyRole, ServicesDep, cached_read, require, write
from yggdrasil.tenant.api.fields import Code, Name, PathId, Version, refuse_nulls, text
from yggdrasil.tenant.api.pagination import After, Limit, Page, page_of
from yggdrasil.tenant.auth import Principal

TABLE = "warehouses"
TAGS = tags_for_tables(TABLE)

router = APIRouter(tags=["warehouses"])
Writer = Annotated[Principal, Depends(require("warehouse", action="change warehouses"))]
Address = text(1000)


class WarehouseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Code
    name: Name
    address: Address = ""
    active: bool = True


class WarehousePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Version
    code: Code | None = None
    name: Name | None = None
    address: Address | None = None
    active: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> "WarehousePatch":
        refuse_nulls(self)
        return self


class WarehouseOut(BaseModel):
    id: int
    code: str
    name: str
    address: str
    active: bool
    created_at: datetime
    updated_at: datetime
    version: int


@router.get("/warehouses", response_model=Page[WarehouseOut], summary="List warehouses")
async def list_warehouses(
    request: Request, services: ServicesDep, _: AnyRole,
    limit: Limit = 50, after: After = 0,
    q: Annotated[text(200) | None, Query(description="case-insensitive substring of the name")] = None,
    code: Annotated[text(50) | None, Query(description="exact code")] = None,
    active: bool | None = None,
) -> Response:
    filters = []
    if q:
        filters.append(Filter("name", "ILIKE", like_pattern(q)))
    if code is not None:
        filters.append(Filter("code", "=", code))
    if active is not None:
        filters.append(Filter("active", "=", active))

    async def load(conn):
        rows = await list_rows(conn, TABLE, filters, limit, after)
        return page_of([WarehouseOut(**r).model_dump(mode="json") for r in rows], limit)

    return await cached_read(request, services, TAGS, load)


@router.post("/warehouses", response_model=WarehouseOut, status_code=201, summary="Create a warehouse")
async def create_warehouse(body: WarehouseIn, services: ServicesDep, principal: Writer) -> WarehouseOut:
    row = await write(services, principal, TAGS, lambda conn: insert_row(conn, TABLE, body.model_dump()))
    return WarehouseOut(**row)


@router.get("/warehouses/{warehouse_id}", response_model=WarehouseOut, summary="Get one warehouse")
async def get_warehouse(warehouse_id: PathId, request: Request, services: ServicesDep, _: AnyRole) -> Response:
    async def load(conn):
        return WarehouseOut(**await get_row(conn, TABLE, warehouse_id, "warehouse"))

    return await cached_read(request, services, TAGS, load)


@router.patch("/warehouses/{warehouse_id}", response_model=WarehouseOut,
              summary="Change a warehouse (send the version you read; a stale one gets 409)")
async def update_warehouse(
    warehouse_id: PathId, body: WarehousePatch, services: ServicesDep, principal: Writer,
) -> WarehouseOut:
    values = body.model_dump(exclude_unset=True, exclude={"version"})
    row = await write(services, principal, TAGS,
                      lambda conn: update_row(conn, TABLE, warehouse_id, body.version, values, "warehouse"))
    return WarehouseOut(**row)


@router.delete("/warehouses/{warehouse_id}", status_code=204,
               summary="Delete a warehouse nothing refers to (stock, orders: else 409; deactivate it instead)")
async def delete_warehouse(
    warehouse_id: PathId, services: ServicesDep, principal: Writer,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="refuse if the row moved past this version")] = None,
) -> Response:
    await write(services, principal, TAGS, lambda conn: delete_row(conn, TABLE, warehouse_id, version, "warehouse"))
    return Response(status_code=204)
