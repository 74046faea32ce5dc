"""Receipts travel in bundles (`b2b.receipts`, federation/receipts.py): the buyer's queued
receipts for the seller go as one signed message, and the seller records each receipt of it as
it records a lone one: once, newest wins, an unknown event refused and kept in quarantine."""

from __future__ import annotations

import uuid

import pytest

from yggdrasil.events.catalogue import ReceiptBundlePayload, ReceiptPayload
from yggdrasil.events.envelope import Envelope
from yggdrasil.events.signing import sign_envelope, verify_envelope
from yggdrasil.federation.receipts import QueuedReceipt, ReceiptBundler
from yggdrasil.federation.relay import InboundMessage

from .b2b_harness import SELLER, Tenant, deliver, outbox_message, outbox_statuses, sell

pytestmark = pytest.mark.integration


def queued_receipts(buyer: Tenant) -> list[QueuedReceipt]:
    return [QueuedReceipt(row_id, bytes(raw), replays) for row_id, raw, replays in buyer.fetch(
        "SELECT id, envelope, replays FROM b2b_events WHERE event_type = 'b2b.receipt' ORDER BY id")]


def as_message(buyer: Tenant, data: bytes) -> InboundMessage:
    return InboundMessage(f"ygg.events.b2b.{SELLER}.{buyer.id}", data)


async def orders_applied_on_the_buyer(seller: Tenant, buyer: Tenant, count: int) -> list[Envelope]:
    sold = [await sell(seller, f"SO-B{n}") for n in range(count)]
    dispositions = await deliver(buyer, *(outbox_message(seller, envelope) for envelope in sold))
    assert [d.outcome for d in dispositions] == ["applied"] * count
    return sold


async def test_a_bundle_carries_every_receipt_once_and_marks_every_order_event(seller: Tenant, buyer: Tenant):
    sold = await orders_applied_on_the_buyer(seller, buyer, 5)
    queued = queued_receipts(buyer)
    bundler = ReceiptBundler(buyer.id, buyer.key)

    [bundle] = bundler.bundle(SELLER, queued)
    assert bundle.row_ids == [receipt.row_id for receipt in queued]
    envelope = Envelope.decode(bundle.data)
    verify_envelope(envelope, buyer.key.public_key())
    payload = envelope.typed_payload()
    assert isinstance(payload, ReceiptBundlePayload)
    assert [(item.event_id, item.outcome, item.sequence) for item in payload.receipts] == [
        (order.event_id, "applied", 1) for order in sold]
    assert (envelope.type, envelope.destination, bundle.message_id) == ("b2b.receipts", SELLER, str(envelope.event_id))
    # The same receipts make the same bundle id: a re-sent run is one message to the broker.
    assert bundler.bundle(SELLER, queued)[0].message_id == bundle.message_id

    [disposition] = await deliver(seller, as_message(buyer, bundle.data))
    assert disposition.outcome == "applied"
    assert outbox_statuses(seller) == [("acknowledged", "applied")] * 5
    receipt_ids = {str(envelope.event_id) for envelope in map(Envelope.decode, (r.envelope for r in queued))}
    assert {row[0] for row in seller.fetch(
        "SELECT event_id::text FROM b2b_inbox WHERE event_type = 'b2b.receipt'")} == receipt_ids

    # Delivered again, and cut differently (a publisher restart): nothing recorded twice.
    [again] = await deliver(seller, as_message(buyer, bundle.data))
    [first_two] = bundler.bundle(SELLER, queued[:2])
    [other_cut] = await deliver(seller, as_message(buyer, first_two.data))
    assert (again.outcome, other_cut.outcome) == ("duplicate", "duplicate")
    assert seller.scalar("SELECT count(*) FROM b2b_inbox WHERE event_type = 'b2b.receipt'") == 5
    assert outbox_statuses(seller) == [("acknowledged", "applied")] * 5


async def test_a_receipt_in_a_bundle_for_an_event_never_sent_is_quarantined_and_the_rest_count(
    seller: Tenant, buyer: Tenant
):
    await orders_applied_on_the_buyer(seller, buyer, 1)
    [real] = queued_receipts(buyer)
    stranger = sign_envelope(Envelope.create(
        type="b2b.receipt", source=buyer.id, destination=SELLER, aggregate_type="b2b_event",
        aggregate_id=str(uuid.uuid4()), sequence=1,
        payload=ReceiptPayload(event_id=uuid.uuid4(), outcome="applied")), buyer.key)
    [bundle] = ReceiptBundler(buyer.id, buyer.key).bundle(
        SELLER, [real, QueuedReceipt(real.row_id + 1000, stranger.encode())])

    [disposition] = await deliver(seller, as_message(buyer, bundle.data))

    assert disposition.outcome == "applied"
    assert outbox_statuses(seller) == [("acknowledged", "applied")]
    assert seller.fetch("SELECT event_id::text, reason FROM b2b_quarantine") == [
        (str(stranger.event_id), "receipt.unknown_event")]
    assert seller.fetch("SELECT outcome FROM b2b_inbox WHERE event_id = %s", (stranger.event_id,)) == [("rejected",)]


async def test_a_newer_receipt_in_a_bundle_replaces_the_older_and_an_older_one_is_a_duplicate(
    seller: Tenant, buyer: Tenant
):
    [sold] = await orders_applied_on_the_buyer(seller, buyer, 1)
    [applied] = queued_receipts(buyer)

    def receipt(sequence: int, outcome: str, reason: str | None = None) -> QueuedReceipt:
        envelope = sign_envelope(Envelope.create(
            type="b2b.receipt", source=buyer.id, destination=SELLER, aggregate_type="b2b_event",
            aggregate_id=str(sold.event_id), sequence=sequence,
            payload=ReceiptPayload(event_id=sold.event_id, outcome=outcome, reason=reason)), buyer.key)
        return QueuedReceipt(sequence + 1000, envelope.encode())

    bundler = ReceiptBundler(buyer.id, buyer.key)
    newer = receipt(2, "rejected", "order.cancelled_by_hand: cancelled on our side")
    [first] = await deliver(seller, as_message(buyer, bundler.bundle(SELLER, [applied, newer])[0].data))
    # Two receipts for one event in one bundle: the per-message path records them in order.
    assert first.outcome == "applied"
    assert seller.fetch("SELECT status, receipt_outcome, receipt_sequence FROM b2b_events "
                        "WHERE event_type LIKE 'sales.%%'") == [("rejected", "rejected", 2)]

    [late] = await deliver(seller, as_message(buyer, bundler.bundle(SELLER, [receipt(1, "held", None)])[0].data))
    assert late.outcome == "duplicate"
    assert outbox_statuses(seller) == [("rejected", "rejected")]
