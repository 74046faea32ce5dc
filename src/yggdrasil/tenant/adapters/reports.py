"""SQL for the reports. Each function is one query whose figures the database computes exactly
(numeric, never float); amounts are rounded to 4 places, the precision of prices and costs.

A line's amount is quantity * unit_price. An order without lines counts with amount 0.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
from psycopg.rows import dict_row

OPEN_STATES = ("draft", "confirmed")
SOLD_STATES = ("confirmed", "shipped")


async def _fetch(conn: psycopg.AsyncConnection, query: str, params: dict[str, Any]) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


_OPEN_SALES = """
    SELECT 'sales' AS kind, o.id, o.state, o.order_date, o.customer_id AS party_id,
           c.code AS party_code, c.name AS party_name, o.currency, o.reference,
           count(l.id) AS line_count, round(coalesce(sum(l.quantity * l.unit_price), 0), 4) AS total
      FROM crm_sales_orders o
      JOIN customers c ON c.id = o.customer_id
      LEFT JOIN crm_sales_order_lines l ON l.order_id = o.id
     WHERE o.state = ANY(%(states)s)
     GROUP BY o.id, c.id
"""
_OPEN_PURCHASES = """
    SELECT 'purchase' AS kind, o.id, o.state, o.order_date, o.supplier_id AS party_id,
           s.code AS party_code, s.name AS party_name, o.currency, o.reference,
           count(l.id) AS line_count, round(coalesce(sum(l.quantity * l.unit_price), 0), 4) AS total
      FROM purchasing_orders o
      JOIN suppliers s ON s.id = o.supplier_id
      LEFT JOIN purchasing_order_lines l ON l.order_id = o.id
     WHERE o.state = ANY(%(states)s)
     GROUP BY o.id, s.id
"""


async def open_orders(conn: psycopg.AsyncConnection, kind: str | None = None) -> list[dict]:
    """Sales and/or purchase orders in draft or confirmed, oldest order date first, with the
    party's name and the order's total."""
    parts = {"sales": [_OPEN_SALES], "purchase": [_OPEN_PURCHASES], None: [_OPEN_SALES, _OPEN_PURCHASES]}[kind]
    query = " UNION ALL ".join(parts) + " ORDER BY order_date, kind, id"
    return await _fetch(conn, query, {"states": list(OPEN_STATES)})


async def sales_by_customer(conn: psycopg.AsyncConnection, start: date, end: date) -> list[dict]:
    """Per customer and currency: confirmed and shipped sales orders dated start..end (both
    included), their count and total."""
    return await _fetch(
        conn,
        """
        SELECT c.id AS customer_id, c.code, c.name, o.currency,
               count(DISTINCT o.id) AS order_count,
               round(coalesce(sum(l.quantity * l.unit_price), 0), 4) AS total
          FROM crm_sales_orders o
          JOIN customers c ON c.id = o.customer_id
          LEFT JOIN crm_sales_order_lines l ON l.order_id = o.id
         WHERE o.state = ANY(%(states)s) AND o.order_date BETWEEN %(start)s AND %(end)s
         GROUP BY c.id, o.currency
         ORDER BY c.name, c.id, o.currency
        """,
        {"states": list(SOLD_STATES), "start": start, "end": end},
    )


async def stock_valuation(conn: psycopg.AsyncConnection, warehouse_id: int | None = None) -> list[dict]:
    """Each non-zero stock level valued at the item's cost, by SKU then warehouse code."""
    return await _fetch(
        conn,
        """
        SELECT s.item_id, i.sku, i.name, i.unit, s.warehouse_id, w.code AS warehouse_code,
               s.quantity, i.cost, round(s.quantity * i.cost, 4) AS value
          FROM stock_levels s
          JOIN items i ON i.id = s.item_id
          JOIN warehouses w ON w.id = s.warehouse_id
         WHERE s.quantity <> 0 AND (%(warehouse_id)s::bigint IS NULL OR s.warehouse_id = %(warehouse_id)s)
         ORDER BY i.sku, w.code
        """,
        {"warehouse_id": warehouse_id},
    )


async def items_below_reorder_point(conn: psycopg.AsyncConnection) -> list[dict]:
    """Active items whose quantity on hand across all warehouses is below their reorder point,
    largest shortfall first. `on_order` is what confirmed purchase orders will bring in."""
    return await _fetch(
        conn,
        """
        SELECT i.id AS item_id, i.sku, i.name, i.unit, i.reorder_point,
               coalesce(s.on_hand, 0)::numeric(20, 3) AS on_hand,
               coalesce(p.on_order, 0)::numeric(20, 3) AS on_order,
               (i.reorder_point - coalesce(s.on_hand, 0))::numeric(20, 3) AS shortfall
          FROM items i
          LEFT JOIN (SELECT item_id, sum(quantity) AS on_hand FROM stock_levels GROUP BY item_id) s
                 ON s.item_id = i.id
          LEFT JOIN (SELECT l.item_id, sum(l.quantity) AS on_order
                       FROM purchasing_order_lines l
                       JOIN purchasing_orders o ON o.id = l.order_id
                      WHERE o.state = 'confirmed'
                      GROUP BY l.item_id) p
                 ON p.item_id = i.id
         WHERE i.active AND coalesce(s.on_hand, 0) < i.reorder_point
         ORDER BY shortfall DESC, i.sku
        """,
        {},
    )
