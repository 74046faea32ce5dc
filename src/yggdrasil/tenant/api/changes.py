"""Change notifications: the database NOTIFYs `ygg_changes` at commit for every changed row
(migration 0003). One listener per server invalidates the cache — so writes by other processes,
such as the sidecar applying inbound events, are seen — and fans them out to WebSocket clients."""

from __future__ import annotations

import asyncio
import logging
import random

import psycopg
from fastapi import WebSocket

from yggdrasil.tenant.api.cache import TABLE_TAGS, ResponseCache, tags_for_tables

log = logging.getLogger(__name__)


class ChangeHub:
    def __init__(self, dsn: str, cache: ResponseCache):
        self.dsn = dsn
        self.cache = cache
        self.clients: set[WebSocket] = set()
        self.connected = asyncio.Event()

    async def listen_forever(self) -> None:
        delay = 1.0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute("LISTEN ygg_changes")
                    self.connected.set()
                    # We may have missed changes while disconnected: start from an empty cache.
                    self.cache.invalidate(tags_for_tables(*TABLE_TAGS))
                    delay = 1.0
                    async for notify in conn.notifies():
                        await self._dispatch(notify.payload)
            except asyncio.CancelledError:
                raise
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning("change listener lost its connection; retrying", extra={"error": str(exc), "retry_in": delay})
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 30.0)

    async def _dispatch(self, payload: str) -> None:
        table, _, rest = payload.partition(":")
        record_id, _, operation = rest.partition(":")
        self.cache.invalidate(tags_for_tables(table))
        if not self.clients:
            return
        message = {"table": table, "id": int(record_id) if record_id.isdigit() else None, "op": operation}
        dead = []
        for ws in list(self.clients):
            try:
                await ws.send_json(message)
            except Exception:  # a client that went away; the WebSocket layer already closed it
                dead.append(ws)
        for ws in dead:
            self.clients.discard(ws)
