"""The demo's tenants trade both ways through the supervised broker and sidecars: a sales order
on acme for its customer BRAVO becomes a purchase order on bravo, also after the sidecar was
killed with SIGKILL; SIGTERM stops every process, sidecars and broker included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from demo_harness import (
    RESTART_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    YGG,
    DemoRun,
    demo,  # noqa: F401 - the fixture
    admin_client,
    federated_order,
    get_all,
    is_alive,
    processes_mentioning,
    sell_to_bravo,
)

pytestmark = pytest.mark.e2e

FLOW_TIMEOUT = 30.0


def federated_stack(demo: DemoRun) -> dict[str, Any] | None:
    stack = demo.stack()
    if not stack or not stack.get("broker"):
        return None
    processes = stack["processes"]
    wanted = ("broker", "sidecar:acme", "sidecar:bravo")
    return stack if all(processes.get(name) for name in wanted) else None


def purchase_order_from_acme(bravo: httpx.Client, order_id: int) -> dict[str, Any] | None:
    return federated_order(bravo, "/api/v1/purchase-orders", "acme", order_id)


def outbox_statuses(dsn: str, order_id: int) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT status FROM b2b_events WHERE aggregate_type = 'sales_order' "
                            "AND aggregate_id = %s ORDER BY sequence", (str(order_id),)).fetchall()
    return [status for (status,) in rows]


def ygg_broker_check(stack: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    from yggdrasil.cli import app

    registered = any(group.name == "broker" for group in app.registered_groups)
    command = [YGG, "broker"] if registered else [
        sys.executable, "-c", "from yggdrasil.broker.cli import broker_app; broker_app(prog_name='ygg broker')"]
    env = {**os.environ, "YGG_BROKER_URL": stack["broker"]["url"],
           "YGG_BROKER_ADMIN_PASSWORD": stack["broker"]["admin_password"]}
    return subprocess.run([*command, "check"], env=env, capture_output=True, text=True, timeout=30)


def test_orders_flow_both_ways_and_survive_a_killed_sidecar(demo: DemoRun) -> None:
    stack = demo.wait_for(lambda: federated_stack(demo), START_TIMEOUT, "stack.json with broker and sidecars")
    tenants = {t["id"]: t for t in stack["tenants"]}
    broker = stack["broker"]
    assert broker["pid"] == stack["processes"]["broker"] and is_alive(broker["pid"])
    assert broker["url"].startswith("nats://127.0.0.1:") and broker["monitor_url"].startswith("http://127.0.0.1:")
    assert httpx.get(f"{broker['monitor_url']}/healthz?js-enabled-only=true", timeout=5).status_code == 200
    check = ygg_broker_check(stack)
    assert check.returncode == 0, check.stdout + check.stderr

    with admin_client(tenants["acme"]) as acme, admin_client(tenants["bravo"]) as bravo:
        # -- the seeded trade arrived both ways -----------------------------------------------------
        def seeded_trade() -> bool:
            from_acme = [o for o in get_all(bravo, "/api/v1/purchase-orders") if o["b2b_source_tenant"] == "acme"]
            from_bravo = [o for o in get_all(acme, "/api/v1/purchase-orders") if o["b2b_source_tenant"] == "bravo"]
            # and each buyer's sample purchase order became a sales order at its seller
            so_from_bravo = [o for o in get_all(acme, "/api/v1/sales-orders") if o["b2b_source_tenant"] == "bravo"]
            so_from_acme = [o for o in get_all(bravo, "/api/v1/sales-orders") if o["b2b_source_tenant"] == "acme"]
            return len(from_acme) >= 3 and len(from_bravo) >= 3 and len(so_from_bravo) == 1 and len(so_from_acme) == 1

        demo.wait_for(seeded_trade, FLOW_TIMEOUT, "the sample orders to arrive on both sides")

        # -- a new order on acme becomes bravo's purchase order --------------------------------------
        order = sell_to_bravo(acme, "2")
        def confirmed_purchase() -> dict[str, Any] | None:
            purchase = purchase_order_from_acme(bravo, order["id"])
            return purchase if purchase and purchase["state"] == "confirmed" else None

        purchase = demo.wait_for(confirmed_purchase, FLOW_TIMEOUT,
                                 f"bravo's confirmed purchase order for acme's order {order['id']}")
        assert [Decimal(line["quantity"]) for line in purchase["lines"]] == [Decimal(2)]
        demo.wait_for(lambda: outbox_statuses(tenants["acme"]["dsn"], order["id"]) == ["acknowledged"] * 2,
                      FLOW_TIMEOUT, "bravo's receipts for acme's events")

        # -- kill -9 acme's sidecar: restarted, and orders written meanwhile still arrive ------------
        old_pid = stack["processes"]["sidecar:acme"]
        os.kill(old_pid, signal.SIGKILL)
        later = sell_to_bravo(acme, "3")  # pending in acme's outbox while its sidecar is down

        def restarted() -> dict[str, Any] | None:
            current = demo.stack()
            new_pid = current and current["processes"].get("sidecar:acme")
            return current if new_pid and new_pid != old_pid and is_alive(new_pid) else None

        stack = demo.wait_for(restarted, RESTART_TIMEOUT, "sidecar:acme to be restarted")
        assert stack["restarts"]["sidecar:acme"] == 1
        assert not is_alive(old_pid)
        demo.wait_for(lambda: purchase_order_from_acme(bravo, later["id"]), FLOW_TIMEOUT,
                      f"bravo's purchase order for acme's order {later['id']}, after the restart")
        last = sell_to_bravo(acme, "4")
        demo.wait_for(lambda: purchase_order_from_acme(bravo, last["id"]), FLOW_TIMEOUT,
                      f"bravo's purchase order for acme's order {last['id']}")
        # Exactly one purchase order per sales order.
        linked = [o["b2b_source_order_id"] for o in get_all(bravo, "/api/v1/purchase-orders")
                  if o["b2b_source_tenant"] == "acme"]
        assert len(linked) == len(set(linked))

    # -- SIGTERM: nothing left running: postgres, broker, tenant servers, sidecars -------------------
    stack = demo.stack()
    assert stack is not None
    recorded = {name: pid for name, pid in stack["processes"].items() if pid}
    assert set(recorded) == {"postgres", "broker", "tenant:acme", "tenant:bravo", "sidecar:acme", "sidecar:bravo",
                             "mesh", "portal"}
    demo.process.send_signal(signal.SIGTERM)
    try:
        code = demo.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ygg demo did not stop within {STOP_TIMEOUT:.0f}s of SIGTERM:\n{demo.tail()}")
    assert code == 0, demo.tail()
    assert {name: pid for name, pid in recorded.items() if is_alive(pid)} == {}
    assert processes_mentioning(str(demo.state_dir)) == []
    assert not demo.stack_file.exists()
