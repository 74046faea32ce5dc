"""The federation path end to end, in-process: the seller's outbox, its sidecar's publisher, a real
nats-server, the buyer's sidecar relay, the buyer's purchase order, and the receipt back."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from yggdrasil.devstack.nats import EmbeddedNats
from yggdrasil.events.canonical import state_hash
from yggdrasil.events.envelope import Envelope
from yggdrasil.events.signing import generate_keypair, sign_envelope

from .b2b_harness import (
    BUYER,
    SELLER,
    Tenant,
    consumer_drained,
    eventually,
    order_lifecycle,
    outbox_statuses,
    publish_raw,
    purchase_orders,
    running_sidecar,
    sell,
)

pytestmark = pytest.mark.integration


def outbox_row(seller: Tenant, envelope: Envelope) -> tuple[str, bytes]:
    subject, raw = seller.fetch("SELECT subject, envelope FROM b2b_events WHERE event_id = %s",
                                (envelope.event_id,))[0]
    return subject, bytes(raw)


async def test_an_outbox_event_becomes_one_purchase_order_and_the_seller_sees_it_applied(
    federation: tuple[Tenant, Tenant]
):
    seller, buyer = federation
    async with running_sidecar(seller), running_sidecar(buyer):
        await sell(seller, "SO-2001")
        await eventually(lambda: purchase_orders(buyer), what="the buyer's purchase order")
        await eventually(lambda: outbox_statuses(seller) == [("acknowledged", "applied")],
                         what="the buyer's receipt at the seller")
    assert [(po[0], po[1]) for po in purchase_orders(buyer)] == [("SO-2001", "draft")]
    # The receipt went back through the buyer's own outbox.
    assert buyer.fetch("SELECT event_type, status FROM b2b_events") == [("b2b.receipt", "published")]


async def test_the_same_event_published_twice_creates_one_purchase_order(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats
):
    seller, buyer = federation
    subject, raw = outbox_row(seller, await sell(seller, "SO-2002"))
    event_id = json.loads(raw)["event_id"]
    # A producer retry within the de-duplication window is dropped by the broker; one after it
    # (a different message id stands in for an expired window) is stored again.
    assert await publish_raw(broker.url, subject, raw, event_id) is True
    assert await publish_raw(broker.url, subject, raw, event_id) is False
    assert await publish_raw(broker.url, subject, raw, f"{event_id}-after-the-window") is True
    async with running_sidecar(buyer) as status:
        await eventually(lambda: consumer_drained(broker.url, BUYER), what="both copies consumed")
    assert len(purchase_orders(buyer)) == 1
    assert status.relay.outcomes == {"applied": 1, "duplicate": 1}
    assert buyer.fetch("SELECT outcome FROM b2b_inbox") == [("applied",)]


async def test_confirmed_and_shipped_delivered_before_created_leave_the_order_shipped_with_its_audit_in_order(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats
):
    seller, buyer = federation
    created, confirmed, shipped = [outbox_row(seller, e) for e in await order_lifecycle(seller, "SO-2003")]
    async with running_sidecar(buyer):
        for subject, raw in (shipped, confirmed):
            await publish_raw(broker.url, subject, raw, json.loads(raw)["event_id"])
        await eventually(lambda: buyer.scalar("SELECT count(*) FROM b2b_held_events") == 2, what="two held events")
        assert purchase_orders(buyer) == []
        await publish_raw(broker.url, created[0], created[1], json.loads(created[1])["event_id"])
        await eventually(lambda: [po[2] for po in purchase_orders(buyer)] == ["shipped"], what="the order shipped")
    assert [(po[1], po[2]) for po in purchase_orders(buyer)] == [("confirmed", "shipped")]
    audit = buyer.fetch(
        """
        SELECT new_values ->> 'b2b_source_state', new_values ->> 'state' FROM audit_change_log
         WHERE table_name = 'purchasing_orders' ORDER BY seq
        """
    )
    assert audit == [("draft", "draft"), ("confirmed", "confirmed"), ("shipped", "confirmed")]


async def test_forged_unknown_and_malformed_events_are_quarantined_and_the_relay_goes_on(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats
):
    seller, buyer = federation
    payload = {"order_id": "SO-666", "currency": "EUR", "state": "draft",
               "lines": [{"line_no": 1, "sku": "RETRO-CLOCK", "quantity": "1", "unit_price": "1"}]}
    forged = sign_envelope(Envelope.create(type="sales.order.created", source=SELLER, destination=BUYER,
                                           aggregate_id="SO-666", sequence=1, payload=payload,
                                           state_hash=state_hash(payload)), generate_keypair()[0])
    stranger = sign_envelope(forged.model_copy(update={"source": "charlie-unknown"}), generate_keypair()[0])
    own_subject = f"ygg.events.sales.{BUYER}.{SELLER}"
    await publish_raw(broker.url, own_subject, forged.encode(), "forged")
    await publish_raw(broker.url, f"ygg.events.sales.{BUYER}.charlie-unknown", stranger.encode(), "stranger")
    await publish_raw(broker.url, own_subject, b"{this is not json", "malformed")
    async with running_sidecar(seller), running_sidecar(buyer):
        await sell(seller, "SO-2004")
        await eventually(lambda: purchase_orders(buyer), what="the valid event applied")
        await eventually(lambda: consumer_drained(broker.url, BUYER), what="every message answered")
    assert buyer.fetch("SELECT source_tenant, reason FROM b2b_quarantine ORDER BY id") == [
        (SELLER, "signature.invalid"), ("charlie-unknown", "partner.unknown"), (SELLER, "envelope.malformed"),
    ]
    assert [po[0] for po in purchase_orders(buyer)] == ["SO-2004"]


async def test_outbox_rows_stay_pending_while_the_broker_is_down_and_flush_when_it_returns(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats
):
    seller, buyer = federation
    broker.stop()
    async with running_sidecar(seller) as seller_status, running_sidecar(buyer):
        for n in range(20):
            await sell(seller, f"SO-{3000 + n}")
        await eventually(lambda: seller_status.broker.state == "unreachable", what="the sidecar to notice")
        await asyncio.sleep(1.0)
        assert seller.scalar("SELECT count(*) FROM b2b_events WHERE status = 'pending'") == 20
        assert seller.scalar("SELECT max(attempts) FROM b2b_events") == 0
        broker.start()
        await eventually(lambda: len(purchase_orders(buyer)) == 20, timeout=30, what="20 purchase orders")
        await eventually(lambda: outbox_statuses(seller) == [("acknowledged", "applied")] * 20, timeout=30,
                         what="20 receipts at the seller")
    assert buyer.scalar("SELECT count(DISTINCT b2b_source_order_id) FROM purchasing_orders") == 20


async def test_an_event_deleted_from_the_stream_is_replayed_from_the_sellers_outbox(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats
):
    seller, buyer = federation
    buyer.extra_settings["resync_after_seconds"] = 1.0
    async with running_sidecar(seller):
        await order_lifecycle(seller, "SO-2005")
        await eventually(lambda: outbox_statuses(seller) == [("published", None)] * 3, what="three events published")
        nc = await nats.connect(broker.url)
        try:
            assert await nc.jetstream().delete_msg("YGG_SALES", 1)  # `created`, gone before the buyer read it
        finally:
            await nc.close()
        async with running_sidecar(buyer):
            await eventually(lambda: [po[2] for po in purchase_orders(buyer)] == ["shipped"], timeout=30,
                             what="the gap filled and the order shipped")
            await eventually(lambda: outbox_statuses(seller) == [("acknowledged", "applied")] * 3, timeout=30,
                             what="every event acknowledged")
    assert seller.scalar("SELECT min(replays) FROM b2b_events WHERE event_type LIKE 'sales.%%'") == 1
    # Asked at least once (again after as long, had the gap stayed open).
    assert {row[0] for row in buyer.fetch("SELECT event_type FROM b2b_events WHERE event_type <> 'b2b.receipt'")
            } == {"b2b.resync.request"}
