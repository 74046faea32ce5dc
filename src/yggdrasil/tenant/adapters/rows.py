"""SQL for plain master-data tables (customers, suppliers, items, warehouses): insert, get,
keyset-paged list with filters, versioned update, delete. Table and column names come from the
caller's code, never from a request, and go through `sql.Identifier` all the same."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from yggdrasil.tenant.errors import NotFound, StaleVersion


@dataclass(frozen=True)
class Filter:
    """One WHERE condition: `column op %(value)s`, e.g. Filter("name", "ILIKE", "%acme%")."""

    column: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.op not in ("=", "ILIKE", ">=", "<=", "<", ">", "IS NULL", "IS NOT NULL"):
            raise ValueError(f"unsupported operator {self.op!r}")


def equal_filters(**values: Any) -> list[Filter]:
    """`column = value` for each value given; None means the caller did not filter on it."""
    return [Filter(column, "=", value) for column, value in values.items() if value is not None]


def _where(filters: Sequence[Filter], params: dict[str, Any]) -> sql.Composable:
    parts = []
    for n, f in enumerate(filters):
        if f.op in ("IS NULL", "IS NOT NULL"):
            parts.append(sql.SQL("{} " + f.op).format(sql.Identifier(f.column)))
        else:
            params[f"f{n}"] = f.value
            parts.append(sql.SQL("{} " + f.op + " {}").format(sql.Identifier(f.column), sql.Placeholder(f"f{n}")))
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


async def insert_row(conn: psycopg.AsyncConnection, table: str, values: Mapping[str, Any]) -> dict:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(map(sql.Placeholder, values)),
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, dict(values))
        return await cur.fetchone()


async def get_row(conn: psycopg.AsyncConnection, table: str, row_id: int, resource: str) -> dict:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.SQL("SELECT * FROM {} WHERE id = %s").format(sql.Identifier(table)), (row_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound(resource=resource, id=row_id)
    return row


async def list_rows(
    conn: psycopg.AsyncConnection, table: str, filters: Sequence[Filter], limit: int, after: int,
    select: sql.Composable = sql.SQL("*"),
) -> list[dict]:
    """Up to limit + 1 rows with id > after, in id order (the extra row tells there is a next page).
    `select` replaces `*` where a table holds bulky columns or a row needs a computed one."""
    params: dict[str, Any] = {"after": after, "limit": limit + 1}
    query = sql.SQL("SELECT {} FROM {} WHERE id > %(after)s AND {} ORDER BY id LIMIT %(limit)s").format(
        select, sql.Identifier(table), _where(filters, params)
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def update_row(
    conn: psycopg.AsyncConnection, table: str, row_id: int, version: int, values: Mapping[str, Any], resource: str
) -> dict:
    """Apply `values` if the row is still at `version`; bump the version. A row that moved on
    raises StaleVersion: the caller overwrote nothing it has not seen."""
    assignments = [sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in values]
    assignments.append(sql.SQL("version = version + 1"))
    assignments.append(sql.SQL("updated_at = now()"))
    query = sql.SQL("UPDATE {} SET {} WHERE id = %(_id)s AND version = %(_version)s RETURNING *").format(
        sql.Identifier(table), sql.SQL(", ").join(assignments)
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**values, "_id": row_id, "_version": version})
        row = await cur.fetchone()
    if row is None:
        current = await get_row(conn, table, row_id, resource)  # raises NotFound
        raise StaleVersion(resource=resource, id=row_id, sent=version, current=current["version"])
    return row


async def delete_row(conn: psycopg.AsyncConnection, table: str, row_id: int, version: int | None, resource: str) -> None:
    query = sql.SQL("DELETE FROM {} WHERE id = %(id)s AND (%(version)s::int IS NULL OR version = %(version)s) RETURNING id").format(
        sql.Identifier(table)
    )
    cur = await conn.execute(query, {"id": row_id, "version": version})
    if await cur.fetchone() is None:
        current = await get_row(conn, table, row_id, resource)
        raise StaleVersion(resource=resource, id=row_id, sent=version, current=current["version"])
