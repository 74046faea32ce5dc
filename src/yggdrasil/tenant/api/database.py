"""The server's view of its database: a connection pool plus whether the database is reachable.

While the database is unreachable the server must answer at once (writes 503, reads from the
cache marked stale) instead of letting every request wait for a connection. A background probe
notices recovery; the pool's own reconnection brings the connections back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from yggdrasil.tenant.errors import DatabaseUnavailable
from yggdrasil.web.database import is_connection_failure

log = logging.getLogger(__name__)
T = TypeVar("T")

# Deadlocks and serialization failures are the database asking us to try again.
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_MAX_ATTEMPTS = 4


class Database:
    def __init__(self, pool: AsyncConnectionPool, dsn: str, timeout: float, probe_interval: float):
        self.pool = pool
        self.dsn = dsn
        self.timeout = timeout
        self.probe_interval = probe_interval
        self.up = True
        self.down_since: float | None = None
        self._wake_probe = asyncio.Event()

    def state(self) -> dict[str, object]:
        return {
            "state": "up" if self.up else "down",
            "down_for_seconds": round(time.monotonic() - self.down_since, 1) if self.down_since else None,
        }

    def suspect(self) -> None:
        """A request failed to reach the database: ask the probe to check now."""
        self._wake_probe.set()

    async def probe_forever(self) -> None:
        """Check reachability with a fresh connection, not the pool: the pool may be full of
        connections to a server that has since restarted."""
        while True:
            try:
                await asyncio.wait_for(self._wake_probe.wait(), self.probe_interval if not self.up else 30)
            except TimeoutError:
                pass
            self._wake_probe.clear()
            reachable = await self._reachable()
            if reachable and not self.up:
                log.info("database reachable again", extra={"down_seconds": round(time.monotonic() - self.down_since, 1)})
                self.up, self.down_since = True, None
                await self.pool.check()  # drop connections that died with the old server
            elif not reachable and self.up:
                log.error("database unreachable: writes refused, reads served from cache")
                self.up, self.down_since = False, time.monotonic()

    async def _reachable(self) -> bool:
        try:
            conn = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=max(1, int(self.timeout + 0.5)))
        except psycopg.Error:
            return False
        await conn.close()
        return True

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection. Raises DatabaseUnavailable at once while the database is known
        to be down; `outcome_unknown` on it says whether work had already been sent (then a
        commit may or may not have happened)."""
        if not self.up:
            raise DatabaseUnavailable()
        acquired = False
        try:
            async with self.pool.connection(timeout=self.timeout) as conn:
                acquired = True
                yield conn
        except Exception as exc:
            if is_connection_failure(exc):
                self.suspect()
                error = DatabaseUnavailable()
                error.outcome_unknown = acquired
                raise error from exc
            raise

    async def run(
        self,
        work: Callable[[psycopg.AsyncConnection], Awaitable[T]],
        *,
        actor: str,
        request_id: str | None = None,
    ) -> T:
        """Run `work` in one transaction, as `actor` (the audit triggers read it), retrying on
        deadlock or serialization failure with a short jittered backoff."""
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                async with self.connection() as conn:
                    async with conn.transaction():
                        await conn.execute(
                            "SELECT set_config('ygg.actor', %s, true), set_config('ygg.request_id', %s, true)",
                            (actor, request_id or ""),
                        )
                        return await work(conn)
            except _RETRYABLE:
                if attempt == _MAX_ATTEMPTS:
                    raise
                await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)
        raise AssertionError("unreachable")

    async def read(self, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        async with self.connection() as conn:
            return await work(conn)
