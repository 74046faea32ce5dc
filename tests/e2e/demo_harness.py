"""Helpers for the tests that run `ygg demo` as a user does: a real process tree, killed and
stopped with real signals. The processes the demo records in stack.json are checked through
/proc (psutil is not a dependency).

The `demo` fixture starts `ygg demo` in its own session, so that a failing test can kill the
whole tree; test modules import it (`from demo_harness import demo`). It is not in a conftest.py
here because test modules import the root conftest by name. `running_demo` is the same as a
context manager, for a run that several tests share (a module-scoped fixture) or a second run on
the same state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

YGG = str(Path(sys.executable).parent / "ygg")
START_TIMEOUT = 180.0
RESTART_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

T = TypeVar("T")


@dataclass
class DemoRun:
    process: subprocess.Popen[bytes]
    state_dir: Path
    log: Path

    @property
    def stack_file(self) -> Path:
        return self.state_dir / "stack.json"

    def stack(self) -> dict[str, Any] | None:
        return read_stack(self.stack_file)

    def wait_for(self, condition: Callable[[], T | None], timeout: float, what: str) -> T:
        return wait_for(condition, timeout, what, self.process, self.log)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text()[-chars:]


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


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, demo: subprocess.Popen[bytes],
             log: Path) -> T:
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


def admin_client(tenant: dict[str, Any]) -> httpx.Client:
    return httpx.Client(base_url=tenant["url"], timeout=10.0,
                        headers={"Authorization": f"Bearer {tenant['admin_token']}"})


def sell_to_bravo(acme: httpx.Client, quantity: str) -> dict[str, Any]:
    """A confirmed sales order on acme for its customer BRAVO, of anvils (which bravo maps)."""
    [customer] = [c for c in get_all(acme, "/api/v1/customers") if c["partner_tenant_id"] == "bravo"]
    [anvil] = [i for i in get_all(acme, "/api/v1/items") if i["sku"] == "ACME-ANVIL"]
    warehouse = get_all(acme, "/api/v1/warehouses")[0]
    created = acme.post("/api/v1/sales-orders", json={
        "customer_id": customer["id"], "warehouse_id": warehouse["id"], "currency": "EUR",
        "lines": [{"item_id": anvil["id"], "quantity": quantity}],
    })
    assert created.status_code == 201, created.text
    confirmed = acme.post(f"/api/v1/sales-orders/{created.json()['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    return confirmed.json()


def federated_order(client: httpx.Client, path: str, source: str, order_id: int) -> dict[str, Any] | None:
    """The order at `path` (purchase-orders or sales-orders) that federated from `source`'s
    order `order_id`, if it has arrived."""
    for order in get_all(client, path):
        if order["b2b_source_tenant"] == source and order["b2b_source_order_id"] == str(order_id):
            return order
    return None


@contextlib.contextmanager
def running_demo(state_dir: Path, log: Path) -> Iterator[DemoRun]:
    """`ygg demo --no-view` in its own session; afterwards everything it started is killed."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [YGG, "demo", "--state-dir", str(state_dir), "--no-view"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    recorded: set[int] = set()
    try:
        yield DemoRun(process, state_dir, log)
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


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoRun]:
    with running_demo(tmp_path / "demo", tmp_path / "demo.out") as run:
        yield run
