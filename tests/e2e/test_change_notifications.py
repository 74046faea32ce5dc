"""WS /ws: a client is told about each committed change, including writes made by another
process straight into the database (as the sidecar does), and never about a rolled-back one."""

import asyncio
import json

import psycopg
import pytest
import websockets

from conftest import tenant_server_process

pytestmark = pytest.mark.e2e


async def next_message(ws, timeout=10.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_websocket_clients_hear_committed_changes_and_not_rolled_back_ones(tenant_dsn, tmp_path):
    with tenant_server_process(tenant_dsn, tmp_path) as server:
        ws_url = server.url.replace("http://", "ws://") + f"/ws?token={server.admin_token}"
        async with websockets.connect(ws_url) as ws:
            with psycopg.connect(tenant_dsn) as conn:
                with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
                    conn.execute("INSERT INTO items (sku, name) VALUES ('GHOST', 'never committed')")
                    conn.execute("INSERT INTO items (sku, name, cost) VALUES ('BAD', 'bad', -1)")
                item_id = conn.execute(
                    "INSERT INTO items (sku, name) VALUES ('RETRO-CLOCK', 'Retro clock') RETURNING id").fetchone()[0]
                conn.commit()
            assert await next_message(ws) == {"table": "items", "id": item_id, "op": "INSERT"}

        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(server.url.replace("http://", "ws://") + "/ws?token=wrong"):
                pass
