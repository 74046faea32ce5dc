"""Stock movements: the one place that changes quantities on hand. Every change writes a
`stock_moves` row and adjusts `stock_levels` in the caller's transaction."""

from __future__ import annotations

from decimal import Decimal

import psycopg

from yggdrasil.tenant.errors import InsufficientStock


async def move_stock(
    conn: psycopg.AsyncConnection,
    *,
    item_id: int,
    warehouse_id: int,
    quantity: Decimal,
    reason: str,
    reference_type: str | None = None,
    reference_id: int | None = None,
    note: str = "",
) -> Decimal:
    """Add `quantity` (negative to take out) to the item's level in the warehouse and record the
    move. Returns the new quantity on hand. Taking out more than is there raises
    InsufficientStock and changes nothing (the caller's transaction rolls back)."""
    if quantity < 0:
        # Conditional update: the row lock it takes serialises concurrent shipments of the same
        # item, and the WHERE makes the shortage check and the decrement one atomic step.
        cur = await conn.execute(
            """
            UPDATE stock_levels SET quantity = quantity + %(q)s, updated_at = now()
             WHERE item_id = %(item)s AND warehouse_id = %(wh)s AND quantity + %(q)s >= 0
            RETURNING quantity
            """,
            {"q": quantity, "item": item_id, "wh": warehouse_id},
        )
        row = await cur.fetchone()
        if row is None:
            cur = await conn.execute(
                "SELECT quantity FROM stock_levels WHERE item_id = %s AND warehouse_id = %s",
                (item_id, warehouse_id),
            )
            available = await cur.fetchone()
            raise InsufficientStock(item_id=item_id, warehouse_id=warehouse_id, needed=-quantity,
                                    available=available[0] if available else Decimal(0))
    else:
        cur = await conn.execute(
            """
            INSERT INTO stock_levels (item_id, warehouse_id, quantity) VALUES (%(item)s, %(wh)s, %(q)s)
            ON CONFLICT (item_id, warehouse_id)
            DO UPDATE SET quantity = stock_levels.quantity + EXCLUDED.quantity, updated_at = now()
            RETURNING quantity
            """,
            {"q": quantity, "item": item_id, "wh": warehouse_id},
        )
        row = await cur.fetchone()
    await conn.execute(
        """
        INSERT INTO stock_moves (item_id, warehouse_id, quantity, reason, reference_type, reference_id, note)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        """,
        (item_id, warehouse_id, quantity, reason, reference_type, reference_id, note),
    )
    return row[0]
