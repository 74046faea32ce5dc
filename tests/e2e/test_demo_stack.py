"""`ygg demo` as a user runs it: a real process tree, killed and stopped with real signals.
Helpers are in demo_harness.py, the `demo` fixture in conftest.py."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import httpx
import pytest
from demo_harness import (
    RESTART_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    DemoRun,
    demo,  # noqa: F401 - the fixture
    get_all,
    healthy,
    is_alive,
    processes_mentioning,
    read_stack,
)

pytestmark = pytest.mark.e2e


def test_demo_serves_seeded_tenants_restarts_a_killed_server_and_stops_cleanly(demo: DemoRun) -> None:
    process, state_dir, log = demo.process, demo.state_dir, demo.log
    stack_file = demo.stack_file

    # -- up, with both tenants healthy ----------------------------------------------------------
    stack = demo.wait_for(demo.stack, START_TIMEOUT, "stack.json")
    tenants = {t["id"]: t for t in stack["tenants"]}
    assert set(tenants) == {"acme", "bravo"}
    assert tenants["acme"]["name"] == "ACME Seller" and tenants["bravo"]["name"] == "BRAVO Buyer"
    # Later issues add the mesh and portal to this list.
    assert {"postgres", "broker", "tenant:acme", "tenant:bravo", "sidecar:acme", "sidecar:bravo"} <= set(
        stack["processes"])
    assert all(is_alive(pid) for pid in stack["processes"].values())
    assert stack["postgres"]["pid"] == stack["processes"]["postgres"]
    for tenant in tenants.values():
        assert tenant["url"].startswith("http://127.0.0.1:")
        assert healthy(tenant["url"])

    acme = httpx.Client(base_url=tenants["acme"]["url"], timeout=10.0,
                        headers={"Authorization": f"Bearer {tenants['acme']['admin_token']}"})
    bravo = httpx.Client(base_url=tenants["bravo"]["url"], timeout=10.0,
                         headers={"Authorization": f"Bearer {tenants['bravo']['admin_token']}"})
    with acme, bravo:
        # -- seeded through the API ---------------------------------------------------------------
        customers = {c["code"]: c for c in get_all(acme, "/api/v1/customers")}
        assert customers["BRAVO"]["partner_tenant_id"] == "bravo"
        suppliers = {s["code"]: s for s in get_all(bravo, "/api/v1/suppliers")}
        assert suppliers["ACME"]["partner_tenant_id"] == "acme"
        assert len(get_all(acme, "/api/v1/items")) >= 3
        assert len(get_all(acme, "/api/v1/warehouses")) >= 1
        sales = get_all(acme, "/api/v1/sales-orders")
        assert {"draft", "confirmed", "shipped", "cancelled"} <= {o["state"] for o in sales}
        purchases = get_all(bravo, "/api/v1/purchase-orders")
        assert {"draft", "confirmed", "received", "cancelled"} <= {o["state"] for o in purchases}

        # -- kill -9 a tenant server: restarted, same URL, same data ------------------------------
        old_pid = stack["processes"]["tenant:acme"]
        bravo_pid = stack["processes"]["tenant:bravo"]
        os.kill(old_pid, signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            current = read_stack(stack_file)
            new_pid = current and current["processes"].get("tenant:acme")
            return current if new_pid and new_pid != old_pid and healthy(tenants["acme"]["url"]) else None

        stack = demo.wait_for(restarted, RESTART_TIMEOUT, "tenant:acme to be restarted")
        assert not is_alive(old_pid)
        assert is_alive(stack["processes"]["tenant:acme"])
        assert stack["restarts"]["tenant:acme"] == 1
        assert stack["processes"]["tenant:bravo"] == bravo_pid  # the others were left alone
        assert {t["id"]: t["url"] for t in stack["tenants"]} == {k: t["url"] for k, t in tenants.items()}
        assert [o["id"] for o in get_all(acme, "/api/v1/sales-orders")] == [o["id"] for o in sales]
        assert get_all(acme, "/api/v1/customers")[0]["id"] == min(c["id"] for c in customers.values())

    # -- SIGTERM: exit 0, nothing left running ------------------------------------------------------
    recorded = [pid for pid in stack["processes"].values() if pid]
    assert len(recorded) == len(stack["processes"]) >= 6
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ygg demo did not stop within {STOP_TIMEOUT:.0f}s of SIGTERM:\n{log.read_text()[-4000:]}")
    assert code == 0, log.read_text()[-4000:]
    assert [pid for pid in recorded if is_alive(pid)] == []
    assert processes_mentioning(str(state_dir)) == []
    assert not stack_file.exists()
    # Data and logs stay for the next run.
    assert (state_dir / "postgres" / "PG_VERSION").exists()
    assert (state_dir / "logs" / "tenant-acme.log").exists()
