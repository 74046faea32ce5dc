"""A seller's `sales.order.*` event becomes, and then moves, our purchase order.

Every such event carries the whole order as it stands after the change (events/catalogue.py),
so applying one means "make our purchase order reflect this": create it if it does not exist
yet, replace its lines while it is a draft, and move its state along our own transitions.

Our purchase order has no `shipped` state: when the seller ships, the goods are on their way
and our order stays `confirmed` until we receive them. `b2b_source_state` records the seller's
state as last applied, and its audit rows show the seller's transitions in order.

Documents that need a person go to `b2b_approvals` instead of creating anything: the partner's
policy is `approve`, a line names a SKU without a mapping in `b2b_partner_items`, or we have no
warehouse to receive into. While one is pending, later events of the same order update it.

The supplier is the active supplier whose `partner_tenant_id` is the source. If there is none,
one is created (code `b2b:<tenant>`), audited like any other write: registering the partner
(`ygg partner add`) is the decision to trade with it, and the supplier row is only the
bookkeeping that decision implies. Quarantining every first order from a new partner instead
would turn a routine setup step into an incident.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from yggdrasil.events.catalogue import OrderPayload
from yggdrasil.events.envelope import Envelope
from yggdrasil.federation.errors import ApplyRefused
from yggdrasil.federation.partners import Partner
from yggdrasil.tenant.domain.purchasing import TRANSITIONS as PURCHASE_TRANSITIONS

log = logging.getLogger(__name__)

SELLER_STATES = ("draft", "confirmed", "shipped", "cancelled")
# The seller's state -> the state our purchase order should be in.
PURCHASE_STATE_FOR = {"draft": "draft", "confirmed": "confirmed", "shipped": "confirmed", "cancelled": "cancelled"}
# What our columns hold: numeric(14,3) quantities, numeric(14,4) prices.
QUANTITY_PLACES, PRICE_PLACES = 3, 4


@dataclass(frozen=True)
class OrderApplied:
    outcome: Literal["applied", "awaiting_approval"]
    purchase_order_id: int | None = None
    approval_id: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class _Line:
    line_no: int
    item_id: int
    quantity: Decimal
    unit_price: Decimal


_LOCK_ORDER = """
    SELECT o.id, o.state, o.currency, o.b2b_source_state,
           (SELECT coalesce(jsonb_agg(jsonb_build_array(l.line_no, l.item_id, l.quantity::text, l.unit_price::text)
                                      ORDER BY l.line_no), '[]'::jsonb)
              FROM purchasing_order_lines l WHERE l.order_id = o.id) AS lines
      FROM purchasing_orders o
     WHERE o.b2b_source_tenant = %(source)s AND o.b2b_source_order_id = %(order_id)s
       FOR UPDATE OF o
"""

_LOOKUP = """
    SELECT (SELECT id FROM b2b_approvals
             WHERE source_tenant = %(source)s AND aggregate_type = %(aggregate_type)s
               AND aggregate_id = %(order_id)s AND state = 'pending'
               FOR UPDATE) AS approval_id,
           (SELECT coalesce(jsonb_object_agg(partner_sku, item_id), '{}'::jsonb)
              FROM b2b_partner_items
             WHERE partner_tenant_id = %(source)s AND partner_sku = ANY(%(skus)s::text[])) AS items,
           (SELECT id FROM suppliers WHERE partner_tenant_id = %(source)s AND active ORDER BY id LIMIT 1) AS supplier_id,
           (SELECT id FROM warehouses WHERE active ORDER BY id LIMIT 1) AS warehouse_id
"""

_CREATE_SUPPLIER = """
    INSERT INTO suppliers (code, name, partner_tenant_id, currency)
    VALUES (%(code)s, %(name)s, %(source)s, %(currency)s)
    ON CONFLICT (code) DO NOTHING
    RETURNING id
"""

_INSERT_LINES = """
    INSERT INTO purchasing_order_lines (order_id, line_no, item_id, quantity, unit_price)
    SELECT {order_id}, l.line_no, l.item_id, l.quantity, l.unit_price
      FROM {source} unnest(%(line_nos)s::int[], %(item_ids)s::bigint[], %(quantities)s::numeric[],
                           %(unit_prices)s::numeric[]) AS l(line_no, item_id, quantity, unit_price)
"""

# Header and lines in one statement. Always created as a draft: later moves are UPDATEs, so
# the audit trail shows each transition, even when several are applied at once.
_CREATE_ORDER = """
    WITH header AS (
        INSERT INTO purchasing_orders (supplier_id, warehouse_id, currency, reference, b2b_source_tenant,
                                       b2b_source_order_id, b2b_source_state)
        VALUES (%(supplier_id)s, %(warehouse_id)s, %(currency)s, %(reference)s, %(source)s, %(order_id)s, 'draft')
        RETURNING id
    ), lines AS (""" + _INSERT_LINES.format(order_id="header.id", source="header,") + """)
    SELECT id FROM header
