"""Health monitoring against real processes: a real `ygg tenant serve`, stopped and started
again on its port, watched by a real `ygg mesh serve`; history, transitions and metrics."""

from __future__ import annotations

import time

import httpx
import pytest
from mesh_harness import admin_token, bearer, mesh_server, register, running, tenant_server, tenant_token, wait_until

from yggdrasil.devstack.ports import free_port

pytestmark = pytest.mark.integration

INTERVAL = 1.0
PROXY_TIMEOUT = 3.0


async def test_a_stopped_tenant_is_marked_down_within_two_intervals_and_up_within_two_after_restart(
        central_dsn: str, tenant_dsn: str, tmp_path) -> None:
    tenant = tenant_server(tenant_dsn, "acme", free_port(), tmp_path)
    await register(central_dsn, "acme", tenant.url)
    token = tenant_token(tenant_dsn, "acme")
    mesh = mesh_server(central_dsn, free_port(), tmp_path, YGG_MESH_HEALTH_INTERVAL_SECONDS=str(INTERVAL),
                       YGG_MESH_HEALTH_TIMEOUT_SECONDS="0.8", YGG_MESH_PROXY_TIMEOUT_SECONDS=str(PROXY_TIMEOUT))
    with running(tenant, mesh):
        async with httpx.AsyncClient(base_url=mesh.url, headers=bearer(admin_token(central_dsn))) as admin:
            async def health_is(expected: str) -> bool:
                return (await admin.get("/api/v1/health/tenants/acme")).json()["health"] == expected

            assert await wait_until(lambda: health_is("up"), 3 * INTERVAL + 10)

            tenant.terminate()  # returns when the process is gone
            stopped = time.monotonic()
            assert await wait_until(lambda: health_is("down"), 2 * INTERVAL + 5)
            assert time.monotonic() - stopped <= 2 * INTERVAL

            # Meanwhile the proxy says so at once, naming the tenant.
            started = time.monotonic()
            answer = await admin.get("/proxy/acme/api/v1/customers", headers=bearer(token))
            assert answer.status_code == 502
            assert answer.json()["error"]["code"] == "proxy.tenant_unreachable"
            assert answer.json()["error"]["message"].startswith(f"tenant acme cannot be reached at {tenant.url}")
            assert time.monotonic() - started < PROXY_TIMEOUT

            tenant.start()  # the same port; returns when its /health answers
            restarted = time.monotonic()
            assert await wait_until(lambda: health_is("up"), 2 * INTERVAL + 5)
            assert time.monotonic() - restarted <= 2 * INTERVAL

            current = (await admin.get("/api/v1/health/tenants")).json()["items"]
            assert [(c["tenant_id"], c["registry_status"], c["health"]) for c in current] == [("acme", "active", "up")]
            transitions = (await admin.get("/api/v1/health/transitions", params={"tenant": "acme"})).json()["items"]
            changes = [(t["from_status"], t["to_status"]) for t in reversed(transitions)]
            # The first poll may have come before the tenant server was ready (both start together).
            assert changes[0][0] is None and changes[-3:] == [(changes[-3][0], "up"), ("up", "down"), ("down", "up")]
            assert "cannot connect" in transitions[1]["detail"]

            history = (await admin.get("/api/v1/health/tenants/acme/checks", params={"limit": 2})).json()
            assert len(history["items"]) == 2 and history["next_before"] == history["items"][-1]["id"]
            everything = (await admin.get("/api/v1/health/tenants/acme/checks", params={"limit": 500})).json()["items"]
            statuses = {c["status"] for c in everything}
            assert statuses == {"up", "down"}
            assert all(c["latency_ms"] is None for c in everything if c["status"] == "down")
            assert all(c["latency_ms"] > 0 and c["detail"].startswith("ok") for c in everything if c["status"] == "up")

            metrics = (await admin.get("/metrics")).text
            assert 'ygg_mesh_tenant_health{status="up",tenant="acme"} 1.0' in metrics
            assert 'ygg_mesh_tenant_health{status="down",tenant="acme"} 0.0' in metrics
            assert 'ygg_mesh_health_check_duration_seconds_count{tenant="acme"}' in metrics
