"""Health history in `ygg_central` (0002_mesh_health.sql): checks, transitions, current status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from yggdrasil.mesh.domain.health import HealthObservation

Row = dict[str, Any]


@dataclass(frozen=True)
class Recorded:
    """A check as stored, and the transition it caused (from None: first status ever seen)."""

    check_id: int
    previous: str | None
    changed: bool


async def active_tenants(conn: psycopg.AsyncConnection) -> list[tuple[str, str]]:
    """(id, api_url) of every active tenant: the ones the monitor polls."""
    cur = await conn.execute("SELECT id, api_url FROM tenants WHERE status = 'active' ORDER BY id")
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def record_check(conn: psycopg.AsyncConnection, tenant_id: str, observation: HealthObservation,
                       checked_at: datetime) -> Recorded:
    """Store one check and, when the status changed, the transition, in one transaction. The
    lock on the tenant's `mesh_health_current` row orders concurrent recorders (several mesh
    servers), so each change is recorded once."""
    async with conn.transaction():
        cur = await conn.execute(
            """
            INSERT INTO mesh_health_current (tenant_id, status, since, last_checked_at, latency_ms, detail)
            VALUES (%(tenant)s, %(status)s, %(at)s, %(at)s, %(latency)s, %(detail)s)
            ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id
            """,
            {"tenant": tenant_id, "status": observation.status, "at": checked_at,
             "latency": observation.latency_ms, "detail": observation.detail},
        )
        previous: str | None = None
        if await cur.fetchone() is None:
            cur = await conn.execute(
                "SELECT status FROM mesh_health_current WHERE tenant_id = %s FOR UPDATE", (tenant_id,))
            (previous,) = await cur.fetchone()  # type: ignore[misc]
        changed = previous != observation.status
        cur = await conn.execute(
            """
            INSERT INTO mesh_health_checks (tenant_id, checked_at, status, latency_ms, detail)
            VALUES (%(tenant)s, %(at)s, %(status)s, %(latency)s, %(detail)s) RETURNING id
            """,
            {"tenant": tenant_id, "at": checked_at, "status": observation.status,
             "latency": observation.latency_ms, "detail": observation.detail},
        )
        (check_id,) = await cur.fetchone()  # type: ignore[misc]
        await conn.execute(
            """
            UPDATE mesh_health_current
               SET status = %(status)s, last_checked_at = %(at)s, latency_ms = %(latency)s, detail = %(detail)s,
                   since = CASE WHEN %(changed)s THEN %(at)s ELSE since END
             WHERE tenant_id = %(tenant)s
            """,
            {"tenant": tenant_id, "at": checked_at, "status": observation.status, "changed": changed,
             "latency": observation.latency_ms, "detail": observation.detail},
        )
        if changed:
            await conn.execute(
                """
                INSERT INTO mesh_health_transitions (tenant_id, from_status, to_status, at, detail)
                VALUES (%(tenant)s, %(from)s, %(to)s, %(at)s, %(detail)s)
                """,
                {"tenant": tenant_id, "from": previous, "to": observation.status, "at": checked_at,
                 "detail": observation.detail},
            )
    return Recorded(check_id, previous, changed)


async def prune_checks(conn: psycopg.AsyncConnection, older_than_days: float) -> int:
    """Delete checks older than the retention; transitions and current status stay."""
    cur = await conn.execute(
        "DELETE FROM mesh_health_checks WHERE checked_at < now() - make_interval(secs => %s)",
        (older_than_days * 86400,),
    )
    return cur.rowcount


async def current_statuses(conn: psycopg.AsyncConnection, tenant_id: str | None = None) -> list[Row]:
    """Every tenant with its registry status and last health (None when never checked)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT t.id AS tenant_id, t.status AS registry_status, h.status AS health, h.since,
                   h.last_checked_at, h.latency_ms, h.detail
              FROM tenants t LEFT JOIN mesh_health_current h ON h.tenant_id = t.id
             WHERE %(tenant)s::text IS NULL OR t.id = %(tenant)s
             ORDER BY t.id
            """,
            {"tenant": tenant_id},
        )
        return await cur.fetchall()


async def check_history(conn: psycopg.AsyncConnection, tenant_id: str, *, before: int | None,
                        limit: int) -> list[Row]:
    """Checks of one tenant, newest first, older than the cursor `before`; up to limit + 1."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT id, tenant_id, checked_at, status, latency_ms, detail FROM mesh_health_checks
             WHERE tenant_id = %(tenant)s AND (%(before)s::bigint IS NULL OR id < %(before)s)
             ORDER BY id DESC LIMIT %(limit)s
            """,
            {"tenant": tenant_id, "before": before, "limit": limit + 1},
        )
        return await cur.fetchall()


async def transitions(conn: psycopg.AsyncConnection, *, tenant_id: str | None, before: int | None,
                      limit: int) -> list[Row]:
    """Status changes, newest first; up to limit + 1."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT id, tenant_id, from_status, to_status, at, detail FROM mesh_health_transitions
             WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
               AND (%(before)s::bigint IS NULL OR id < %(before)s)
             ORDER BY id DESC LIMIT %(limit)s
            """,
            {"tenant": tenant_id, "before": before, "limit": limit + 1},
        )
        return await cur.fetchall()
