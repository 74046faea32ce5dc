"""`ygg broker check` and `ygg broker ensure` as an operator runs them, against a real
nats-server with per-tenant credentials: exit 0 as declared, 1 with one line per drift, 2 with
one readable line when the broker is gone."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient

from yggdrasil.broker.permissions import ADMIN_USER, render_auth_config
from yggdrasil.broker.streams import (
    DEFAULT_MAX_AGE,
    declared_consumers,
    ensure_consumers,
    ensure_streams,
    stream_config,
    stream_name,
)
from yggdrasil.devstack.nats import EmbeddedNats

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "ACME-BROKER-ADMIN"
TENANTS = {"acme": "acme-secret", "bravo": "bravo-secret"}
YGG = str(Path(sys.executable).parent / "ygg")


@dataclass
class Result:
    code: int
    out: str
    err: str


async def ygg_broker(broker: EmbeddedNats, *args: str, **env: str) -> Result:
    environment = {**os.environ, "YGG_BROKER_URL": broker.url, "YGG_BROKER_ADMIN_PASSWORD": ADMIN_PASSWORD, **env}
    process = await asyncio.create_subprocess_exec(
        YGG, "broker", *args, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", auth_config=render_auth_config(TENANTS, admin_password=ADMIN_PASSWORD))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def admin(broker: EmbeddedNats) -> AsyncIterator[NatsClient]:
    """An admin connection on a broker that holds the declared streams and consumers."""
    nc = await nats.connect(broker.url, user=ADMIN_USER, password=ADMIN_PASSWORD)
    js = nc.jetstream()
    await ensure_streams(js)
    await ensure_consumers(js, declared_consumers(TENANTS))
    yield nc
    await nc.close()


async def test_check_exits_0_when_the_broker_is_as_declared(broker: EmbeddedNats, admin: NatsClient):
    result = await ygg_broker(broker, "check", "--tenant", "acme", "--tenant", "bravo")
    assert result.code == 0, result
    assert result.out.strip() == f"broker {broker.url}: streams and consumers as declared (consumers of acme, bravo)"


async def test_check_prints_one_line_per_drift_and_exits_1(broker: EmbeddedNats, admin: NatsClient):
    js = admin.jetstream()
    await js.update_stream(stream_config("sales", max_age=2 * 86400.0))
    await js.delete_consumer(stream_name("b2b"), "ygg-bravo-b2b")

    result = await ygg_broker(broker, "check", "--tenant", "bravo")
    assert result.code == 1, result
    assert result.out.splitlines() == [
        f"stream YGG_SALES: max_age is 172800.0, declared {DEFAULT_MAX_AGE!r}",
        "consumer YGG_B2B/ygg-bravo-b2b: missing",
    ]
    assert result.err.strip() == "2 difference(s) from the declaration"


async def test_check_finds_consumers_it_was_not_told_about(broker: EmbeddedNats, admin: NatsClient):
    """acme's consumers exist on the broker: they are checked without `--tenant acme`."""
    js = admin.jetstream()
    [spec] = [c for c in declared_consumers(["acme"]) if c.stream == stream_name("purchasing")]
    spec.config.ack_wait = 5.0
    await js.add_consumer(spec.stream, config=spec.config)

    result = await ygg_broker(broker, "check")
    assert result.code == 1, result
    assert result.out.splitlines() == ["consumer YGG_PURCHASING/ygg-acme-purchasing: ack_wait is 5.0, declared 30.0"]


async def test_check_compares_with_the_configured_retention(broker: EmbeddedNats, admin: NatsClient):
    configured = {"YGG_BROKER_STREAM_MAX_AGE_SECONDS": str(14 * 86400)}
    drifted = await ygg_broker(broker, "check", **configured)
    assert drifted.code == 1 and len(drifted.out.splitlines()) == 3, drifted  # all three streams

    fixed = await ygg_broker(broker, "ensure", **configured)
    assert fixed.code == 0, fixed
    assert "fixed: stream YGG_SALES: max_age is 604800.0, declared 1209600.0" in fixed.out.splitlines()
    assert (await ygg_broker(broker, "check", **configured)).code == 0


async def test_ensure_creates_streams_and_consumers_on_an_empty_broker(broker: EmbeddedNats):
    assert (await ygg_broker(broker, "check", "--tenant", "acme")).code == 1
    result = await ygg_broker(broker, "ensure", "--tenant", "acme")
    assert result.code == 0, result
    assert "fixed: consumer YGG_SALES/ygg-acme-sales: missing" in result.out
    assert (await ygg_broker(broker, "check", "--tenant", "acme")).code == 0


async def test_check_exits_2_with_one_line_when_the_broker_is_stopped(broker: EmbeddedNats, admin: NatsClient):
    broker.stop()
    result = await ygg_broker(broker, "check")
    assert result.code == 2, result
    assert result.out == ""
    assert result.err.splitlines() == [
        f"error: broker {broker.url}: unreachable (connection refused or timed out)"
    ]


async def test_check_exits_2_when_the_admin_password_is_wrong(broker: EmbeddedNats):
    result = await ygg_broker(broker, "check", YGG_BROKER_ADMIN_PASSWORD="not-the-password")
    assert result.code == 2, result
    assert len(result.err.splitlines()) == 1 and "refused the admin credentials" in result.err
