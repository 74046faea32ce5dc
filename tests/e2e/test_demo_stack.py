"""`ygg demo` as a user runs it: a real process tree, killed and stopped with real signals.

The demo is started in its own session, so that a failing test can kill the whole tree; the
processes it records in stack.json are checked through /proc (psutil is not a dependency).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

YGG = str(Path(sys.executable).parent / "ygg")
START_TIMEOUT = 180.0
RESTART_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def is_alive(pid: int) -> bool:
    """Running (zombies count as gone: they hold no resources and only await their reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (e.g. the demo's state directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and is_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def read_stack(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_for(condition, timeout: float, what: str, demo: subprocess.Popen[bytes], log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if demo.poll() is not None:
            pytest.fail(f"ygg demo exited with {demo.returncode} while waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}:\n{log.read_text()[-4000:]}")


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def get_all(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    response = client.get(path, params={"limit": 500})
    assert response.status_code == 200, response.text
    return response.json()["items"]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    state_dir = tmp_path / "demo"
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [YGG, "demo", "--state-dir", str(state_dir)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    recorded: set[int] = set()
    try:
        yield process, state_dir, log
    finally:
        stack = read_stack(state_dir / "stack.json")
        if stack:
            recorded.update(pid for pid in stack["processes"].values() if pid)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # The children run in their own sessions; whatever a failed run left behind goes too.
        for pid in recorded | set(processes_mentioning(str(state_dir))):
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_demo_serves_seeded_tenants_restarts_a_killed_server_and_stops_cleanly(demo) -> None:
    process, state_dir, log = demo
    stack_file = state_dir / "stack.json"

    # -- up, with both tenants healthy ----------------------------------------------------------
    stack = wait_for(lambda: read_stack(stack_file), START_TIMEOUT, "stack.json", process, log)
    tenants = {t["id"]: t for t in stack["tenants"]}
    assert set(tenants) == {"acme", "bravo"}
    assert tenants["acme"]["name"] == "ACME Seller" and tenants["bravo"]["name"] == "BRAVO Buyer"
    # Later issues add the broker, sidecars, mesh and portal to this list.
    assert {"postgres", "tenant:acme", "tenant:bravo"} <= set(stack["processes"])
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

        stack = wait_for(restarted, RESTART_TIMEOUT, "tenant:acme to be restarted", process, log)
        assert not is_alive(old_pid)
        assert is_alive(stack["processes"]["tenant:acme"])
        assert stack["restarts"]["tenant:acme"] == 1
        assert stack["processes"]["tenant:bravo"] == bravo_pid  # the others were left alone
        assert {t["id"]: t["url"] for t in stack["tenants"]} == {k: t["url"] for k, t in tenants.items()}
        assert [o["id"] for o in get_all(acme, "/api/v1/sales-orders")] == [o["id"] for o in sales]
        assert get_all(acme, "/api/v1/customers")[0]["id"] == min(c["id"] for c in customers.values())

    # -- SIGTERM: exit 0, nothing left running ------------------------------------------------------
    recorded = [pid for pid in stack["processes"].values() if pid]
    assert len(recorded) == len(stack["processes"]) >= 3
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
