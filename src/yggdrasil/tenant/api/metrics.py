"""Prometheus metrics of the tenant server: the request series every server has
(yggdrasil.web.metrics), the cache, the rate limiter, the database and the federation backlog."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from yggdrasil.web.metrics import HttpMetrics


class TenantMetrics(HttpMetrics):
    def __init__(self) -> None:
        super().__init__("ygg", latency_buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.cache = Counter(
            "ygg_cache_requests_total", "Cache lookups by result (hit, miss, stale)",
            ["result"], registry=self.registry,
        )
        self.cache_bytes = Gauge("ygg_cache_bytes", "Bytes held by the response cache", registry=self.registry)
        self.rate_limited = Counter(
            "ygg_rate_limited_total", "Requests refused by the rate limiter", registry=self.registry
        )
        self.database_up = Gauge("ygg_database_up", "1 when the tenant database is reachable", registry=self.registry)
        # The federation's backlog, read from the database on each scrape (set_outbox).
        self.outbox_pending = Gauge(
            "ygg_outbox_pending_events", "Outbound events not yet published to the broker", registry=self.registry)
        self.outbox_oldest_pending = Gauge(
            "ygg_outbox_oldest_pending_seconds", "Age of the oldest unpublished outbound event (0 when none)",
            registry=self.registry)
        self.outbox_failing = Gauge(
            "ygg_outbox_failing_events", "Unpublished outbound events whose last publish attempt failed",
            registry=self.registry)
        self.b2b_quarantined = Gauge(
            "ygg_b2b_quarantined_messages", "Inbound messages refused by a check and kept in quarantine",
            registry=self.registry)
        self.b2b_approvals_waiting = Gauge(
            "ygg_b2b_approvals_waiting", "Inbound documents waiting for a person's decision", registry=self.registry)
        self.outbox_awaiting_receipt = Gauge(
            "ygg_outbox_awaiting_receipt_events", "Published events the partner has not answered yet",
            registry=self.registry)
        self.outbox_receipt_overdue = Gauge(
            "ygg_outbox_receipt_overdue_events", "Published events past the receipt timeout (being re-sent)",
            registry=self.registry)

    def set_outbox(self, summary) -> None:  # noqa: ANN001 - adapters.outbox.OutboxSummary
        self.outbox_pending.set(summary.pending)
        self.outbox_oldest_pending.set(summary.oldest_pending_seconds or 0)
        self.outbox_failing.set(summary.failed_attempts)
        self.b2b_quarantined.set(summary.quarantined)
        self.b2b_approvals_waiting.set(summary.awaiting_approval)
        self.outbox_awaiting_receipt.set(summary.awaiting_receipt)
        self.outbox_receipt_overdue.set(summary.receipt_overdue)