"""

_DELETE_LINES = "DELETE FROM purchasing_order_lines WHERE order_id = %(order_id)s"
_REPLACE_LINES = _INSERT_LINES.format(order_id="%(order_id)s", source="")

_UPDATE_HEADER = """
    UPDATE purchasing_orders
       SET currency = %(currency)s, state = %(state)s::text, b2b_source_state = %(source_state)s,
           confirmed_at = CASE WHEN %(state)s::text = 'confirmed' THEN coalesce(confirmed_at, now()) ELSE confirmed_at END,
           cancelled_at = CASE WHEN %(state)s::text = 'cancelled' THEN coalesce(cancelled_at, now()) ELSE cancelled_at END,
           updated_at = now(), version = version + 1
     WHERE id = %(id)s
"""

_CREATE_APPROVAL = """
    INSERT INTO b2b_approvals (source_tenant, event_id, event_type, aggregate_type, aggregate_id, sequence,
                               payload, waiting_reason, waiting_detail)
    VALUES (%(source)s, %(event_id)s, %(event_type)s, %(aggregate_type)s, %(order_id)s, %(sequence)s,
            %(payload)s, %(reason)s, %(detail)s)
    RETURNING id, waiting_reason
"""

_UPDATE_APPROVAL = """
    UPDATE b2b_approvals
       SET event_id = %(event_id)s, event_type = %(event_type)s, sequence = %(sequence)s, payload = %(payload)s,
           waiting_reason = coalesce(%(reason)s::text, waiting_reason),
           waiting_detail = CASE WHEN %(reason)s::text IS NULL THEN waiting_detail ELSE %(detail)s END,
           updated_at = now()
     WHERE id = %(approval_id)s
    RETURNING id, waiting_reason
"""


def check_order_payload(envelope: Envelope) -> OrderPayload:
    """The typed payload, refused (ApplyRefused) if we could not record it faithfully."""
    payload = envelope.typed_payload()
    assert isinstance(payload, OrderPayload)
    if payload.order_id != envelope.aggregate_id:
        raise ApplyRefused("order.id_mismatch",
                           f"payload order_id {payload.order_id!r} is not the aggregate {envelope.aggregate_id!r}")
    if payload.state not in SELLER_STATES:
        raise ApplyRefused("order.state_unknown", f"seller state {payload.state!r} is not one of {SELLER_STATES}")
    if not payload.lines:
        raise ApplyRefused("order.no_lines", "an order needs at least one line")
    seen: set[int] = set()
    for line in payload.lines:
        problem = None
        if line.line_no in seen:
            problem = "line_no repeated"
        elif not line.quantity > 0:
            problem = "quantity must be greater than 0"
        elif not line.unit_price >= 0:
            problem = "unit_price must not be negative"
        elif _places(line.quantity) > QUANTITY_PLACES or _places(line.unit_price) > PRICE_PLACES:
            problem = f"more than {QUANTITY_PLACES} decimals in quantity or {PRICE_PLACES} in unit_price"
        if problem:
            raise ApplyRefused("order.line_invalid", f"line {line.line_no}: {problem}")
        seen.add(line.line_no)
    return payload


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


async def apply_sales_order_event(
    conn: psycopg.AsyncConnection,
    envelope: Envelope,
    partner: Partner,
    *,
    approved: bool = False,
) -> OrderApplied:
    """Apply a verified, in-sequence `sales.order.*` event to our purchase orders, in the
    caller's transaction. `approved`: a person decided (approvals.py); the partner's policy
    and any pending approval are passed over.

    Raises ApplyRefused for content we cannot record (with `approved`, also for what would
    otherwise wait for approval: unmapped SKUs, no warehouse); psycopg errors from the database."""
    payload = check_order_payload(envelope)
    source, order_id = envelope.source, envelope.aggregate_id
    key = {"source": source, "order_id": order_id, "aggregate_type": envelope.aggregate_type}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LOCK_ORDER, key)
        order = await cur.fetchone()
        await cur.execute(_LOOKUP, {**key, "skus": sorted({line.sku for line in payload.lines})})
        found = await cur.fetchone()
    assert found is not None

    async def wait_for_approval(reason: str | None, detail: str = "") -> OrderApplied:
        if approved:
            # A person approved, but the document still cannot become an order as it stands.
            raise ApplyRefused(reason or "approval.blocked", detail)
        approval_id, reason = await _record_approval(conn, envelope, found["approval_id"], reason, detail)
        return OrderApplied("awaiting_approval", approval_id=approval_id,
                            detail=f"{reason}: {detail}" if detail else reason)

    # A pending approval holds the whole document: until a person decides, it only follows
    # the seller's latest state (and keeps the reason it waits for).
    if found["approval_id"] is not None and not approved:
        return await wait_for_approval(None)

    item_ids: dict[str, int] = found["items"]
    unmapped = sorted({line.sku for line in payload.lines} - set(item_ids))
    lines = [_Line(line.line_no, item_ids.get(line.sku, 0), line.quantity, line.unit_price)
             for line in sorted(payload.lines, key=lambda line: line.line_no)]

    if order is None:
        if partner.approval_policy == "approve" and not approved:
            return await wait_for_approval("partner.approval_required", f"{source} requires approval of new orders")
        if unmapped:
            return await wait_for_approval("items.unmapped", f"no item mapped for SKUs {', '.join(unmapped)}")
        if found["warehouse_id"] is None:
            return await wait_for_approval("warehouse.missing", "no active warehouse to receive into")
        supplier_id = found["supplier_id"] or await _create_supplier(conn, partner, payload.currency)
        if supplier_id is None:
            return await wait_for_approval("supplier.missing",
                                           f"no supplier is linked to {source} and code b2b:{source} is taken")
        async with conn.cursor() as cur:
            await cur.execute(_CREATE_ORDER, {**key, "supplier_id": supplier_id, "warehouse_id": found["warehouse_id"],
                                              "currency": payload.currency, "reference": order_id,
                                              **_line_arrays(lines)})
            created = await cur.fetchone()
        assert created is not None
        order = {"id": created[0], "state": "draft", "currency": payload.currency, "b2b_source_state": "draft",
                 "lines": [[line.line_no, line.item_id, str(line.quantity), str(line.unit_price)] for line in lines]}

    return await _follow(conn, envelope, payload, order, lines, unmapped, wait_for_approval)


async def _follow(
    conn: psycopg.AsyncConnection,
    envelope: Envelope,
    payload: OrderPayload,
    order: dict[str, Any],
    lines: list[_Line],
    unmapped: list[str],
    wait_for_approval: Callable[..., Awaitable[OrderApplied]],
) -> OrderApplied:
    """Bring an existing purchase order in line with the seller's state."""
    state, currency, notes = order["state"], order["currency"], []
    lines_differ = _stored_lines(order["lines"]) != [(l.line_no, l.item_id, l.quantity, l.unit_price) for l in lines]
    lines_replaced = False
    if (lines_differ or payload.currency != currency) and state == "draft":
        if unmapped:
            return await wait_for_approval("items.unmapped", f"no item mapped for SKUs {', '.join(unmapped)}")
        if lines_differ:
            async with conn.cursor() as cur:
                await cur.execute(_DELETE_LINES, {"order_id": order["id"]})
                await cur.execute(_REPLACE_LINES, {"order_id": order["id"], **_line_arrays(lines)})
            lines_replaced = True
        currency = payload.currency
    elif lines_differ or payload.currency != currency:
        notes.append(f"lines or currency changed while our order is {state}; not applied")

    target = PURCHASE_STATE_FOR[payload.state]
    if target != state:
        if (state, target) in PURCHASE_TRANSITIONS:
            state = target
        else:
            notes.append(f"seller is {payload.state}; our order cannot move from {state} to {target}")
    if notes:
        # Divergence: both sides keep their records; reconciliation reports it.
        log.warning("purchase order %s from %s/%s diverges: %s", order["id"], envelope.source,
                    envelope.aggregate_id, "; ".join(notes))
    # Only a real change writes (and so audits) the header; a repeated state writes nothing.
    if lines_replaced or (state, currency, payload.state) != (order["state"], order["currency"],
                                                              order["b2b_source_state"]):
        await conn.execute(_UPDATE_HEADER, {"id": order["id"], "currency": currency, "state": state,
                                            "source_state": payload.state})
    return OrderApplied("applied", purchase_order_id=order["id"], detail="; ".join(notes))


