"""Request-scoped plumbing for route handlers: the app's services, authentication and roles,
cached reads and audited writes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from yggdrasil.logs import actor_var, request_id_var
from yggdrasil.settings import Settings
from yggdrasil.tenant.api.cache import ResponseCache
from yggdrasil.tenant.api.database import Database
from yggdrasil.tenant.api.metrics import TenantMetrics
from yggdrasil.tenant.api.ratelimit import RateLimiter
from yggdrasil.tenant.auth import ROLES, Principal, hash_token, principal_for_token
from yggdrasil.tenant.outbound import OutboundEvents
from yggdrasil.tenant.errors import DatabaseUnavailable, TenantError

# How long a validated token is trusted without asking the database again. A revoked token
# stops working within this time; while the database is down, known tokens keep working.
TOKEN_CACHE_SECONDS = 30.0


@dataclass
class TenantServices:
    settings: Settings
    db: Database
    cache: ResponseCache
    limiter: RateLimiter
    metrics: TenantMetrics
    outbound: OutboundEvents
    tokens: dict[bytes, tuple[Principal, float]] = field(default_factory=dict)


class AuthError(Exception):
    def __init__(self, status: int, message_id: str, **params: object):
        self.status = status
        self.message_id = message_id
        self.params = params


class RateLimited(Exception):
    def __init__(self, retry_after: float):
        self.retry_after = retry_after


def get_services(request: Request) -> TenantServices:
    return request.app.state.services


ServicesDep = Annotated[TenantServices, Depends(get_services)]


async def authenticate(request: Request, services: ServicesDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "auth.missing_token")
    principal = await _principal(services, token.strip())
    if principal is None:
        raise AuthError(401, "auth.invalid_token")
    wait = services.limiter.take(principal.username)
    if wait:
        services.metrics.rate_limited.inc()
        raise RateLimited(wait)
    actor_var.set(principal.actor)
    request.state.principal = principal
    return principal


async def _principal(services: TenantServices, token: str) -> Principal | None:
    key = hash_token(token)
    cached = services.tokens.get(key)
    now = time.monotonic()
    if cached and now - cached[1] < TOKEN_CACHE_SECONDS:
        return cached[0]
    try:
        principal = await services.db.read(lambda conn: principal_for_token(conn, token))
    except DatabaseUnavailable:
        if cached:  # known token, database down: keep serving cached reads to it
            return cached[0]
        raise
    if principal is None:
        services.tokens.pop(key, None)
        return None
    if len(services.tokens) > 10_000:
        services.tokens.clear()
    services.tokens[key] = (principal, now)
    return principal


def require(*roles: str, action: str = "do this") -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates and admits `roles` (admin is always admitted)."""
    allowed = frozenset(roles) | {"admin"}
    unknown = allowed - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if principal.role not in allowed:
            raise AuthError(403, "auth.forbidden", role=principal.role, action=action,
                            allowed=", ".join(sorted(allowed)))
        return principal

    return dependency


AnyRole = Annotated[Principal, Depends(require(*ROLES, action="read"))]


def request_id() -> str:
    return request_id_var.get() or uuid.uuid4().hex


def _json_bytes(data: Any) -> bytes:
    if isinstance(data, BaseModel):
        return data.model_dump_json().encode()
    return json.dumps(data, separators=(",", ":"), default=str).encode()


async def cached_read(
    request: Request,
    services: TenantServices,
    tags: frozenset[str],
    load: Callable[[psycopg.AsyncConnection], Awaitable[Any]],
) -> Response:
    """Answer a GET from the cache when fresh, else from the database (and cache the result).
    With the database down, answer from an expired entry marked stale, or 503 if there is none."""
    key = request.url.path + "?" + str(request.query_params)
    if services.db.up:
        entry = services.cache.fresh(key)
        if entry is not None:
            services.metrics.cache.labels("hit").inc()
            return Response(entry.body, media_type="application/json", headers={"X-Cache": "hit"})
        try:
            data = await services.db.read(load)
        except DatabaseUnavailable:
            return _stale_or_raise(services, key)
    else:
        # Even a fresh entry may be out of date once we cannot see the database: say so.
        return _stale_or_raise(services, key)
    services.metrics.cache.labels("miss").inc()
    body = _json_bytes(data)
    services.cache.put(key, body, tags)
    services.metrics.cache_bytes.set(services.cache.size_bytes)
    return Response(body, media_type="application/json", headers={"X-Cache": "miss"})


def _stale_or_raise(services: TenantServices, key: str) -> Response:
    entry = services.cache.stale(key)
    if entry is None:
        raise DatabaseUnavailable()
    services.metrics.cache.labels("stale").inc()
    return Response(
        entry.body, media_type="application/json",
        headers={"X-Cache": "stale", "Age": str(int(entry.age())), "Warning": '110 - "Response is Stale"',
                 "X-Stale-Reason": "database unreachable"},
    )


async def write(
    services: TenantServices,
    principal: Principal,
    tags: frozenset[str],
    work: Callable[[psycopg.AsyncConnection], Awaitable[Any]],
) -> Any:
    """Run one audited write transaction as the caller, then drop the cache entries it affects."""
    try:
        result = await services.db.run(work, actor=principal.actor, request_id=request_id())
    except DatabaseUnavailable as exc:
        if exc.outcome_unknown:
            services.cache.invalidate(tags)
        raise
    except TenantError:
        raise  # refused before anything was written
    except BaseException:
        services.cache.invalidate(tags)
        raise
    services.cache.invalidate(tags)
    return result
