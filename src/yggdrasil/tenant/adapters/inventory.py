"""Read-side SQL for items, stock levels and stock moves: keyset-paged lists with filters that
need a join or a sub-query, which the generic helpers in `rows.py` do not do. Quantities are
changed only by `stock.move_stock`."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

# Quantity on hand of an item across all warehouses; an item without stock rows has 0.
_ON_HAND = "(SELECT coalesce(sum(s.quantity), 0) FROM stock_levels s WHERE s.item_id = i.id)"


def like_pattern(text: str) -> str:
    """A case-insensitive substring pattern for ILIKE in which `%` and `_` match themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def record_exists(conn: psycopg.AsyncConnection, table: str, row_id: int) -> bool:
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE id = %s)").format(sql.Identifier(table))
    cur = await conn.execute(query, (row_id,))
    return (await cur.fetchone())[0]


async def _fetch_page(conn: psycopg.AsyncConnection, query: sql.Composable, params: dict[str, Any]) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def _and(conditions: list[str]) -> sql.Composable:
    # Every condition is a constant string of this module with named placeholders; request
    # values only ever travel as parameters.
    return sql.SQL(" AND ".join(conditions) if conditions else "true")


async def list_items(
    conn: psycopg.AsyncConnection,
    *,
    limit: int,
    after: int,
    q: str | None = None,
    sku: str | None = None,
    active: bool | None = None,
    below_reorder: bool | None = None,
) -> list[dict]:
    """Up to limit + 1 items with id > after, in id order. `below_reorder` keeps the items whose
    quantity on hand across warehouses is below (true) or not below (false) their reorder point."""
    conditions = ["i.id > %(after)s"]
    params: dict[str, Any] = {"after": after, "limit": limit + 1}
    if q:
        conditions.append("i.name ILIKE %(q)s")
        params["q"] = like_pattern(q)
    if sku is not None:
        conditions.append("i.sku = %(sku)s")
        params["sku"] = sku
    if active is not None:
        conditions.append("i.active = %(active)s")
        params["active"] = active
    if below_reorder is not None:
        conditions.append(f"({_ON_HAND} < i.reorder_point) = %(below)s")
        params["below"] = below_reorder
    query = sql.SQL("SELECT i.* FROM items i WHERE {} ORDER BY i.id LIMIT %(limit)s").format(_and(conditions))
    return await _fetch_page(conn, query, params)


async def list_stock_levels(
    conn: psycopg.AsyncConnection,
    *,
    limit: int,
    after: int,
    item_id: int | None = None,
    warehouse_id: int | None = None,
) -> list[dict]:
    """Up to limit + 1 stock levels with id > after, in id order, with the item's SKU and name
    and the warehouse's code."""
    conditions = ["s.id > %(after)s"]
    params: dict[str, Any] = {"after": after, "limit": limit + 1}
    if item_id is not None:
        conditions.append("s.item_id = %(item_id)s")
        params["item_id"] = item_id
    if warehouse_id is not None:
        conditions.append("s.warehouse_id = %(warehouse_id)s")
        params["warehouse_id"] = warehouse_id
    query = sql.SQL(
        """
        SELECT s.id, s.item_id, i.sku, i.name AS item_name, i.unit,
               s.warehouse_id, w.code AS warehouse_code, s.quantity, s.updated_at
          FROM stock_levels s
          JOIN items i ON i.id = s.item_id
          JOIN warehouses w ON w.id = s.warehouse_id
         WHERE {}
         ORDER BY s.id
         LIMIT %(limit)s
        """
    ).format(_and(conditions))
    return await _fetch_page(conn, query, params)


async def list_stock_moves(
    conn: psycopg.AsyncConnection,
    *,
    limit: int,
    after: int,
    item_id: int | None = None,
    warehouse_id: int | None = None,
    reason: str | None = None,
    reference_type: str | None = None,
    reference_id: int | None = None,
) -> list[dict]:
    """Up to limit + 1 stock moves with id > after, oldest first, with SKU and warehouse code."""
    conditions = ["m.id > %(after)s"]
    params: dict[str, Any] = {"after": after, "limit": limit + 1}
    for column, value in (("item_id", item_id), ("warehouse_id", warehouse_id), ("reason", reason),
                          ("reference_type", reference_type), ("reference_id", reference_id)):
        if value is not None:
            conditions.append(f"m.{column} = %({column})s")
            params[column] = value
    query = sql.SQL(
        """
        SELECT m.id, m.item_id, i.sku, m.warehouse_id, w.code AS warehouse_code, m.quantity,
               m.reason, m.reference_type, m.reference_id, m.note, m.created_at
          FROM stock_moves m
          JOIN items i ON i.id = m.item_id
          JOIN warehouses w ON w.id = m.warehouse_id
         WHERE {}
         ORDER BY m.id
         LIMIT %(limit)s
        """
    ).format(_and(conditions))
    return await _fetch_page(conn, query, params)
