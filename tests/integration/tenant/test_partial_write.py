"""A multi-table write is all or nothing: the server's database backend is terminated for real
in the middle of creating an order with lines, and nothing of the order is left behind."""

import asyncio
import time

import psycopg
import pytest

pytestmark = pytest.mark.integration



async def tables_written_by(conn: psycopg.AsyncConnection, pid: int) -> set[str]:
    """Tables the backend `pid` holds a write lock on: those it has written in its transaction."""
    cur = await conn.execute(
        """
        SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         WHERE l.pid = %s AND l.mode = 'RowExclusiveLock' AND l.granted AND c.relkind = 'r'
        """, (pid,))
    return {name for (name,) in await cur.fetchall()}


@pytest.fixture
def catalogue(api) -> dict[str, int]:
    with psycopg.connect(api.dsn) as conn:
        def one(query):
            return conn.execute(query).fetchone()[0]

        return {
            "customer": one("INSERT INTO customers (code, name) VALUES ('BRAVO', 'BRAVO-BUYER GmbH') RETURNING id"),
            "depot": one("INSERT INTO warehouses (code, name) VALUES ('NORTH', 'North depot') RETURNING id"),
            "clock": one("INSERT INTO items (sku, name, list_price) VALUES ('RETRO-CLOCK', 'Retro clock', 24.90) RETURNING id"),
            "lamp": one("INSERT INTO items (sku, name, list_price) VALUES ('LAVA-LAMP', 'Lava lamp', 12.50) RETURNING id"),
        }


async def wait_for_blocked_server_backend(conn: psycopg.AsyncConnection, timeout: float = 10.0) -> tuple[int, str]:
    """The pid and query of the tenant server's backend that waits for a row lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur = await conn.execute(
            """
            SELECT pid, query FROM pg_stat_activity
             WHERE application_name LIKE 'ygg-tenant-%%' AND wait_event_type = 'Lock'
               AND datname = current_database()
            """)
        row = await cur.fetchone()
        if row:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError("the server's transaction never blocked on a row lock")


async def terminated(watcher: psycopg.AsyncConnection, locker: psycopg.AsyncConnection, pid: int,
                     request: asyncio.Task):
    """Terminate the server's backend `pid` for real, release `locker`'s lock, and return the
    server's answer to `request`, which must be a 503."""
    try:
        cur = await watcher.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert (await cur.fetchone())[0] is True
    finally:
        await locker.rollback()
    answer = await asyncio.wait_for(request, timeout=10)
    assert answer.status_code == 503, answer.text
    return answer


async def test_terminating_the_backend_mid_order_leaves_no_order_no_lines_no_audit_rows(api, catalogue):
    body = {"customer_id": catalogue["customer"], "warehouse_id": catalogue["depot"],
            "lines": [{"item_id": catalogue["clock"], "quantity": 1}, {"item_id": catalogue["lamp"], "quantity": 2}]}

    async with await psycopg.AsyncConnection.connect(api.dsn, autocommit=True) as watcher, \
               await psycopg.AsyncConnection.connect(api.dsn) as locker:
        # A line's foreign key to its item is checked, with a KEY SHARE lock on the item row, after
        # the rows are written; holding that row FOR UPDATE makes the server's transaction stop
        # right there: header and lines written, nothing committed. (Their audit rows come at the
        # statement's end, migration 0012; the shipping test below stops after audit rows.)
        await locker.execute("SELECT id FROM items WHERE id = %s FOR UPDATE", (catalogue["lamp"],))
        posting = asyncio.create_task(api.post("/api/v1/sales-orders", role="sales", json=body))
        pid, query = await wait_for_blocked_server_backend(watcher)
        assert "INSERT INTO" in query and "crm_sales_orders" in query
        # The header row is written, uncommitted: its identity value is taken ...
        cur = await watcher.execute("SELECT last_value, is_called FROM crm_sales_orders_id_seq")
        assert await cur.fetchone() == (1, True)
        # ... and the backend has written to the order and line tables.
        assert {"crm_sales_orders", "crm_sales_order_lines"} <= await tables_written_by(watcher, pid)

        answer = await terminated(watcher, locker, pid, posting)
        assert answer.json()["error"]["code"] == "database.unavailable"

        for query in ("SELECT count(*) FROM crm_sales_orders",
                      "SELECT count(*) FROM crm_sales_order_lines",
                      "SELECT count(*) FROM audit_change_log WHERE table_name IN ('crm_sales_orders', 'crm_sales_order_lines')"):
            cur = await watcher.execute(query)
            assert (await cur.fetchone())[0] == 0, query

    # The server recovers by itself: the pool replaces the dead connection.
    again = await api.post("/api/v1/sales-orders", role="sales", json=body)
    assert again.status_code == 201, again.text
    assert len(again.json()["lines"]) == 2
    with psycopg.connect(api.dsn) as conn:
        audited = conn.execute(
            "SELECT table_name, count(*) FROM audit_change_log "
            "WHERE table_name IN ('crm_sales_orders', 'crm_sales_order_lines') GROUP BY 1 ORDER BY 1").fetchall()
    assert audited == [("crm_sales_order_lines", 2), ("crm_sales_orders", 1)]


async def test_terminating_the_backend_mid_shipment_leaves_the_order_confirmed_and_no_audit_rows(api, catalogue):
    body = {"customer_id": catalogue["customer"], "warehouse_id": catalogue["depot"],
            "lines": [{"item_id": catalogue["clock"], "quantity": 1}, {"item_id": catalogue["lamp"], "quantity": 2}]}
    with psycopg.connect(api.dsn) as conn:
        conn.execute("INSERT INTO stock_levels (item_id, warehouse_id, quantity) VALUES (%s, %s, 10), (%s, %s, 10)",
                     (catalogue["clock"], catalogue["depot"], catalogue["lamp"], catalogue["depot"]))
    order = (await api.post("/api/v1/sales-orders", role="sales", json=body)).json()
    assert (await api.post(f"/api/v1/sales-orders/{order['id']}/confirm", role="sales")).status_code == 200
    with psycopg.connect(api.dsn) as conn:
        audited_before = conn.execute("SELECT max(seq) FROM audit_change_log").fetchone()[0]

    async with await psycopg.AsyncConnection.connect(api.dsn, autocommit=True) as watcher, \
               await psycopg.AsyncConnection.connect(api.dsn) as locker:
        # Shipping takes each line's goods out of stock in item order (a stock level update and a
        # stock move per line, each statement audited at its end), then moves the order: holding
        # the lamp's stock row stops the transaction after the clock's rows and their audit rows
        # are written.
        await locker.execute("SELECT 1 FROM stock_levels WHERE item_id = %s FOR UPDATE", (catalogue["lamp"],))
        shipping = asyncio.create_task(api.post(f"/api/v1/sales-orders/{order['id']}/ship", role="warehouse"))
        pid, _ = await wait_for_blocked_server_backend(watcher)
        assert {"stock_levels", "stock_moves", "audit_change_log"} <= await tables_written_by(watcher, pid)
        await terminated(watcher, locker, pid, shipping)

        cur = await watcher.execute("SELECT state FROM crm_sales_orders WHERE id = %s", (order["id"],))
        assert await cur.fetchone() == ("confirmed",)
        cur = await watcher.execute("SELECT count(*) FROM audit_change_log WHERE seq > %s", (audited_before,))
        assert await cur.fetchone() == (0,)
        cur = await watcher.execute("SELECT sum(quantity) FROM stock_levels")
        assert await cur.fetchone() == (20,)
        cur = await watcher.execute("SELECT count(*) FROM stock_moves")
        assert await cur.fetchone() == (0,)
