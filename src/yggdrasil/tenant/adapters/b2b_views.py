"""Reads of the federation tables (migrations 0004, 0005, 0009) for the HTTP API: the outbox, the
inbox, held events, quarantine, approvals, partners and their item mappings, and where each
federated order stands with its partner.

The sidecar writes these tables from another process; nothing here writes them. Lists page by
keyset on `id` through `rows.list_rows`, with explicit columns where a table holds bulky bytes
(envelopes, raw messages): a page never drags them along unless asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from yggdrasil.tenant.adapters.rows import Filter, list_rows
from yggdrasil.tenant.domain.orders import Order
from yggdrasil.tenant.errors import Conflict, NotFound

# -- the outbox -------------------------------------------------------------------------------

_EVENT_COLUMNS = """
    id, event_id, event_type, module, source_tenant, dest_tenant, aggregate_type, aggregate_id, sequence,
    subject, status, attempts, last_error, created_at, published_at, acknowledged_at, receipt_outcome,
    receipt_reason, replay_requested_at, replays"""


def _event_select(include_envelope: bool) -> sql.Composable:
    return sql.SQL(_EVENT_COLUMNS + (", envelope" if include_envelope else ""))


async def list_events(
    conn: psycopg.AsyncConnection, filters: Sequence[Filter], limit: int, after: int, *, include_envelope: bool,
) -> list[dict]:
    return await list_rows(conn, "b2b_events", filters, limit, after, select=_event_select(include_envelope))


async def get_event(conn: psycopg.AsyncConnection, event_id: UUID, *, include_envelope: bool) -> dict:
    """Raises NotFound."""
    query = sql.SQL("SELECT {} FROM b2b_events WHERE event_id = %(event_id)s").format(_event_select(include_envelope))
    return await _one(conn, query, {"event_id": event_id}, "outbox event", event_id)


# -- inbound: inbox, held, quarantine ---------------------------------------------------------

async def list_inbox(conn: psycopg.AsyncConnection, filters: Sequence[Filter], limit: int, after: int) -> list[dict]:
    return await list_rows(conn, "b2b_inbox", filters, limit, after)


_HELD_SELECT = sql.SQL("""
    id, source_tenant, aggregate_type, aggregate_id, sequence, event_id, subject, held_at, resync_requested_at,
    octet_length(raw) AS size,
    coalesce((SELECT s.last_sequence FROM b2b_inbound_sequences s
               WHERE s.source_tenant = b2b_held_events.source_tenant
                 AND s.aggregate_type = b2b_held_events.aggregate_type
                 AND s.aggregate_id = b2b_held_events.aggregate_id), 0) AS last_applied_sequence""")


async def list_held(conn: psycopg.AsyncConnection, filters: Sequence[Filter], limit: int, after: int) -> list[dict]:
    return await list_rows(conn, "b2b_held_events", filters, limit, after, select=_HELD_SELECT)


def _quarantine_select(raw_cap: int) -> sql.Composable:
    # Only the first `raw_cap` bytes leave the database: an oversized message is quarantined
    # precisely because it is large.
    return sql.SQL("""
        id, received_at, source_tenant, event_id, subject, reason, detail,
        octet_length(raw) AS size, substring(raw FROM 1 FOR {cap}) AS raw""").format(cap=sql.Literal(raw_cap))


async def list_quarantine(
    conn: psycopg.AsyncConnection, filters: Sequence[Filter], limit: int, after: int, *, raw_cap: int,
) -> list[dict]:
    return await list_rows(conn, "b2b_quarantine", filters, limit, after, select=_quarantine_select(raw_cap))


async def get_quarantined(conn: psycopg.AsyncConnection, quarantine_id: int, *, raw_cap: int) -> dict:
    """Raises NotFound."""
    query = sql.SQL("SELECT {} FROM b2b_quarantine WHERE id = %(id)s").format(_quarantine_select(raw_cap))
    return await _one(conn, query, {"id": quarantine_id}, "quarantined message", quarantine_id)


# -- divergences ------------------------------------------------------------------------------

async def list_divergences(
    conn: psycopg.AsyncConnection, filters: Sequence[Filter], limit: int, after: int,
) -> list[dict]:
    return await list_rows(conn, "b2b_divergences", filters, limit, after)


async def resolve_divergence(conn: psycopg.AsyncConnection, divergence_id: int) -> dict:
    """Mark it resolved (the audit trail records by whom). Raises NotFound, or Conflict when it
    was already resolved: resolving twice would hide who looked into it first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "UPDATE b2b_divergences SET resolved_at = now() WHERE id = %(id)s AND resolved_at IS NULL RETURNING *",
            {"id": divergence_id})
        row = await cur.fetchone()
    if row is None:
        current = await _one(conn, sql.SQL("SELECT * FROM b2b_divergences WHERE id = %(id)s"),
                             {"id": divergence_id}, "divergence", divergence_id)
        raise Conflict(detail=f"divergence {divergence_id} was already resolved at {current['resolved_at']}")
    return row


