"""Prometheus metrics of one mesh app instance (its own registry, like the tenant server's)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class MeshMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # `requests` and `latency` are what the shared request middleware records.
        self.requests = Counter(
            "ygg_http_requests_total", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "ygg_http_request_duration_seconds", "HTTP request latency by route",
            ["route", "method"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
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
