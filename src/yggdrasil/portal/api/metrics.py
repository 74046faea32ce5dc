"""Prometheus metrics of one portal app. A registry per app (not the global one), so that
several apps in one process (tests) do not collide."""

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily


class PortalMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ygg_portal_http_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("ygg_portal_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route", "method"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.sign_ins = Counter("ygg_portal_sign_ins_total",
                                "Sign-in attempts by outcome (ok, failed, throttled)", ["outcome"],
                                registry=self.registry)
        self.csrf_refused = Counter("ygg_portal_csrf_refused_total",
                                    "State-changing requests refused for a missing or wrong CSRF token",
                                    registry=self.registry)

    def watch_pool(self, pool) -> None:  # noqa: ANN001 - psycopg_pool.AsyncConnectionPool
        self.registry.register(_PoolCollector(pool))


class _PoolCollector:
    def __init__(self, pool) -> None:  # noqa: ANN001
        self.pool = pool

    def collect(self):  # noqa: ANN201
        stats = self.pool.get_stats()
        for name, help_text in (("pool_size", "connections in the pool, busy or idle"),
                                ("pool_available", "idle connections ready for use"),
                                ("requests_waiting", "requests waiting for a connection")):
            family = GaugeMetricFamily(f"ygg_portal_db_{name}", help_text)
            family.add_metric([], stats.get(name, 0))
            yield family
