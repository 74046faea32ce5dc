"""The portal's app factory. The lifespan owns the connection pool; nothing else is kept between
requests (sessions, CSRF tokens and sign-in counters are rows in ygg_central), so any number of
copies can serve behind one address and a killed one loses nothing."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from yggdrasil import __version__
from yggdrasil.portal.adapters import CONNECTION_KWARGS
from yggdrasil.portal.api.deps import Portal
from yggdrasil.portal.api.errors import install_error_handlers
from yggdrasil.portal.api.metrics import PortalMetrics
from yggdrasil.portal.api.pages import Pages
from yggdrasil.portal.api.routes import account, organizations, tickets, web
from yggdrasil.portal.domain.accounts import Passwords, ThrottlePolicy
from yggdrasil.settings import Settings
from yggdrasil.web.database import is_connection_failure, open_pool
from yggdrasil.web.middleware import API_PREFIX, RequestContextMiddleware

log = logging.getLogger(__name__)

API_MODULES = (account, organizations, tickets)
HEALTH_TIMEOUT_SECONDS = 2.0
# On every answer (pages add their Content-Security-Policy where they are rendered).
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


def create_app(settings: Settings) -> FastAPI:
    metrics = PortalMetrics()
    pages = Pages()
    passwords = Passwords(settings.portal_argon2_time_cost, settings.portal_argon2_memory_kib,
                          settings.portal_argon2_parallelism)
    throttle = ThrottlePolicy(
        max_failures=settings.portal_login_max_failures,
        max_failures_per_address=settings.portal_login_max_failures_per_address,
        window_seconds=settings.portal_login_failure_window_seconds,
        lockout_seconds=settings.portal_login_lockout_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool, _ = await open_pool(
            settings.central_dsn, name="portal", application_name="ygg-portal", min_size=1,
            max_size=settings.portal_pool_max_size, connect_kwargs=CONNECTION_KWARGS, log=log,
            unreachable="database unreachable at start-up; answering 503 until it is back",
        )
        metrics.watch_pool(pool)
        app.state.portal = Portal(settings=settings, pool=pool, passwords=passwords, throttle=throttle,
                                  metrics=metrics)
        log.info("portal ready")
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="Yggdrasil customer portal",
        version=__version__,
        description="Organizations, their members and roles, subscriptions and support tickets. "
                    "Sign in with POST /api/v1/session and send the token as `Authorization: Bearer <token>`; "
                    "or use the session cookie and send the CSRF token in `X-CSRF-Token` with every change.",
        lifespan=lifespan,
    )
    app.state.pages = pages
    install_error_handlers(app, pages)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       access_log=logging.getLogger("yggdrasil.portal.access"),
                       too_large_message="the request body is larger than {limit} bytes", extra_headers=SECURITY_HEADERS)
    for module in API_MODULES:
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(web.router)

    @app.get("/health", tags=["operations"], summary="Liveness and database reachability (no authentication)")
    async def health(request: Request) -> JSONResponse:
        portal: Portal = request.app.state.portal
        try:
            async with portal.pool.connection(timeout=HEALTH_TIMEOUT_SECONDS) as conn:
                await asyncio.wait_for(conn.execute("SELECT 1"), HEALTH_TIMEOUT_SECONDS)
            database = "up"
        except (psycopg.Error, TimeoutError) as exc:
            if not (is_connection_failure(exc) or isinstance(exc, TimeoutError)):
                raise
            database = "down"
        # Without its database the portal can do nothing useful: say so to the load balancer.
        return JSONResponse({"status": "ok" if database == "up" else "unavailable", "version": __version__,
                             "database": database}, status_code=200 if database == "up" else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
