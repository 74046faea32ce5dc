"""What a tenant's `/health` answer means to the mesh: up, degraded or down.

The tenant server answers 200 with `{"status": "ok" | "degraded", "tenant_id", "database":
{"state": "up" | "down", ...}, "federation": {...}}` (tenant/api/app.py). Degraded there means
its database is down while it still serves cached reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

HEALTH_STATUSES = ("up", "degraded", "down")
MAX_DETAIL = 1000


@dataclass(frozen=True)
class HealthObservation:
    status: str
    # None when no answer came.
    latency_ms: float | None
    detail: str


def classify_answer(tenant_id: str, status_code: int, body: bytes, latency_ms: float,
                    slow_ms: float) -> HealthObservation:
    """up: 200 and the body says ok (and not slower than `slow_ms`); degraded: the tenant says
    degraded (200 or 503), or it is slow; down: any other answer, or the server at the URL is
    another tenant."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return HealthObservation("down", latency_ms, _short(f"HTTP {status_code}, not a tenant /health answer"))
    answering = payload.get("tenant_id")
    if answering is not None and answering != tenant_id:
        return HealthObservation("down", latency_ms,
                                 _short(f"the server at this URL is tenant {answering!r}, not {tenant_id!r}"))
    said = payload.get("status")
    database = payload.get("database") or {}
    database_state = database.get("state") if isinstance(database, dict) else None
    if status_code in (200, 503) and said == "degraded":
        detail = f"tenant reports degraded (database {database_state or 'unknown'})"
        return HealthObservation("degraded", latency_ms, _short(detail))
    if status_code == 200 and said == "ok":
        if latency_ms > slow_ms:
            detail = f"slow: answered in {latency_ms:.0f} ms (limit {slow_ms:.0f} ms)"
            return HealthObservation("degraded", latency_ms, detail)
        notes = ["ok"]
        federation = payload.get("federation")
        if isinstance(federation, dict) and federation.get("outbox_stalled"):
            notes.append("outbox stalled (broker or sidecar not getting through)")
        return HealthObservation("up", latency_ms, "; ".join(notes))
    return HealthObservation("down", latency_ms, _short(f"HTTP {status_code}, status {said!r}"))


def classify_failure(reason: str) -> HealthObservation:
    """No answer at all: refused, reset, timed out."""
    return HealthObservation("down", None, _short(reason))


def _short(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"
