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

from yggdrasil.events.canonical import state_hash
from yggdrasil.events.catalogue import OrderPayload
from yggdrasil.events.envelope import DEFAULT_MAX_BYTES
from yggdrasil.tenant import errors
from yggdrasil.tenant.adapters.outbox import enqueue_event
from yggdrasil.tenant.domain.events import Event
from yggdrasil.tenant.domain.orders import Order
from yggdrasil.tenant.domain.purchasing import PurchaseOrder

# A buyer's purchase order that the seller's sales order created belongs to the seller's
# workflow: the seller drives created/confirmed/shipped/cancelled, the buyer only reports
# receipt of the goods. A purchase order the buyer raised itself is sent to the supplier whole;
# confirming it is the buyer's internal approval step and has no event of its own.
_FROM_SELLER_PURCHASE_EVENTS = frozenset({"purchasing.order.received"})
_OWN_PURCHASE_EVENTS = frozenset({
    "purchasing.order.created", "purchasing.order.updated",
    "purchasing.order.cancelled", "purchasing.order.received",
})


def federated_event_type(order: Order, event: Event) -> str | None:
    """The wire type to send to the order's partner tenant for `event`, or None."""
    if order.partner_tenant_id is None:
        return None
    if isinstance(order, PurchaseOrder):
        allowed = _FROM_SELLER_PURCHASE_EVENTS if order.b2b_source_tenant else _OWN_PURCHASE_EVENTS
        return event.name if event.name in allowed else None
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
    payload = await _order_payload(conn, order)
    digest = state_hash(payload.model_dump(mode="json"))
    for event_type in types:
        await enqueue_event(
            conn, signing_key=outbound.signing_key, source=outbound.source_tenant,
            destination=order.partner_tenant_id, type=event_type, aggregate_id=str(order.id),
            payload=payload, state_hash=digest, max_bytes=outbound.max_event_bytes,
        )
    return len(types)


async def _order_payload(conn: psycopg.AsyncConnection, order: Order) -> OrderPayload:
    """The whole order as the partner should record it, with SKUs (our item ids mean nothing
    to the partner)."""
    cur = await conn.execute("SELECT id, sku, name FROM items WHERE id = ANY(%s)",
                             ([line.item_id for line in order.lines],))
    items = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
    return OrderPayload(
        order_id=str(order.id), currency=order.currency, state=order.state,
        lines=[{"line_no": line.line_no, "sku": items[line.item_id][0], "description": items[line.item_id][1],
                "quantity": line.quantity, "unit_price": line.unit_price} for line in order.lines],
    )
