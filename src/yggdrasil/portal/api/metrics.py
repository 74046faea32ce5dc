"""Prometheus metrics of one portal app: the request and pool series every server has
(yggdrasil.web.metrics), named `ygg_portal_*`, and sign-ins and CSRF refusals."""

from prometheus_client import Counter

from yggdrasil.web.metrics import HttpMetrics


class PortalMetrics(HttpMetrics):
    def __init__(self) -> None:
        super().__init__("ygg_portal", latency_buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.sign_ins = Counter("ygg_portal_sign_ins_total",
                                "Sign-in attempts by outcome (ok, failed, throttled)", ["outcome"],
                                registry=self.registry)
        self.csrf_refused = Counter("ygg_portal_csrf_refused_total",
                                    "State-changing requests refused for a missing or wrong CSRF token",
                                    registry=self.registry)
