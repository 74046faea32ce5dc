"""The health history in ygg_central: each change of status recorded once, with where it came
from; old checks pruned while transitions and the current status stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from mesh_harness import register

from yggdrasil.mesh.adapters import health
from yggdrasil.mesh.domain.health import HealthObservation

pytestmark = pytest.mark.integration


async def test_transitions_are_recorded_on_change_only_and_old_checks_are_pruned(central_dsn: str) -> None:
    await register(central_dsn, "acme", "http://127.0.0.1:9")
    start = datetime.now(UTC) - timedelta(days=10)
    seen = ["up", "up", "degraded", "down", "down", "up"]
    async with await psycopg.AsyncConnection.connect(central_dsn, autocommit=True) as conn:
        recorded = []
        for n, status in enumerate(seen):
            observation = HealthObservation(status, None if status == "down" else 5.0, f"check {n}")
            recorded.append(await health.record_check(conn, "acme", observation, start + timedelta(days=2 * n)))
        assert [(r.previous, r.changed) for r in recorded] == [
            (None, True), ("up", False), ("up", True), ("degraded", True), ("down", False), ("down", True)]
        changes = await health.transitions(conn, tenant_id="acme", before=None, limit=10)
        assert [(t["from_status"], t["to_status"], t["detail"]) for t in reversed(changes)] == [
            (None, "up", "check 0"), ("up", "degraded", "check 2"), ("degraded", "down", "check 3"),
            ("down", "up", "check 5")]
        [current] = await health.current_statuses(conn, "acme")
        assert (current["health"], current["since"], current["detail"]) == ("up", start + timedelta(days=10), "check 5")

        # Checks of days 0, 2 are past a 7-day retention (day 4 is 6 days old).
        assert await health.prune_checks(conn, 7) == 2
        kept = await health.check_history(conn, "acme", before=None, limit=10)
        assert [c["detail"] for c in kept] == ["check 5", "check 4", "check 3", "check 2"]
        assert len(await health.transitions(conn, tenant_id="acme", before=None, limit=10)) == 4
