"""`ygg sidecar run` as a real process: configured from the environment, applying events, and
stopping cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from yggdrasil.devstack.nats import EmbeddedNats
from yggdrasil.federation.keys import write_signing_key

from .b2b_harness import Tenant, eventually, purchase_orders, sell

pytestmark = pytest.mark.integration

# The root `ygg` registers sidecar_app as `ygg sidecar`; until then, run the group directly.
RUN_SIDECAR = "from yggdrasil.federation.cli import sidecar_app; sidecar_app(['run'])"


async def test_the_sidecar_process_applies_events_and_stops_cleanly_on_sigterm(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats, tmp_path: Path
):
    seller, buyer = federation
    processes = []
    for tenant in (seller, buyer):
        key_path = tmp_path / f"{tenant.id}.key"
        write_signing_key(key_path, tenant.key)
        env = {**os.environ, "YGG_TENANT_ID": tenant.id, "YGG_TENANT_DSN": tenant.dsn, "YGG_BROKER_URL": broker.url,
               "YGG_SIGNING_KEY_PATH": str(key_path), "YGG_LOG_JSON": "true", "YGG_OUTBOX_POLL_SECONDS": "0.5"}
        log = open(tmp_path / f"sidecar-{tenant.id}.log", "wb")  # noqa: SIM115 - closed below
        processes.append((subprocess.Popen([sys.executable, "-c", RUN_SIDECAR], env=env, stdout=log,
                                           stderr=subprocess.STDOUT), log))
    try:
        await sell(seller, "SO-6001")
        await eventually(lambda: purchase_orders(buyer), timeout=30, what="the purchase order")
        await eventually(lambda: seller.scalar("SELECT status FROM b2b_events") == "acknowledged", timeout=30,
                         what="the receipt")
        for process, _ in processes:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(timeout=15) for process, _ in processes] == [0, 0]
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    for tenant in (seller, buyer):
        log_text = (tmp_path / f"sidecar-{tenant.id}.log").read_text()
        assert '"broker: stopped"' in log_text
        assert "relay stopped" not in log_text and "publisher stopped" not in log_text  # no loop failed