# -- approvals --------------------------------------------------------------------------------

# The order a decided document created or moved (a seller's sales order is one purchase order
# here, a buyer's purchase order one sales order), found by its linkage columns' unique index.
_APPROVAL_SELECT = sql.SQL("""
    *, (SELECT p.id FROM purchasing_orders p
         WHERE b2b_approvals.aggregate_type = 'sales_order'
           AND p.b2b_source_tenant = b2b_approvals.source_tenant
           AND p.b2b_source_order_id = b2b_approvals.aggregate_id) AS purchase_order_id,
       (SELECT o.id FROM crm_sales_orders o
         WHERE b2b_approvals.aggregate_type = 'purchase_order'
           AND o.b2b_source_tenant = b2b_approvals.source_tenant
           AND o.b2b_source_order_id = b2b_approvals.aggregate_id) AS sales_order_id""")


async def list_approvals(conn: psycopg.AsyncConnection, filters: Sequence[Filter], limit: int, after: int) -> list[dict]:
    return await list_rows(conn, "b2b_approvals", filters, limit, after, select=_APPROVAL_SELECT)


async def get_approval(conn: psycopg.AsyncConnection, approval_id: int) -> dict:
    """Raises NotFound."""
    query = sql.SQL("SELECT {} FROM b2b_approvals WHERE id = %(id)s").format(_APPROVAL_SELECT)
    return await _one(conn, query, {"id": approval_id}, "approval", approval_id)


# -- partners ---------------------------------------------------------------------------------

async def list_partners(conn: psycopg.AsyncConnection, filters: Sequence[Filter], limit: int, after: int) -> list[dict]:
    return await list_rows(conn, "b2b_partners", filters, limit, after)


async def get_partner(conn: psycopg.AsyncConnection, tenant_id: str, *, for_update: bool = False) -> dict:
    """Raises NotFound."""
    query = "SELECT * FROM b2b_partners WHERE tenant_id = %(tenant_id)s" + (" FOR UPDATE" if for_update else "")
    return await _one(conn, query, {"tenant_id": tenant_id}, "partner", tenant_id)


_PARTNER_ITEM_SELECT = sql.SQL("""
    *, (SELECT i.sku FROM items i WHERE i.id = b2b_partner_items.item_id) AS item_sku""")


async def list_partner_items(
    conn: psycopg.AsyncConnection, filters: Sequence[Filter], limit: int, after: int,
) -> list[dict]:
    return await list_rows(conn, "b2b_partner_items", filters, limit, after, select=_PARTNER_ITEM_SELECT)


async def get_partner_item(conn: psycopg.AsyncConnection, tenant_id: str, partner_sku: str) -> dict:
    """Raises NotFound."""
    query = sql.SQL("SELECT {} FROM b2b_partner_items WHERE partner_tenant_id = %(tenant_id)s "
                    "AND partner_sku = %(sku)s").format(_PARTNER_ITEM_SELECT)
    return await _one(conn, query, {"tenant_id": tenant_id, "sku": partner_sku}, "partner item", partner_sku)


async def delete_partner_item(conn: psycopg.AsyncConnection, tenant_id: str, mapping_id: int) -> None:
    """Raises NotFound if the partner has no such mapping."""
    cur = await conn.execute(
        "DELETE FROM b2b_partner_items WHERE id = %(id)s AND partner_tenant_id = %(tenant_id)s RETURNING id",
        {"id": mapping_id, "tenant_id": tenant_id},
    )
    if await cur.fetchone() is None:
        raise NotFound(resource=f"item mapping of partner {tenant_id}", id=mapping_id)


async def item_sku(conn: psycopg.AsyncConnection, item_id: int) -> str | None:
    cur = await conn.execute("SELECT sku FROM items WHERE id = %s", (item_id,))
    row = await cur.fetchone()
    return row[0] if row else None


# -- where a federated order stands -----------------------------------------------------------

