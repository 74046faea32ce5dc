"""Tenant C, a partner of the buyer in good standing, tries to pass an order off as the seller's,
on a broker that gives every tenant its own credentials (broker/permissions.py), with both
sidecars running on theirs. The broker refuses C's publish with the seller as source; the same
forgery injected past the permissions (through the operator's connection) is quarantined by its
signature; C's own events, and the seller's next one, are applied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import psycopg
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from yggdrasil.broker.permissions import ADMIN_USER, inbox_prefix, render_auth_config
from yggdrasil.broker.streams import ensure_streams, stream_name
from yggdrasil.broker.subjects import event_subject
from yggdrasil.devstack.nats import EmbeddedNats
from yggdrasil.events.catalogue import payload_state_hash
from yggdrasil.events.envelope import Envelope
from yggdrasil.events.signing import encode_public_key, generate_keypair, sign_envelope
from yggdrasil.federation.partners import add_partner, map_partner_item

from .b2b_harness import (
    BUYER,
    BUYER_SKU,
    SELLER,
    SELLER_SKU,
    Tenant,
    broker_admin,
    consumer_drained,
    eventually,
    order_payload,
    publish_raw,
    purchase_orders,
    running_sidecar,
    sell,
)

pytestmark = pytest.mark.integration

CHARLIE = "charlie-trader"
PASSWORDS = {SELLER: "acme-secret", BUYER: "bravo-secret", CHARLIE: "charlie-secret"}
ADMIN = {"user": ADMIN_USER, "password": "operator-secret"}


@pytest.fixture
async def secured_broker(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    auth = render_auth_config(PASSWORDS, admin_password=ADMIN["password"])
    server = EmbeddedNats(tmp_path / "nats", auth_config=auth)
    server.start()
    try:
        async with broker_admin(server.url, **ADMIN) as nc:
            await ensure_streams(nc.jetstream())
        yield server
    finally:
        server.stop()


def charlie_order(order_id: str, source: str) -> Envelope:
    """An order event signed with C's key, claiming `source`."""
    payload = order_payload(order_id, sku=SELLER_SKU)
    return Envelope.create(type="sales.order.created", source=source, destination=BUYER, aggregate_id=order_id,
                           sequence=1, payload=payload, state_hash=payload_state_hash(payload))


async def test_a_tenant_publishing_as_another_is_refused_by_the_broker_and_a_forgery_that_gets_through_is_quarantined(
    tenants: tuple[Tenant, Tenant], secured_broker: EmbeddedNats
):
    seller, buyer = tenants
    charlie_key = generate_keypair()[0]
    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        await add_partner(conn, tenant_id=CHARLIE, public_key=encode_public_key(charlie_key.public_key()),
                          name="Charlie Trader", approval_policy="auto")
        await map_partner_item(conn, tenant_id=CHARLIE, partner_sku=SELLER_SKU, item_sku=BUYER_SKU)
    for tenant in (seller, buyer):
        tenant.broker_url = secured_broker.url
        tenant.extra_settings.update(broker_user=tenant.id, broker_password=PASSWORDS[tenant.id],
                                     broker_ensure_streams=False)

    forged = sign_envelope(charlie_order("SO-666", source=SELLER), charlie_key).encode()
    seller_subject = event_subject("sales", BUYER, SELLER)
    errors: list[Exception] = []

    async def collect(error: Exception) -> None:
        errors.append(error)

    async with running_sidecar(seller), running_sidecar(buyer):
        charlie = await nats.connect(secured_broker.url, user=CHARLIE, password=PASSWORDS[CHARLIE],
                                     inbox_prefix=inbox_prefix(CHARLIE), error_cb=collect)
        try:
            js = charlie.jetstream()
            with pytest.raises(NatsTimeoutError):
                await js.publish(seller_subject, forged, headers={"Nats-Msg-Id": "forged-1"}, timeout=1)
            assert any("permissions violation" in str(error).lower() for error in errors)
            async with broker_admin(secured_broker.url, **ADMIN) as nc:
                assert (await nc.jetstream().stream_info(stream_name("sales"))).state.messages == 0
            # As itself, C trades normally.
            own = sign_envelope(charlie_order("CT-1", source=CHARLIE), charlie_key)
            await js.publish(event_subject("sales", BUYER, CHARLIE), own.encode(),
                             headers={"Nats-Msg-Id": str(own.event_id)})
        finally:
            await charlie.close()

        # Past the permissions (a misconfigured broker, a leaked operator password): the
        # signature does not verify with the seller's key.
        assert await publish_raw(secured_broker.url, seller_subject, forged, "forged-2", **ADMIN)
        await sell(seller, "SO-4001")
        await eventually(lambda: [po[0] for po in purchase_orders(buyer)] == ["SO-4001"],
                         what="the seller's next event applied")
        await eventually(lambda: consumer_drained(secured_broker.url, BUYER, **ADMIN), what="every message answered")

    assert buyer.fetch("SELECT source_tenant, reason FROM b2b_quarantine") == [(SELLER, "signature.invalid")]
    assert buyer.fetch("SELECT b2b_source_tenant, b2b_source_order_id FROM purchasing_orders ORDER BY id") == [
        (CHARLIE, "CT-1"), (SELLER, "SO-4001")]
    # The forgery was answered to no one; the seller's event was.
    assert seller.fetch("SELECT status, receipt_outcome FROM b2b_events") == [("acknowledged", "applied")]
