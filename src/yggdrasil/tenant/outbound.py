"""Which order changes leave for a partner tenant, and how they enter the outbox.

A change of an order whose customer or supplier is a partner tenant becomes a signed
`b2b_events` row in the same transaction (see `adapters/outbox.py`): the order is never saved
without the event that tells the partner, nor the event without the order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

from yggdrasil.events.catalogue import OrderPayload, order_state_hash
from yggdrasil.events.envelope import DEFAULT_MAX_BYTES
from yggdrasil.tenant import errors
from yggdrasil.tenant.adapters.orders import PURCHASES, SALES
from yggdrasil.tenant.adapters.outbox import enqueue_event
from yggdrasil.tenant.domain.events import Event
from yggdrasil.tenant.domain.orders import Order
from yggdrasil.tenant.domain.purchasing import PurchaseOrder

# An order created from the partner's own order belongs to the partner's document, and only
# our steps on it go back. A buyer's purchase order that the seller's sales order created: the
# seller drives created/confirmed/shipped/cancelled, the buyer only reports receipt of the
# goods. A seller's sales order that the buyer's purchase order created: the buyer drives its
# lines and may cancel it, the seller reports confirming, shipping or cancelling it.
# An order raised here is sent to the partner whole; confirming a purchase order is the
# buyer's internal approval step and has no event of its own.
_FROM_SELLER_PURCHASE_EVENTS = frozenset({"purchasing.order.received"})
_OWN_PURCHASE_EVENTS = frozenset({
    "purchasing.order.created", "purchasing.order.updated",
    "purchasing.order.cancelled", "purchasing.order.received",
})
_FROM_BUYER_SALES_EVENTS = frozenset({"sales.order.confirmed", "sales.order.shipped", "sales.order.cancelled"})


def federated_event_type(order: Order, event: Event) -> str | None:
    """The wire type to send to the order's partner tenant for `event`, or None."""
    if order.partner_tenant_id is None:
        return None
    if isinstance(order, PurchaseOrder):
        allowed = _FROM_SELLER_PURCHASE_EVENTS if order.b2b_source_tenant else _OWN_PURCHASE_EVENTS
        return event.name if event.name in allowed else None
    if order.b2b_source_tenant:
        return event.name if event.name in _FROM_BUYER_SALES_EVENTS else None
    return event.name


@dataclass(frozen=True)
class OutboundEvents:
    """What this tenant needs to write events for its partners: who it is and its signing key."""

    source_tenant: str
    signing_key: Ed25519PrivateKey | None
    max_event_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_key_file(cls, source_tenant: str, path: Path | None, max_event_bytes: int) -> "OutboundEvents":
        from yggdrasil.federation.keys import load_signing_key

        return cls(source_tenant, load_signing_key(path) if path else None, max_event_bytes)


async def record_order_events(
    conn: psycopg.AsyncConnection, order: Order, events: list[Event], outbound: OutboundEvents | None
) -> int:
    """Write an outbox row for each of `events` that concerns the order's partner; returns how
    many. Refuses (and so rolls back the change) when the order federates but this server has
    no signing key: an order a partner silently never hears about is worse than an error."""
    types = [t for t in (federated_event_type(order, e) for e in events) if t]
    if not types:
        return 0
    if outbound is None or outbound.signing_key is None:
        raise errors.FederationNotConfigured(partner=order.partner_tenant_id)
    await _check_partnership_covers(conn, order.partner_tenant_id, {t.split(".", 1)[0] for t in types})
    payload, digest = await _order_payload(conn, order)
    for event_type in types:
        await enqueue_event(
            conn, signing_key=outbound.signing_key, source=outbound.source_tenant,
            destination=order.partner_tenant_id, type=event_type, aggregate_id=str(order.id),
            payload=payload, state_hash=digest, max_bytes=outbound.max_event_bytes,
        )
    return len(types)


async def _check_partnership_covers(conn: psycopg.AsyncConnection, partner: str, modules: set[str]) -> None:
    """Refuse an event the partner would refuse (its relay checks the same list) rather than
    send it to be quarantined there. A partner with no registry row is not ours to judge."""
    cur = await conn.execute("SELECT modules FROM b2b_partners WHERE tenant_id = %s", (partner,))
    row = await cur.fetchone()
    missing = sorted(modules - set(row[0])) if row else []
    if missing:
        raise errors.ModuleNotAgreed(partner=partner, modules=", ".join(row[0]), module=", ".join(missing))


async def _order_payload(conn: psycopg.AsyncConnection, order: Order) -> tuple[OrderPayload, str]:
    """The whole order as the partner should record it, with SKUs (our item ids mean nothing
    to the partner), and its state hash (`events.catalogue.order_state_hash`: lines named by
    the SKUs of the tenant that raised the order, so for an order from a partner, the
    partner's SKUs kept with its lines)."""
    cur = await conn.execute("SELECT id, sku, name FROM items WHERE id = ANY(%s)",
                             ([line.item_id for line in order.lines],))
    items = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
    source_skus: dict[int, str] = {}
    if order.b2b_source_tenant:
        lines_table = (PURCHASES if isinstance(order, PurchaseOrder) else SALES).lines
        cur = await conn.execute(
            sql.SQL("SELECT line_no, b2b_source_sku FROM {} WHERE order_id = %s AND b2b_source_sku IS NOT NULL")
            .format(sql.Identifier(lines_table)), (order.id,))
        source_skus = dict(await cur.fetchall())
    payload = OrderPayload(
        order_id=str(order.id), currency=order.currency, state=order.state,
        counterpart_order_id=order.b2b_source_order_id,
        lines=[{"line_no": line.line_no, "sku": items[line.item_id][0], "description": items[line.item_id][1],
                "quantity": line.quantity, "unit_price": line.unit_price} for line in order.lines],
    )
    digest = order_state_hash(
        order_id=payload.order_id, currency=order.currency, state=order.state,
        lines=[(line.line_no, source_skus.get(line.line_no) or items[line.item_id][0], line.quantity,
                line.unit_price) for line in order.lines],
    )
    return payload, digest
