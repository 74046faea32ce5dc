"""The tenant server's app factory. The lifespan owns the pool and the background tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from yggdrasil import __version__
from yggdrasil.background import cancel_and_wait
from yggdrasil.settings import Settings
from yggdrasil.tenant.adapters.outbox import OutboxSummary, outbox_summary
from yggdrasil.tenant.api.cache import ResponseCache
from yggdrasil.tenant.api.changes import ChangeHub
from yggdrasil.tenant.api.database import Database
from yggdrasil.tenant.api.deps import TenantServices, _principal
from yggdrasil.tenant.api.errors import install_error_handlers
from yggdrasil.tenant.api.metrics import TenantMetrics
from yggdrasil.tenant.api.ratelimit import RateLimiter
from yggdrasil.tenant.api.routes import (
    approvals,
    audit,
    b2b,
    customers,
    items,
    partners,
    purchase_orders,
    reports,
    sales_orders,
    stock,
    suppliers,
    warehouses,
)
from yggdrasil.tenant.errors import DatabaseUnavailable
from yggdrasil.tenant.messages import MESSAGES
from yggdrasil.tenant.outbound import OutboundEvents
from yggdrasil.web.database import open_pool
from yggdrasil.web.middleware import API_PREFIX, RequestContextMiddleware

log = logging.getLogger(__name__)

API_MODULES = (customers, suppliers, items, warehouses, stock, sales_orders, purchase_orders, reports, audit,
               partners, approvals, b2b)


# An unpublished event older than this means the publisher is not getting through (the broker
# or the sidecar is down): /health says so, without calling the tenant unhealthy.
OUTBOX_STALLED_SECONDS = 60.0


async def _outbox_summary(services: TenantServices) -> OutboxSummary | None:
    """The federation backlog (one cheap query), also set as metrics; None if the database
    cannot be asked, which /health already reports."""
    if not services.db.up:
        return None
    try:
        summary = await services.db.read(outbox_summary)
    except DatabaseUnavailable:
        return None
    except psycopg.Error as error:  # /health must answer whatever happens to this query
        log.warning("cannot read the outbox summary", extra={"error": str(error)})
        return None
    services.metrics.set_outbox(summary)
    return summary


def _federation_health(summary: OutboxSummary) -> dict[str, object]:
    # Counts only: /health answers without a token, and a publish error can name hosts.
    oldest, synced = summary.oldest_pending_seconds, summary.registry_synced_seconds_ago
    return {
        "outbox_pending": summary.pending,
        "outbox_oldest_pending_seconds": round(oldest, 1) if oldest is not None else None,
        "outbox_failing": summary.failed_attempts,
        "outbox_stalled": oldest is not None and oldest > OUTBOX_STALLED_SECONDS,
        "quarantined": summary.quarantined,
        "approvals_waiting": summary.awaiting_approval,
        "awaiting_receipt": summary.awaiting_receipt,
        "receipt_overdue": summary.receipt_overdue,
        # How old the local copy of the mesh's partner registry is (the relay trusts only it).
        "registry_synced_seconds_ago": round(synced, 1) if synced is not None else None,
        "registry_sync_failures": summary.registry_sync_failures,
    }


def create_app(settings: Settings) -> FastAPI:
    metrics = TenantMetrics()
    # Read the key before serving: a configured but unreadable key is a start-up error, not a
    # surprise on the first partner order.
    outbound = OutboundEvents.from_key_file(settings.tenant_id, settings.signing_key_path, settings.max_event_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool, reachable = await open_pool(
            settings.tenant_dsn, name="tenant", application_name=f"ygg-tenant-{settings.tenant_id}",
            min_size=settings.pool_min_size, max_size=settings.pool_max_size, log=log,
            # The failure contract: serve what we can while the database is down, recover without a restart.
            unreachable="database unreachable at start-up; serving degraded until it is back",
        )
        db = Database(pool, settings.tenant_dsn, settings.db_timeout_seconds, settings.db_probe_interval_seconds)
        if not reachable:
            db.up = False
            db.suspect()
        cache = ResponseCache(settings.cache_max_bytes, settings.cache_ttl_seconds, settings.cache_max_stale_seconds)
        services = TenantServices(
            settings=settings, db=db, cache=cache,
            limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
            metrics=metrics,
            outbound=outbound,
        )
        metrics.watch_pool(pool)
        hub = ChangeHub(settings.tenant_dsn, cache)
        app.state.services = services
        app.state.hub = hub
        tasks = [asyncio.create_task(db.probe_forever(), name="db-probe"),
                 asyncio.create_task(hub.listen_forever(), name="change-listener")]
        log.info("tenant server ready", extra={"tenant": settings.tenant_id})
        try:
            yield
        finally:
            await cancel_and_wait(tasks)
            await pool.close()

    app = FastAPI(
        title=f"Yggdrasil tenant server ({settings.tenant_id})",
        version=__version__,
        description="A company's own ERP server: master data, stock, sales and purchase orders, "
                    "reports and an audit trail written in the same transaction as each change.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       access_log=logging.getLogger("yggdrasil.tenant.access"),
                       too_large_message=MESSAGES["request.too_large"])

    for module in API_MODULES:
        app.include_router(module.router, prefix=API_PREFIX)

    @app.get("/health", tags=["operations"], summary="Liveness and database state (no authentication)")
    async def health(request: Request) -> JSONResponse:
        services: TenantServices = request.app.state.services
        db_state = services.db.state()
        metrics.database_up.set(1 if services.db.up else 0)
        summary = await _outbox_summary(services)
        return JSONResponse({
            # The broker's state does not count: with it down the tenant keeps working, and the
            # outbox backlog below shows what waits for it.
            "status": "ok" if services.db.up else "degraded",
            "tenant_id": settings.tenant_id,
            "version": __version__,
            "database": db_state,
            "cache": {"entries": len(services.cache), "bytes": services.cache.size_bytes},
            "change_listener": "connected" if request.app.state.hub.connected.is_set() else "disconnected",
            "federation": _federation_health(summary) if summary is not None else None,
        })

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics(request: Request) -> Response:
        services: TenantServices = request.app.state.services
        metrics.database_up.set(1 if services.db.up else 0)
        await _outbox_summary(services)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws")
    async def changes(websocket: WebSocket) -> None:
        """Change notifications: one JSON message {table, id, op} per committed row change.
        Authenticate with `?token=` (browsers cannot set headers on WebSocket requests)."""
        token = websocket.query_params.get("token") or websocket.headers.get("authorization", "").removeprefix("Bearer ").strip()
        try:
            principal = await _principal(websocket.app.state.services, token) if token else None
        except DatabaseUnavailable:
            principal = None
        if principal is None:
            await websocket.close(code=4401, reason="a valid token is required")
            return
        await websocket.accept()
        hub: ChangeHub = websocket.app.state.hub
        hub.clients.add(websocket)
        try:
            while True:
                await websocket.receive_text()  # we only push; reading notices the close
        except WebSocketDisconnect:
            pass
        finally:
            hub.clients.discard(websocket)

    return app
