"""API tokens and roles. A token is 32 random bytes shown once; the database keeps its SHA-256.

A token names its tenant: `ygg_<tenant_id>.<secret>`, so that the mesh's API proxy can refuse
tenant A's token on tenant B without asking anyone (tenant ids and the url-safe secret never
contain a '.'). Tokens of the older form `ygg_<secret>` keep working on the tenant server."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

import psycopg

ROLES = ("admin", "sales", "purchasing", "warehouse", "auditor")
TOKEN_PREFIX = "ygg_"


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: str

    @property
    def actor(self) -> str:
        return self.username


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token(tenant_id: str) -> str:
    return f"{TOKEN_PREFIX}{tenant_id}.{secrets.token_urlsafe(32)}"


_TENANT_TOKEN = re.compile(r"^ygg_([a-z][a-z0-9-]{1,62})\.([A-Za-z0-9_-]{16,})$")


def token_tenant(token: str) -> str | None:
    """The tenant a token of the form `ygg_<tenant_id>.<secret>` names; None for anything else
    (including tokens of the older form, which name no tenant)."""
    match = _TENANT_TOKEN.match(token)
    return match[1] if match else None


async def principal_for_token(conn: psycopg.AsyncConnection, token: str) -> Principal | None:
    cur = await conn.execute(
        """
        SELECT u.id, u.username, u.role
          FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = %(hash)s AND t.revoked_at IS NULL
           AND (t.expires_at IS NULL OR t.expires_at > now()) AND u.active
        """,
        {"hash": hash_token(token)},
    )
    row = await cur.fetchone()
    return Principal(*row) if row else None


def create_token(conn: psycopg.Connection, username: str, role: str, name: str = "", *, tenant_id: str) -> str:
    """Create the user if needed (with `role`) and a new token for it, naming `tenant_id`;
    return the token. An existing user keeps its id; its role is set to `role`."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are: {', '.join(ROLES)}")
    with conn.transaction():
        conn.execute("SELECT set_config('ygg.actor', 'cli', true)")
        user_id = conn.execute(
            """
            INSERT INTO users (username, role) VALUES (%(username)s, %(role)s)
            ON CONFLICT (username) DO UPDATE SET role = EXCLUDED.role, version = users.version + 1
                WHERE users.role IS DISTINCT FROM EXCLUDED.role
            RETURNING id
            """,
            {"username": username, "role": role},
        ).fetchone()
        if user_id is None:
            user_id = conn.execute("SELECT id FROM users WHERE username = %s", (username,)).fetchone()
        token = new_token(tenant_id)
        conn.execute(
            "INSERT INTO api_tokens (user_id, token_hash, name) VALUES (%s, %s, %s)",
            (user_id[0], hash_token(token), name),
        )
    return token