def _stored_lines(stored: list[list[Any]]) -> list[tuple[int, int, Decimal, Decimal]]:
    return [(int(no), int(item), Decimal(qty), Decimal(price)) for no, item, qty, price in stored]


def _line_arrays(lines: list[_Line]) -> dict[str, list[Any]]:
    return {"line_nos": [l.line_no for l in lines], "item_ids": [l.item_id for l in lines],
            "quantities": [l.quantity for l in lines], "unit_prices": [l.unit_price for l in lines]}


async def _create_supplier(conn: psycopg.AsyncConnection, partner: Partner, currency: str) -> int | None:
    cur = await conn.execute(_CREATE_SUPPLIER, {"code": f"b2b:{partner.tenant_id}"[:50],
                                                "name": (partner.name or partner.tenant_id)[:200],
                                                "source": partner.tenant_id, "currency": currency})
    row = await cur.fetchone()
    return row[0] if row else None


async def _record_approval(
    conn: psycopg.AsyncConnection, envelope: Envelope, approval_id: int | None, reason: str | None, detail: str
) -> tuple[int, str]:
    """Create the pending approval, or point the pending one at this event; `reason` None
    keeps the reason it already waits for. Returns its id and reason."""
    params = {"source": envelope.source, "event_id": envelope.event_id, "event_type": envelope.type,
              "aggregate_type": envelope.aggregate_type, "order_id": envelope.aggregate_id,
              "sequence": envelope.sequence, "payload": Jsonb(envelope.payload), "reason": reason,
              "detail": detail, "approval_id": approval_id}
    cur = await conn.execute(_UPDATE_APPROVAL if approval_id is not None else _CREATE_APPROVAL, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]
