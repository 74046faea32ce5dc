"""Admin tokens of the mesh server: shown once, kept as SHA-256 (0002_mesh_health.sql)."""

from __future__ import annotations

import hashlib
import secrets

import psycopg

ADMIN_TOKEN_PREFIX = "yggadm_"


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_admin_token(conn: psycopg.Connection, name: str) -> str:
    """Store a new admin token under `name` and return it (the only time it is seen).
    Raises ValueError for an empty or overlong name."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise ValueError("the token name must be 1 to 100 characters")
    token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with conn.transaction():
        conn.execute("INSERT INTO mesh_admin_tokens (name, token_hash) VALUES (%s, %s)", (name, hash_token(token)))
    return token


async def admin_for_token(conn: psycopg.AsyncConnection, token: str) -> str | None:
    """The name of the admin holding this token, or None (unknown or revoked)."""
    cur = await conn.execute(
        "SELECT name FROM mesh_admin_tokens WHERE token_hash = %s AND revoked_at IS NULL", (hash_token(token),)
    )
    row = await cur.fetchone()
    return row[0] if row else None
