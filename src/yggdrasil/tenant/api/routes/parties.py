"""Customers and suppliers: the same shape (a trading party, optionally a partner tenant),
so one router factory serves both."""


from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from yggdrasil.tenant.adapters.rows import Filter, delete_row, get_row, insert_row, list_rows, update_row
from yggdrasil.tenant.api.cache import tags_for_tables
from yggdrasil.tenant.api.deps import AnyRole, ServicesDep, cached_read, require, write
from yggdrasil.tenant.api.fields import Code, Currency, Email, Name, PathId, TenantRef, Version, text
from yggdrasil.tenant.api.pagination import After, Limit, Page, page_of
from yggdrasil.tenant.auth import Principal


class PartyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Code
    name: Name
    email: Email | None = None
    partner_tenant_id: TenantRef | None = None
    currency: Currency = "EUR"
    active: bool = True


class PartyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Version
    code: Code | None = None
    name: Name | None = None
    email: Email | None = None
    partner_tenant_id: TenantRef | None = None
    currency: Currency | None = None
    active: bool | None = None


class PartyOut(BaseModel):
    id: int
    code: str
    name: str
    email: str | None
    partner_tenant_id: str | None
    currency: str
    active: bool
    created_at: datetime
    updated_at: datetime
    version: int


Search = Annotated[text(200) | None, Query(description="case-insensitive substring of the name")]


def make_party_router(resource: str, table: str, writer_role: str, singular: str) -> APIRouter:
    router = APIRouter(tags=[resource])
    tags = tags_for_tables(table)
    Writer = Annotated[Principal, Depends(require(writer_role, action=f"change {resource}"))]

    @router.get(f"/{resource}", response_model=Page[PartyOut], summary=f"List {resource}")
    async def list_parties(
        request: Request, services: ServicesDep, _: AnyRole,
        limit: Limit = 50, after: After = 0, q: Search = None,
        partner: Annotated[bool | None, Query(description="only partner tenants (true) or only others (false)")] = None,
        active: bool | None = None,
    ) -> Response:
        filters = []
        if q:
            filters.append(Filter("name", "ILIKE", f"%{q}%"))
        if partner is not None:
            filters.append(Filter("partner_tenant_id", "IS NOT NULL" if partner else "IS NULL", None))
        if active is not None:
            filters.append(Filter("active", "=", active))

        async def load(conn):
            return page_of([PartyOut(**r).model_dump(mode="json") for r in await list_rows(conn, table, filters, limit, after)], limit)

        return await cached_read(request, services, tags, load)

    @router.post(f"/{resource}", response_model=PartyOut, status_code=201, summary=f"Create a {singular}")
    async def create_party(body: PartyIn, services: ServicesDep, principal: Writer) -> PartyOut:
        row = await write(services, principal, tags, lambda conn: insert_row(conn, table, body.model_dump()))
        return PartyOut(**row)

    @router.get(f"/{resource}/{{party_id}}", response_model=PartyOut, summary=f"Get one {singular}")
    async def get_party(party_id: PathId, request: Request, services: ServicesDep, _: AnyRole) -> Response:
        async def load(conn):
            return PartyOut(**await get_row(conn, table, party_id, singular))

        return await cached_read(request, services, tags, load)

    @router.patch(f"/{resource}/{{party_id}}", response_model=PartyOut,
                  summary=f"Change a {singular} (send the version you read; a stale one gets 409)")
    async def update_party(party_id: PathId, body: PartyPatch, services: ServicesDep, principal: Writer) -> PartyOut:
        values = body.model_dump(exclude_unset=True, exclude={"version"})
        row = await write(services, principal, tags,
                          lambda conn: update_row(conn, table, party_id, body.version, values, singular))
        return PartyOut(**row)

    @router.delete(f"/{resource}/{{party_id}}", status_code=204,
                   summary=f"Delete a {singular} that no order refers to (else 409; deactivate it instead)")
    async def delete_party(
        party_id: PathId, services: ServicesDep, principal: Writer,
        version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="refuse if the row moved past this version")] = None,
    ) -> Response:
        await write(services, principal, tags, lambda conn: delete_row(conn, table, party_id, version, singular))
        return Response(status_code=204)

    return router
