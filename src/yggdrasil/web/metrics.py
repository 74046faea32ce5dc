"""Prometheus metrics of one app instance. A registry per app, not the global one, so that
several apps in one process (tests) do not collide. Each server subclasses `HttpMetrics` and
adds its own series; the request middleware records `requests` and `latency`."""

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from psycopg_pool import AsyncConnectionPool


class HttpMetrics:
    def __init__(self, prefix: str, latency_buckets: Sequence[float]) -> None:
        """`prefix` starts every series name this class makes (`ygg` gives
        `ygg_http_requests_total`, `ygg_db_pool_size`); dashboards read these names."""
        self.prefix = prefix
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"{prefix}_http_requests_total", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            f"{prefix}_http_request_duration_seconds", "HTTP request latency by route",
            ["route", "method"], registry=self.registry, buckets=tuple(latency_buckets),
        )

    def watch_pool(self, pool: AsyncConnectionPool) -> None:
        """Report the pool's size, idle connections and waiting requests on every scrape."""
        self.registry.register(_PoolCollector(pool, f"{self.prefix}_db"))


class _PoolCollector:
    def __init__(self, pool: AsyncConnectionPool, prefix: str) -> None:
        self.pool = pool
        self.prefix = prefix

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.pool.get_stats()
        for name, help_text in (
            ("pool_size", "connections in the pool, busy or idle"),
            ("pool_available", "idle connections ready for use"),
            ("requests_waiting", "requests waiting for a connection"),
        ):
            family = GaugeMetricFamily(f"{self.prefix}_{name}", help_text)
            family.add_metric([], stats.get(name, 0))
            yield family
