"""What route handlers receive: the app's state, and the admin check."""

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from yggdrasil.logs import actor_var
from yggdrasil.mesh.adapters.admin_tokens import admin_for_token
from yggdrasil.mesh.errors import Unauthenticated
from yggdrasil.mesh.metrics import MeshMetrics
from yggdrasil.settings import Settings


@dataclass
class MeshState:
    settings: Settings
    pool: AsyncConnectionPool
    http: httpx.AsyncClient
    metrics: MeshMetrics


def get_state(request: Request) -> MeshState:
    return request.app.state.mesh


State = Annotated[MeshState, Depends(get_state)]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def require_admin(request: Request) -> str:
    """The admin's token name; raises Unauthenticated (401) for a missing, unknown or revoked
    token."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthenticated("auth.missing_token", "this endpoint needs an admin token: Authorization: Bearer <token> "
                                                    "(create one with `ygg mesh admin-token create`)")
    state = get_state(request)
    async with state.pool.connection() as conn:
        admin = await admin_for_token(conn, token)
    if admin is None:
        raise Unauthenticated("auth.invalid_token", "the admin token is unknown or revoked")
    actor_var.set(f"admin:{admin}")
    return admin


Admin = Annotated[str, Depends(require_admin)]
