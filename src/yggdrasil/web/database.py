"""The database side of a server: the pool its lifespan opens, and telling a lost connection
(503, try again) from a statement the database refused."""

import logging

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout


def is_connection_failure(exc: BaseException) -> bool:
    """True when the error is about the connection, not about the statement."""
    if isinstance(exc, PoolTimeout | psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        # Class 08 is a connection exception, 57P an operator intervention (the server shuts
        # down or does not accept connections yet). A deadlock or serialization failure is an
        # OperationalError too (class 40), but the statement's: it is retried, not a 503.
        sqlstate = getattr(exc, "sqlstate", None)
        return sqlstate is None or sqlstate.startswith(("08", "57P"))
    return False


async def open_pool(dsn: str, *, name: str, application_name: str, min_size: int, max_size: int,
                    log: logging.Logger, unreachable: str, timeout: float = 30.0,
                    connect_kwargs: dict[str, object] | None = None) -> tuple[AsyncConnectionPool, bool]:
    """Open a server's pool and wait up to 10 s for its first connections. Returns the pool and
    whether the database answered in time. If it did not, `unreachable` is logged as an error
    and the pool is returned all the same: the server starts, says so on /health, and is whole
    again as soon as the database is back, without a restart. `timeout` is how long a request
    waits for a connection; `connect_kwargs` are more connection parameters."""
    pool = AsyncConnectionPool(
        dsn, open=False, name=name, min_size=min_size, max_size=max_size, timeout=timeout,
        check=AsyncConnectionPool.check_connection,
        # Reconnect forever: a database that is down for an hour must not leave the server with
        # an empty pool that has given up.
        reconnect_timeout=0,
        kwargs={"connect_timeout": 2, "application_name": application_name, **(connect_kwargs or {})},
    )
    await pool.open(wait=False)
    try:
        await pool.wait(timeout=10)
    except Exception:
        log.error(unreachable)
        return pool, False
    return pool, True
