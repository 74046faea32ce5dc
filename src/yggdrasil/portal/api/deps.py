"""What a request needs: the portal's wired objects, a database connection, and the caller.

Authentication: a session token, from the HttpOnly cookie (browsers, pages and API alike) or
from `Authorization: Bearer <token>` (API clients; /api/v1 only). A request that rides on the
cookie and changes state must also carry the session's CSRF token (form field `csrf_token` or
header `X-CSRF-Token`) and, if the browser names an Origin, come from this site. Bearer
requests need neither: a browser never attaches that header by itself, so another site cannot
make one on a user's behalf.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from yggdrasil.logs import actor_var
from yggdrasil.portal import services
from yggdrasil.portal.api.metrics import PortalMetrics
from yggdrasil.portal.domain.accounts import Passwords, ThrottlePolicy, tokens_match
from yggdrasil.portal.errors import AuthenticationRequired, CsrfRefused
from yggdrasil.settings import Settings

SESSION_COOKIE = "ygg_portal_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# How long a request waits for a pool connection before the answer is 503.
CONNECTION_TIMEOUT_SECONDS = 5.0


@dataclass
class Portal:
    """Everything the handlers share; built once by the app's lifespan."""

    settings: Settings
    pool: AsyncConnectionPool
    passwords: Passwords
    throttle: ThrottlePolicy
    metrics: PortalMetrics


@dataclass
class Caller:
    """A signed-in request: who, how, and its connection."""

    session: services.Session
    via: str  # "cookie" or "bearer"
    conn: AsyncConnection

    @property
    def actor(self) -> services.Actor:
        return self.session.actor

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token


def get_portal(request: Request) -> Portal:
    return request.app.state.portal


async def get_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    async with get_portal(request).pool.connection(timeout=CONNECTION_TIMEOUT_SECONDS) as conn:
        yield conn


PortalDep = Annotated[Portal, Depends(get_portal)]
ConnectionDep = Annotated[AsyncConnection, Depends(get_connection)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def check_origin(request: Request) -> None:
    """A browser names the page a form was posted from; refuse one from another site. (Requests
    without Origin, from older browsers and non-browser clients, rely on the CSRF token.)"""
    origin = request.headers.get("origin")
    if origin is None:
        return
    if origin == "null" or urlsplit(origin).netloc != request.headers.get("host", ""):
        get_portal(request).metrics.csrf_refused.inc()
        raise CsrfRefused(f"cross-site request refused: the request comes from {origin}, not from this portal")


async def check_csrf(request: Request, caller: Caller) -> None:
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        field = (await request.form()).get(CSRF_FIELD)
        given = field if isinstance(field, str) else None
    if not given:
        get_portal(request).metrics.csrf_refused.inc()
        raise CsrfRefused("this request changes data but carries no CSRF token (form field csrf_token or "
                          "header X-CSRF-Token); reload the page and try again")
    if not tokens_match(caller.csrf_token, given):
        get_portal(request).metrics.csrf_refused.inc()
        raise CsrfRefused("the CSRF token does not belong to this session; reload the page and try again")


async def _session(request: Request, conn: AsyncConnection, allow_bearer: bool) -> Caller | None:
    portal = get_portal(request)
    authorization = request.headers.get("authorization", "")
    if allow_bearer and authorization[:7].lower() == "bearer ":
        token, via = authorization[7:].strip(), "bearer"
    else:
        token, via = request.cookies.get(SESSION_COOKIE, ""), "cookie"
    if not token:
        return None
    session = await services.session_for_token(conn, token, portal.settings.portal_session_idle_seconds)
    if session is None:
        return None
    actor_var.set(f"user:{session.actor.user_id}")
    return Caller(session, via, conn)


async def _signed_in(request: Request, conn: AsyncConnection, allow_bearer: bool) -> Caller:
    caller = await _session(request, conn, allow_bearer)
    if caller is None:
        raise AuthenticationRequired("sign in first: no valid session (it may have expired or been signed out)")
    if request.method not in SAFE_METHODS and caller.via == "cookie":
        check_origin(request)
        await check_csrf(request, caller)
    return caller


async def api_caller(request: Request, conn: ConnectionDep) -> Caller:
    return await _signed_in(request, conn, allow_bearer=True)


async def web_caller(request: Request, conn: ConnectionDep) -> Caller:
    return await _signed_in(request, conn, allow_bearer=False)


async def optional_web_caller(request: Request, conn: ConnectionDep) -> Caller | None:
    return await _session(request, conn, allow_bearer=False)


ApiCaller = Annotated[Caller, Depends(api_caller)]
WebCaller = Annotated[Caller, Depends(web_caller)]
OptionalWebCaller = Annotated[Caller | None, Depends(optional_web_caller)]


def set_session_cookie(response, portal: Portal, token: str) -> None:  # noqa: ANN001 - a starlette Response
    """HttpOnly (no script reads it), SameSite=Lax (not sent on cross-site posts), Secure when
    served over HTTPS; it lives as long as the session may."""
    response.set_cookie(SESSION_COOKIE, token, max_age=int(portal.settings.portal_session_max_age_seconds),
                        httponly=True, samesite="lax", secure=portal.settings.portal_cookie_secure, path="/")


def clear_session_cookie(response, portal: Portal) -> None:  # noqa: ANN001
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax",
                           secure=portal.settings.portal_cookie_secure, path="/")