# Per order of a page, in one statement: the latest event we sent for it (our outbox row, with
# the partner's receipt); the partner's state of its copy as we last applied it (from a seller
# or buyer whose order this one came from, or from the partner that keeps an order we raised);
# and for an order that came from a partner, what we applied of its events: the last sequence,
# events held for a gap, a pending approval. Each lookup is an index probe
# (b2b_events_aggregate_idx, the primary keys of the order, sequence and held tables, the
# partial index of pending approvals).
_ORDER_FEDERATION = """
    SELECT o.id, e.dest_tenant, e.event_id AS last_event_id, e.event_type AS last_event_type,
           e.sequence AS last_sequence, e.status AS outbox_status, e.receipt_outcome, e.receipt_reason,
           s.last_sequence AS inbound_sequence, coalesce(x.b2b_source_state, x.b2b_counterpart_state) AS partner_state,
           CASE WHEN o.source IS NOT NULL THEN
                (SELECT count(*) FROM b2b_held_events h
                  WHERE h.source_tenant = o.source AND h.aggregate_type = %(partner_aggregate_type)s
                    AND h.aggregate_id = o.source_order) END AS held_events,
           CASE WHEN o.source IS NOT NULL THEN
                EXISTS (SELECT 1 FROM b2b_approvals a
                         WHERE a.source_tenant = o.source AND a.aggregate_type = %(partner_aggregate_type)s
                           AND a.aggregate_id = o.source_order AND a.state = 'pending') END AS awaiting_approval
      FROM unnest(%(ids)b::bigint[], %(sources)b::text[], %(source_orders)b::text[]) AS o(id, source, source_order)
      LEFT JOIN LATERAL (
           SELECT dest_tenant, event_id, event_type, sequence, status, receipt_outcome, receipt_reason
             FROM b2b_events
            WHERE aggregate_type = %(aggregate_type)s AND aggregate_id = o.id::text
            ORDER BY id DESC LIMIT 1) AS e ON true
      LEFT JOIN b2b_inbound_sequences s
             ON s.source_tenant = o.source AND s.aggregate_type = %(partner_aggregate_type)s
            AND s.aggregate_id = o.source_order
      LEFT JOIN {orders} x ON x.id = o.id
"""
# Our kind of order -> its table, and the kind the partner keeps it as.
_ORDER_TABLES = {"sales_order": "crm_sales_orders", "purchase_order": "purchasing_orders"}
_PARTNER_AGGREGATE_TYPES = {"sales_order": "purchase_order", "purchase_order": "sales_order"}


def is_federated(order: Order) -> bool:
    return order.partner_tenant_id is not None or order.b2b_source_tenant is not None


async def order_federation(conn: psycopg.AsyncConnection, aggregate_type: str, orders: Sequence[Order]) -> dict[int, dict]:
    """Where each federated order of `orders` stands with its partner, by order id; orders with
    no partner are left out. One statement for all of them, none if no order federates.

    `aggregate_type` is the outbox's name for the kind (`sales_order`, `purchase_order`): the
    outbox keys an order's events by it and the order's id as text (tenant/outbound.py)."""
    federated = [o for o in orders if is_federated(o)]
    if not federated:
        return {}
    params = {"ids": [o.id for o in federated], "sources": [o.b2b_source_tenant for o in federated],
              "source_orders": [o.b2b_source_order_id for o in federated], "aggregate_type": aggregate_type,
              "partner_aggregate_type": _PARTNER_AGGREGATE_TYPES[aggregate_type]}
    query = sql.SQL(_ORDER_FEDERATION).format(orders=sql.Identifier(_ORDER_TABLES[aggregate_type]))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = {row["id"]: row for row in await cur.fetchall()}
    return {o.id: _federation(o, rows[o.id]) for o in federated}


def _federation(order: Order, row: dict[str, Any]) -> dict[str, Any]:
    source = order.b2b_source_tenant
    status = {k: row[k] for k in ("last_event_id", "last_event_type", "last_sequence", "outbox_status",
                                   "receipt_outcome", "receipt_reason")}
    if source is not None:
        # The partner's document: we apply its events and answer them.
        if row["awaiting_approval"]:
            state = "awaiting_approval"
        elif row["held_events"]:
            state = "held"
        else:
            state = "applied"
        return {"partner": source, "direction": "inbound", "state": state, **status,
                "partner_state": row["partner_state"], "inbound_sequence": row["inbound_sequence"],
                "held_events": row["held_events"], "awaiting_approval": row["awaiting_approval"]}
    # We drive this order: the state is the partner's latest answer, or how far our latest
    # event got without one.
    state = row["receipt_outcome"] or row["outbox_status"] or "not_sent"
    return {"partner": row["dest_tenant"] or order.partner_tenant_id, "direction": "outbound", "state": state,
            **status, "partner_state": row["partner_state"]}


async def _one(conn: psycopg.AsyncConnection, query: Any, params: dict[str, Any], resource: str, key: object) -> dict:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        row = await cur.fetchone()
    if row is None:
        raise NotFound(resource=resource, id=key)
    return row
