"""SQL for the portal's tables (0003_portal.sql). Every function takes an open connection made
by `connect` or the app's pool (autocommit, dict rows); transactions are the caller's."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

CONNECTION_KWARGS = {"autocommit": True, "row_factory": dict_row}


async def connect(dsn: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(dsn, application_name="ygg-portal-cli", **CONNECTION_KWARGS)
