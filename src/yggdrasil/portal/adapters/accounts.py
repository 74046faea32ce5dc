"""Users, sessions and the sign-in throttle."""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection

USER_COLUMNS = "u.id, u.email, u.display_name, u.active, u.created_at"


async def insert_user(conn: AsyncConnection, email: str, display_name: str, password_hash: str) -> dict:
    """Raises psycopg.errors.UniqueViolation when the email (ignoring case) is taken."""
    cur = await conn.execute(
        f"""
        INSERT INTO portal_users AS u (email, display_name, password_hash)
        VALUES (%(email)s, %(name)s, %(hash)s)
        RETURNING {USER_COLUMNS}
        """,
        {"email": email, "name": display_name, "hash": password_hash},
    )
    return await cur.fetchone()


async def user_by_email(conn: AsyncConnection, email_key: str) -> dict | None:
    """The user (with password_hash) whose email is `email_key` ignoring case."""
    cur = await conn.execute(
        f"SELECT {USER_COLUMNS}, u.password_hash FROM portal_users u WHERE lower(u.email) = %(key)s",
        {"key": email_key},
    )
    return await cur.fetchone()


async def user_by_id(conn: AsyncConnection, user_id: int) -> dict | None:
    cur = await conn.execute(
        f"SELECT {USER_COLUMNS}, u.password_hash FROM portal_users u WHERE u.id = %(id)s", {"id": user_id}
    )
    return await cur.fetchone()


async def set_password_hash(conn: AsyncConnection, user_id: int, password_hash: str) -> None:
    await conn.execute(
        "UPDATE portal_users SET password_hash = %(hash)s, updated_at = now() WHERE id = %(id)s",
        {"hash": password_hash, "id": user_id},
    )


async def set_display_name(conn: AsyncConnection, user_id: int, display_name: str) -> dict:
    cur = await conn.execute(
        f"""
        UPDATE portal_users AS u SET display_name = %(name)s, updated_at = now() WHERE u.id = %(id)s
        RETURNING {USER_COLUMNS}
        """,
        {"name": display_name, "id": user_id},
    )
    return await cur.fetchone()


# -- sessions --------------------------------------------------------------------------------

async def insert_session(conn: AsyncConnection, token_hash: bytes, csrf_token: str, user_id: int,
                         client_address: str, user_agent: str, max_age_seconds: float) -> dict:
    cur = await conn.execute(
        """
        INSERT INTO portal_sessions (token_hash, csrf_token, user_id, client_address, user_agent, expires_at)
        VALUES (%(hash)s, %(csrf)s, %(user)s, %(address)s, %(agent)s,
                now() + make_interval(secs => %(max_age)s))
        RETURNING id, created_at, expires_at
        """,
        {"hash": token_hash, "csrf": csrf_token, "user": user_id, "address": client_address,
         "agent": user_agent[:500], "max_age": max_age_seconds},
    )
    return await cur.fetchone()


async def live_session(conn: AsyncConnection, token_hash: bytes, idle_seconds: float) -> dict | None:
    """The session for this token if it is neither revoked, expired nor idle too long, and its
    user is active; None otherwise. Notes the use (last_seen_at) at most once a minute, to keep
    page views from being a write each."""
    cur = await conn.execute(
        f"""
        SELECT s.id AS session_id, s.csrf_token, s.expires_at, s.last_seen_at,
               s.last_seen_at < now() - interval '1 minute' AS stale_seen,
               {USER_COLUMNS}
          FROM portal_sessions s JOIN portal_users u ON u.id = s.user_id
         WHERE s.token_hash = %(hash)s AND s.revoked_at IS NULL AND s.expires_at > now()
           AND s.last_seen_at > now() - make_interval(secs => %(idle)s) AND u.active
        """,
        {"hash": token_hash, "idle": idle_seconds},
    )
    row = await cur.fetchone()
    if row is not None and row.pop("stale_seen"):
        await conn.execute("UPDATE portal_sessions SET last_seen_at = now() WHERE id = %(id)s",
                           {"id": row["session_id"]})
    return row


async def revoke_session(conn: AsyncConnection, session_id: int) -> None:
    await conn.execute(
        "UPDATE portal_sessions SET revoked_at = now() WHERE id = %(id)s AND revoked_at IS NULL", {"id": session_id}
    )


async def revoke_sessions_of_user(conn: AsyncConnection, user_id: int, keep_session_id: int | None = None) -> None:
    await conn.execute(
        """
        UPDATE portal_sessions SET revoked_at = now()
         WHERE user_id = %(user)s AND revoked_at IS NULL AND id IS DISTINCT FROM %(keep)s
        """,
        {"user": user_id, "keep": keep_session_id},
    )


# -- sign-in throttle ------------------------------------------------------------------------

async def lock_on(conn: AsyncConnection, subjects: list[str]) -> tuple[datetime, datetime] | None:
    """(locked_until, now) of the longest current lock among `subjects`, or None."""
    cur = await conn.execute(
        """
        SELECT max(locked_until) AS locked_until, now() AS now FROM portal_login_throttle
         WHERE subject = ANY(%(subjects)s) AND locked_until > now()
        """,
        {"subjects": subjects},
    )
    row = await cur.fetchone()
    return (row["locked_until"], row["now"]) if row["locked_until"] is not None else None


# The failure count including this one: the stored count, unless its window has passed.
_COUNT = ("(CASE WHEN t.window_started_at < now() - make_interval(secs => %(window)s) "
          "THEN 0 ELSE t.failures END + 1)")
_WINDOW_PASSED = "t.window_started_at < now() - make_interval(secs => %(window)s)"
_RECORD_FAILURE = f"""
    INSERT INTO portal_login_throttle AS t (subject, failures, window_started_at, last_failure_at, locked_until)
    VALUES (%(subject)s,
            CASE WHEN %(max)s <= 1 THEN 0 ELSE 1 END, now(), now(),
            CASE WHEN %(max)s <= 1 THEN now() + make_interval(secs => %(lockout)s) END)
    ON CONFLICT (subject) DO UPDATE SET
        failures = CASE WHEN {_COUNT} >= %(max)s THEN 0 ELSE {_COUNT} END,
        window_started_at = CASE WHEN {_COUNT} >= %(max)s OR {_WINDOW_PASSED} THEN now()
                                 ELSE t.window_started_at END,
        last_failure_at = now(),
        locked_until = CASE WHEN {_COUNT} >= %(max)s THEN now() + make_interval(secs => %(lockout)s)
                            ELSE t.locked_until END
    RETURNING locked_until, now() AS now
"""


async def record_failure(conn: AsyncConnection, subject: str, max_failures: int, window_seconds: float,
                         lockout_seconds: float) -> tuple[datetime, datetime] | None:
    """Count one failed sign-in for `subject`; lock it when this makes `max_failures` within the
    window. One upsert on the locked row, so concurrent attempts on several portal copies count
    exactly. A lock starts a fresh count: once it expires the subject has `max_failures` tries
    again. Returns (locked_until, now) if the subject is locked now, else None."""
    cur = await conn.execute(
        _RECORD_FAILURE,
        {"subject": subject, "max": max_failures, "window": window_seconds, "lockout": lockout_seconds},
    )
    row = await cur.fetchone()
    if row["locked_until"] is not None and row["locked_until"] > row["now"]:
        return row["locked_until"], row["now"]
    return None


async def clear_failures(conn: AsyncConnection, subject: str) -> None:
    await conn.execute("DELETE FROM portal_login_throttle WHERE subject = %(subject)s", {"subject": subject})
