"""Prometheus metrics of one mesh app instance: the request series every server has
(yggdrasil.web.metrics, under the same names as the tenant server's), tenant health and the proxy."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from yggdrasil.web.metrics import HttpMetrics


class MeshMetrics(HttpMetrics):
    def __init__(self) -> None:
        # Longer buckets than the tenant's: a proxied request waits for the tenant behind it.
        super().__init__("ygg", latency_buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                                 10, 30))
        self.tenant_health = Gauge(
            "ygg_mesh_tenant_health", "1 for the tenant's current health status (up, degraded, down), 0 otherwise",
            ["tenant", "status"], registry=self.registry,
        )
        self.check_latency = Histogram(
            "ygg_mesh_health_check_duration_seconds", "Latency of answered /health polls by tenant",
            ["tenant"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
        )
        self.checks = Counter(
            "ygg_mesh_health_checks_total", "Health polls by tenant and resulting status",
            ["tenant", "status"], registry=self.registry,
        )
        self.proxied = Counter(
            "ygg_mesh_proxy_requests_total",
            "Proxied requests by tenant and outcome (forwarded, unreachable, timeout, refused)",
            ["tenant", "outcome"], registry=self.registry,
        )
