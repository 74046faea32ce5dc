"""The tenant's use cases, one function each. Every function is one transaction on the
connection it is given: it joins the caller's transaction if one is open (the HTTP layer's
`write()` opens one per request, with the actor set for the audit triggers), else opens its own.

The shape of each order use case: load (locking the order), let the domain decide, write,
then `_record_events` — the one place where the events the domain collected leave it, still
inside the transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import psycopg
from psycopg.pq import TransactionStatus

from yggdrasil.tenant import errors
from yggdrasil.tenant.adapters.orders import PURCHASES, SALES, OrderTables, PgOrderRepository, References
from yggdrasil.tenant.adapters.stock import move_stock
from yggdrasil.tenant.domain.commands import CreatePurchaseOrder, CreateSalesOrder, NewLine, UpdateOrder
from yggdrasil.tenant.domain.events import Event
from yggdrasil.tenant.domain.orders import Order, OrderLine
from yggdrasil.tenant.domain.purchasing import PurchaseOrder
from yggdrasil.tenant.domain.sales import SalesOrder
from yggdrasil.tenant.outbound import OutboundEvents, record_order_events

# -- sales orders -----------------------------------------------------------------------------


async def create_sales_order(
    conn: psycopg.AsyncConnection, cmd: CreateSalesOrder, *, outbound: OutboundEvents | None = None
) -> SalesOrder:
    return await _create_order(
        conn, SALES, party_id=cmd.customer_id, warehouse_id=cmd.warehouse_id, lines=cmd.lines,
        currency=cmd.currency,
        header={"order_date": cmd.order_date, "reference": cmd.reference, "notes": cmd.notes},
        outbound=outbound,
    )


async def update_sales_order(
    conn: psycopg.AsyncConnection, cmd: UpdateOrder, *, outbound: OutboundEvents | None = None
) -> SalesOrder:
    return await _update_order(conn, SALES, cmd, outbound)


async def confirm_sales_order(
    conn: psycopg.AsyncConnection, order_id: int, *, version: int | None = None,
    outbound: OutboundEvents | None = None,
) -> SalesOrder:
    return await _transition(conn, SALES, order_id, version, Order.confirm, outbound=outbound)


async def ship_sales_order(
    conn: psycopg.AsyncConnection, order_id: int, *, version: int | None = None,
    outbound: OutboundEvents | None = None,
) -> SalesOrder:
    """Confirmed -> shipped, taking every line's quantity out of the order's warehouse.
    Any line short of stock raises InsufficientStock and nothing changes."""

    async def take_out_stock(order: SalesOrder) -> None:
        # In item order, so that two shipments of the same items lock their stock rows in the
        # same order and cannot deadlock.
        for line in sorted(order.lines, key=lambda line: line.item_id):
            await move_stock(conn, item_id=line.item_id, warehouse_id=order.warehouse_id,
                             quantity=-line.quantity, reason="sales_shipment",
                             reference_type="sales_order", reference_id=order.id)

    return await _transition(conn, SALES, order_id, version, SalesOrder.ship, effect=take_out_stock, outbound=outbound)


async def cancel_sales_order(
    conn: psycopg.AsyncConnection, order_id: int, *, version: int | None = None,
    outbound: OutboundEvents | None = None,
) -> SalesOrder:
    return await _transition(conn, SALES, order_id, version, Order.cancel, outbound=outbound)


# -- purchase orders --------------------------------------------------------------------------


async def create_purchase_order(
    conn: psycopg.AsyncConnection, cmd: CreatePurchaseOrder, *, outbound: OutboundEvents | None = None
) -> PurchaseOrder:
    return await _create_order(
        conn, PURCHASES, party_id=cmd.supplier_id, warehouse_id=cmd.warehouse_id, lines=cmd.lines,
        currency=cmd.currency,
        header={"order_date": cmd.order_date, "expected_date": cmd.expected_date, "reference": cmd.reference,
                "notes": cmd.notes, "b2b_source_tenant": cmd.b2b_source_tenant,
                "b2b_source_order_id": cmd.b2b_source_order_id},
        outbound=outbound,
    )


async def update_purchase_order(
    conn: psycopg.AsyncConnection, cmd: UpdateOrder, *, outbound: OutboundEvents | None = None
) -> PurchaseOrder:
    return await _update_order(conn, PURCHASES, cmd, outbound)


async def confirm_purchase_order(
    conn: psycopg.AsyncConnection, order_id: int, *, version: int | None = None,
    outbound: OutboundEvents | None = None,
) -> PurchaseOrder:
    return await _transition(conn, PURCHASES, order_id, version, Order.confirm, outbound=outbound)


async def receive_purchase_order(
    conn: psycopg.AsyncConnection, order_id: int, *, version: int | None = None,
    outbound: OutboundEvents | None = None,
) -> PurchaseOrder:
    """Confirmed -> received, putting every line's quantity into the order's warehouse."""

    async def put_into_stock(order: PurchaseOrder) -> None:
        for line in sorted(order.lines, key=lambda line: line.item_id):
            await move_stock(conn, item_id=line.item_id, warehouse_id=order.warehouse_id,
                             quantity=line.quantity, reason="purchase_receipt",
                             reference_type="purchase_order", reference_id=order.id)

    return await _transition(conn, PURCHASES, order_id, version, PurchaseOrder.receive, effect=put_into_stock, outbound=outbound)


async def cancel_purchase_order(
    conn: psycopg.AsyncConnection, order_id: int, *, version: int | None = None,
    outbound: OutboundEvents | None = None,
) -> PurchaseOrder:
    return await _transition(conn, PURCHASES, order_id, version, Order.cancel, outbound=outbound)


# -- shared by both kinds ---------------------------------------------------------------------


@asynccontextmanager
async def _transaction(conn: psycopg.AsyncConnection) -> AsyncIterator[None]:
    if conn.info.transaction_status == TransactionStatus.IDLE:
        async with conn.transaction():
            yield
    else:
        # Already inside the caller's transaction: join it. (A nested conn.transaction()
        # would add a savepoint, two more round trips, for nothing.)
        yield


async def _record_events(conn: psycopg.AsyncConnection, order: Order, outbound: OutboundEvents | None) -> list[Event]:
    """Where an order's collected events leave the domain, in the use case's transaction: for
    an order whose party is a partner tenant, as signed outbox rows (`tenant/outbound.py`)."""
    events = order.pop_events()
    await record_order_events(conn, order, events, outbound)
    return events


async def _create_order(
    conn: psycopg.AsyncConnection, tables: OrderTables, *, party_id: int, warehouse_id: int,
    lines: Sequence[NewLine], currency: str | None, header: dict[str, object],
    outbound: OutboundEvents | None,
) -> Order:
    async with _transaction(conn):
        repo = PgOrderRepository(conn, tables)
        refs = await repo.references(party_id=party_id, warehouse_id=warehouse_id,
                                     item_ids=[line.item_id for line in lines])
        _check_party(tables, party_id, refs)
        _check_warehouse(warehouse_id, refs)
        order = tables.order_type.new(
            lines=_priced_lines(lines, refs), warehouse_id=warehouse_id, currency=currency or refs.party_currency,
            partner_tenant_id=refs.partner_tenant_id, **{tables.party: party_id}, **header,
        )
        await repo.add(order)
        order.record_created()
        await _record_events(conn, order, outbound)
        return order


async def _update_order(
    conn: psycopg.AsyncConnection, tables: OrderTables, cmd: UpdateOrder, outbound: OutboundEvents | None
) -> Order:
    async with _transaction(conn):
        repo = PgOrderRepository(conn, tables)
        order = await repo.get(cmd.order_id, for_update=True)
        order.check_version(cmd.version)
        order.check_editable()
        changes = dict(cmd.changes)
        party_id = changes.get(tables.party)
        warehouse_id = changes.get("warehouse_id")
        refs = None
        if party_id is not None or warehouse_id is not None or cmd.lines:
            refs = await repo.references(party_id=party_id, warehouse_id=warehouse_id,
                                         item_ids=[line.item_id for line in cmd.lines or ()])
            if party_id is not None:
                _check_party(tables, party_id, refs)
                order.partner_tenant_id = refs.partner_tenant_id
            if warehouse_id is not None:
                _check_warehouse(warehouse_id, refs)
        lines = _priced_lines(cmd.lines, refs) if cmd.lines is not None else None  # [] -> no_lines
        if order.edit(lines=lines, **changes):
            await repo.save(order, lines_changed=lines is not None)
        await _record_events(conn, order, outbound)
        return order


async def _transition(
    conn: psycopg.AsyncConnection, tables: OrderTables, order_id: int, version: int | None,
    move: Callable[[Order], None], effect: Callable[[Order], Awaitable[None]] | None = None,
    outbound: OutboundEvents | None = None,
) -> Order:
    async with _transaction(conn):
        repo = PgOrderRepository(conn, tables)
        order = await repo.get(order_id, for_update=True)
        order.check_version(version)
        move(order)
        if effect is not None:
            await effect(order)
        await repo.save(order)
        await _record_events(conn, order, outbound)
        return order


def _check_party(tables: OrderTables, party_id: int, refs: References) -> None:
    if not refs.party_found:
        raise errors.ReferenceUnknown(field=tables.party, id=party_id)
    if not refs.party_active:
        raise errors.ReferenceUnknown("resource.reference_inactive", field=tables.party, id=party_id)


def _check_warehouse(warehouse_id: int, refs: References) -> None:
    if not refs.warehouse_found:
        raise errors.ReferenceUnknown(field="warehouse_id", id=warehouse_id)


def _priced_lines(lines: Sequence[NewLine], refs: References | None) -> list[OrderLine]:
    priced = []
    for line in lines:
        list_price = refs.list_prices.get(line.item_id) if refs else None
        if list_price is None:
            raise errors.ReferenceUnknown(field="item_id", id=line.item_id)
        unit_price = line.unit_price if line.unit_price is not None else list_price
        priced.append(OrderLine(item_id=line.item_id, quantity=line.quantity, unit_price=unit_price))
    return priced
