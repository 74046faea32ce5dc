"""The one subscription row of each organization."""

from __future__ import annotations

from dataclasses import asdict

from psycopg import AsyncConnection

from yggdrasil.portal.domain.subscriptions import Subscription

_FIELDS = ("plan", "seats", "status", "current_period_start", "current_period_end",
           "cancel_at_period_end", "cancelled_at")


async def subscription_of(conn: AsyncConnection, organization_id: int, lock: bool = False) -> Subscription:
    cur = await conn.execute(
        f"SELECT {', '.join(_FIELDS)} FROM portal_subscriptions WHERE organization_id = %(org)s"
        + (" FOR UPDATE" if lock else ""),
        {"org": organization_id},
    )
    row = await cur.fetchone()
    if row is None:  # created with the organization in the same transaction; a missing one is a bug
        raise LookupError(f"organization {organization_id} has no subscription row")
    return Subscription(**row)


async def insert_subscription(conn: AsyncConnection, organization_id: int, sub: Subscription) -> None:
    await conn.execute(
        f"""
        INSERT INTO portal_subscriptions (organization_id, {', '.join(_FIELDS)})
        VALUES (%(org)s, {', '.join(f'%({f})s' for f in _FIELDS)})
        """,
        {"org": organization_id, **asdict(sub)},
    )


async def save_subscription(conn: AsyncConnection, organization_id: int, sub: Subscription) -> None:
    await conn.execute(
        f"""
        UPDATE portal_subscriptions SET {', '.join(f'{f} = %({f})s' for f in _FIELDS)}, updated_at = now()
         WHERE organization_id = %(org)s
        """,
        {"org": organization_id, **asdict(sub)},
    )
