"""The mesh server's app factory. The lifespan owns the central database pool, the HTTP client
(health polls and the proxy) and the health monitor task."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from yggdrasil import __version__
from yggdrasil.background import cancel_and_wait
from yggdrasil.mesh.api.deps import MeshState
from yggdrasil.mesh.api.errors import install_error_handlers
from yggdrasil.mesh.api.routes import health, partnerships, proxy, registry, tenants
from yggdrasil.mesh.health_monitor import HealthMonitor
from yggdrasil.mesh.metrics import MeshMetrics
from yggdrasil.settings import Settings
from yggdrasil.web.database import open_pool
from yggdrasil.web.middleware import RequestContextMiddleware

log = logging.getLogger(__name__)

ADMIN_API_PREFIX = "/api/v1"
ADMIN_MODULES = (tenants, partnerships, health)


def create_app(settings: Settings) -> FastAPI:
    metrics = MeshMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool, _ = await open_pool(
            settings.central_dsn, name="mesh", application_name="ygg-mesh", min_size=1,
            max_size=settings.mesh_pool_max_size, timeout=5.0, log=log,
            # The registry is answered again as soon as the database is back.
            unreachable="central database unreachable at start-up; answering 503 until it is back",
        )
        # trust_env=False: an HTTP(S)_PROXY in the environment must not reroute tenant traffic.
        http = httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                 limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
        app.state.mesh = MeshState(settings, pool, http, metrics)
        tasks = []
        if settings.mesh_health_enabled:
            monitor = HealthMonitor(pool, http, metrics, interval=settings.mesh_health_interval_seconds,
                                    timeout=settings.mesh_health_timeout_seconds, slow_ms=settings.mesh_health_slow_ms,
                                    history_days=settings.mesh_health_history_days)
            tasks.append(asyncio.create_task(monitor.run(), name="health-monitor"))
        log.info("mesh server ready", extra={"health_monitor": settings.mesh_health_enabled})
        try:
            yield
        finally:
            await cancel_and_wait(tasks)
            await http.aclose()
            await pool.close()

    app = FastAPI(
        title="Yggdrasil mesh server",
        version=__version__,
        description="The coordination plane's registry of tenants and partnerships, the health of every "
                    "tenant server, and an API proxy to them. Admin endpoints under /api/v1 need an admin "
                    "token; /health, /metrics and /registry/v1 are public; /proxy takes the tenant's own token.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       access_log=logging.getLogger("yggdrasil.mesh.access"))
    for module in ADMIN_MODULES:
        app.include_router(module.router, prefix=ADMIN_API_PREFIX)
    app.include_router(registry.router)
    app.include_router(proxy.router)

    @app.get("/health", tags=["operations"], summary="Liveness and central database state (no authentication)")
    async def own_health(request: Request) -> JSONResponse:
        state: MeshState = request.app.state.mesh
        try:
            async with state.pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
            database = "up"
        except Exception:
            database = "down"
        return JSONResponse({"status": "ok" if database == "up" else "degraded", "service": "mesh",
                             "version": __version__, "database": {"state": database},
                             "health_monitor": settings.mesh_health_enabled})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
