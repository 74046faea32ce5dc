"""The health monitor: polls every active tenant's `/health` on an interval and records what it
saw (yggdrasil.mesh.adapters.health). All tenants of a round are checked at once, each with its
own deadline, so one hanging tenant delays nobody; the next round starts one interval after the
previous one started (or at once, if a round took longer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import httpx
import psycopg
from psycopg_pool import AsyncConnectionPool

from yggdrasil.mesh.adapters import health as store
from yggdrasil.mesh.metrics import MeshMetrics
from yggdrasil.mesh.domain.health import HEALTH_STATUSES, HealthObservation, classify_answer, classify_failure

log = logging.getLogger(__name__)

# Pruning needs no precision; once an hour keeps the table at its retention.
PRUNE_EVERY_SECONDS = 3600.0


class HealthMonitor:
    def __init__(self, pool: AsyncConnectionPool, http: httpx.AsyncClient, metrics: MeshMetrics, *,
                 interval: float, timeout: float, slow_ms: float, history_days: float):
        self.pool = pool
        self.http = http
        self.metrics = metrics
        self.interval = interval
        self.timeout = timeout
        self.slow_ms = slow_ms
        self.history_days = history_days
        self._watched: set[str] = set()
        self._last_prune = float("-inf")

    async def run(self) -> None:
        """Poll until cancelled. A round that fails (the central database is down) is logged
        and the next one tries again."""
        log.info("health monitor started", extra={"interval_s": self.interval, "timeout_s": self.timeout})
        while True:
            started = time.monotonic()
            try:
                await self.poll_once()
                if started - self._last_prune >= PRUNE_EVERY_SECONDS:
                    await self.prune()
                    self._last_prune = started
            except Exception as exc:  # keep monitoring whatever one round met
                log.warning("health round failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def poll_once(self) -> dict[str, HealthObservation]:
        """Check every active tenant once, record the checks; returns what was seen."""
        async with self.pool.connection() as conn:
            tenants = await store.active_tenants(conn)
        self._forget_inactive({tenant_id for tenant_id, _ in tenants})
        observations = await asyncio.gather(*(self.check(tenant_id, url) for tenant_id, url in tenants))
        seen = {}
        for (tenant_id, _), observation in zip(tenants, observations, strict=True):
            try:
                await self._record(tenant_id, observation)
            except psycopg.IntegrityError:
                # The entry was deleted while we polled (an onboarding rolled back): nothing to record.
                log.info("tenant left the registry during a health round", extra={"tenant": tenant_id})
                continue
            seen[tenant_id] = observation
        return seen

    async def check(self, tenant_id: str, api_url: str) -> HealthObservation:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.http.get(f"{api_url}/health", timeout=self.timeout)
        except (TimeoutError, httpx.TimeoutException):
            return classify_failure(f"no answer within {self.timeout:g} s")
        except httpx.ConnectError as exc:
            return classify_failure(f"cannot connect to {api_url}: {exc or 'connection refused'}")
        except httpx.HTTPError as exc:
            return classify_failure(f"{type(exc).__name__} from {api_url}: {exc}")
        latency_ms = (time.perf_counter() - started) * 1000
        self.metrics.check_latency.labels(tenant_id).observe(latency_ms / 1000)
        return classify_answer(tenant_id, response.status_code, response.content, latency_ms, self.slow_ms)

    async def prune(self) -> int:
        async with self.pool.connection() as conn:
            removed = await store.prune_checks(conn, self.history_days)
        if removed:
            log.info("pruned old health checks", extra={"removed": removed, "older_than_days": self.history_days})
        return removed

    async def _record(self, tenant_id: str, observation: HealthObservation) -> None:
        async with self.pool.connection() as conn:
            recorded = await store.record_check(conn, tenant_id, observation, datetime.now(UTC))
        for status in HEALTH_STATUSES:
            self.metrics.tenant_health.labels(tenant_id, status).set(1 if status == observation.status else 0)
        self.metrics.checks.labels(tenant_id, observation.status).inc()
        if recorded.changed:
            level = logging.WARNING if observation.status != "up" else logging.INFO
            log.log(level, "tenant %s is %s (was %s): %s", tenant_id, observation.status,
                    recorded.previous or "unknown", observation.detail,
                    extra={"tenant": tenant_id, "health": observation.status, "previous": recorded.previous,
                           "latency_ms": None if observation.latency_ms is None else round(observation.latency_ms, 1)})

    def _forget_inactive(self, active: set[str]) -> None:
        """Drop the gauges of tenants no longer polled (suspended, departed), so a dashboard
        does not show a stale 'up' for them."""
        for tenant_id in self._watched - active:
            for status in HEALTH_STATUSES:
                try:
                    self.metrics.tenant_health.remove(tenant_id, status)
                except KeyError:
                    pass
        self._watched = active
