"""Stream declarations, de-duplication and tenant permissions against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError

from yggdrasil.broker.permissions import ADMIN_USER, inbox_prefix, render_auth_config
from yggdrasil.broker.streams import (
    check_streams,
    consumer_spec,
    declared_consumers,
    ensure_consumers,
    ensure_streams,
    stream_config,
    stream_name,
)
from yggdrasil.broker.subjects import event_subject
from yggdrasil.devstack.nats import EmbeddedNats

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-secret"
TENANT_PASSWORDS = {"acme-seller": "acme-secret", "bravo-buyer": "bravo-secret"}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[EmbeddedNats]:
    auth = render_auth_config(TENANT_PASSWORDS, admin_password=ADMIN_PASSWORD)
    server = EmbeddedNats(tmp_path / "nats", auth_config=auth)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def admin(broker: EmbeddedNats) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(broker.url)
    yield nc
    await nc.close()


@pytest.fixture
async def secured_admin(secured_broker: EmbeddedNats) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(secured_broker.url, user=ADMIN_USER, password=ADMIN_PASSWORD)
    await ensure_streams(nc.jetstream())
    yield nc
    await nc.close()


async def connect_tenant(broker: EmbeddedNats, tenant: str, errors: list[Exception]) -> NatsClient:
    async def collect(error: Exception) -> None:
        errors.append(error)

    return await nats.connect(broker.url, user=tenant, password=TENANT_PASSWORDS[tenant],
                              inbox_prefix=inbox_prefix(tenant), error_cb=collect)


async def test_ensure_streams_creates_every_declared_stream_without_drift(admin: NatsClient):
    js = admin.jetstream()
    assert [d.field for d in await check_streams(js)] == ["exists"] * 3
    await ensure_streams(js)
    await ensure_streams(js)  # idempotent
    consumers = declared_consumers(["acme-seller", "bravo-buyer"])
    await ensure_consumers(js, consumers)
    assert await check_streams(js, consumers=consumers) == []


async def test_the_same_msg_id_published_twice_is_stored_once(admin: NatsClient):
    js = admin.jetstream()
    await ensure_streams(js)
    subject = event_subject("sales", "bravo-buyer", "acme-seller")
    first = await js.publish(subject, b"order", headers={"Nats-Msg-Id": "event-1"})
    retry = await js.publish(subject, b"order", headers={"Nats-Msg-Id": "event-1"})
    assert (first.duplicate, retry.duplicate) == (None, True)
    assert retry.seq == first.seq
    assert (await js.stream_info(stream_name("sales"))).state.messages == 1


async def test_check_streams_reports_drift_after_a_manual_change(admin: NatsClient):
    js = admin.jetstream()
    await ensure_streams(js)
    changed = stream_config("sales").evolve(max_age=14 * 86400.0)
    await js.update_stream(changed)
    drifts = await check_streams(js)
    assert [(d.name, d.field, d.actual) for d in drifts] == [("YGG_SALES", "max_age", 14 * 86400.0)]
    await ensure_streams(js)
    assert await check_streams(js) == []


async def test_check_streams_reports_a_consumer_changed_by_hand(admin: NatsClient):
    js = admin.jetstream()
    await ensure_streams(js)
    spec = consumer_spec("bravo-buyer", "sales")
    await ensure_consumers(js, [spec])
    await js.add_consumer(spec.stream, config=spec.config.evolve(max_ack_pending=7))
    drifts = await check_streams(js, consumers=[spec])
    assert [(d.name, d.field, d.actual) for d in drifts] == [
        ("YGG_SALES/ygg-bravo-buyer-sales", "max_ack_pending", 7)
    ]


async def test_acknowledged_event_survives_a_broker_crash(broker: EmbeddedNats):
    nc = await nats.connect(broker.url, max_reconnect_attempts=0)
    js = nc.jetstream()
    await ensure_streams(js)
    await js.publish(event_subject("sales", "bravo-buyer", "acme-seller"), b"order",
                     headers={"Nats-Msg-Id": "event-1"})
    await nc.close()
    port = broker.port
    broker.kill()
    broker.start()
    assert broker.port == port
    nc = await nats.connect(broker.url)
    try:
        assert (await nc.jetstream().stream_info(stream_name("sales"))).state.messages == 1
    finally:
        await nc.close()


async def test_tenant_can_publish_as_itself(secured_broker: EmbeddedNats, secured_admin: NatsClient):
    errors: list[Exception] = []
    acme = await connect_tenant(secured_broker, "acme-seller", errors)
    try:
        ack = await acme.jetstream().publish(event_subject("sales", "bravo-buyer", "acme-seller"), b"order",
                                             headers={"Nats-Msg-Id": "event-1"})
        assert ack.stream == "YGG_SALES"
    finally:
        await acme.close()
    assert errors == []


async def test_tenant_cannot_publish_with_another_tenant_as_source(
    secured_broker: EmbeddedNats, secured_admin: NatsClient
):
    errors: list[Exception] = []
    acme = await connect_tenant(secured_broker, "acme-seller", errors)
    try:
        with pytest.raises(NatsTimeoutError):
            await acme.jetstream().publish(event_subject("sales", "acme-seller", "bravo-buyer"), b"forged",
                                           headers={"Nats-Msg-Id": "forged-1"}, timeout=1)
    finally:
        await acme.close()
    assert any("permissions violation" in str(error).lower() for error in errors)
    info = await secured_admin.jetstream().stream_info(stream_name("sales"))
    assert info.state.messages == 0


async def test_tenant_consumes_and_acks_only_events_addressed_to_it(
    secured_broker: EmbeddedNats, secured_admin: NatsClient
):
    admin_js = secured_admin.jetstream()
    for destination in ("bravo-buyer", "acme-seller"):
        # Publishing as the admin: only the destination differs between the two events.
        source = "acme-seller" if destination == "bravo-buyer" else "bravo-buyer"
        await admin_js.publish(event_subject("sales", destination, source), destination.encode())
    errors: list[Exception] = []
    bravo = await connect_tenant(secured_broker, "bravo-buyer", errors)
    try:
        spec = consumer_spec("bravo-buyer", "sales")
        sub = await bravo.jetstream().pull_subscribe(spec.config.filter_subject, durable=spec.durable,
                                                     stream=spec.stream, config=spec.config)
        messages = await sub.fetch(batch=10, timeout=2)
        assert [m.data for m in messages] == [b"bravo-buyer"]
        await messages[0].ack_sync()
        info = await admin_js.consumer_info(spec.stream, spec.durable)
        assert info.ack_floor.stream_seq == 1 and info.num_ack_pending == 0
    finally:
        await bravo.close()
    assert errors == []


async def test_tenant_cannot_create_a_consumer_for_another_tenants_events(
    secured_broker: EmbeddedNats, secured_admin: NatsClient
):
    errors: list[Exception] = []
    bravo = await connect_tenant(secured_broker, "bravo-buyer", errors)
    try:
        spec = consumer_spec("bravo-buyer", "sales")
        snooping = spec.config.evolve(filter_subject="ygg.events.sales.acme-seller.*")
        with pytest.raises((NatsTimeoutError, APIError)):
            await bravo.jetstream().add_consumer(spec.stream, config=snooping, timeout=1)
        everything = spec.config.evolve(filter_subject="ygg.events.sales.>")
        with pytest.raises((NatsTimeoutError, APIError)):
            await bravo.jetstream().add_consumer(spec.stream, config=everything, timeout=1)
    finally:
        await bravo.close()
    await asyncio.sleep(0.1)
    assert any("permissions violation" in str(error).lower() for error in errors)
    consumers = await secured_admin.jetstream().consumers_info(stream_name("sales"))
    assert consumers == []
