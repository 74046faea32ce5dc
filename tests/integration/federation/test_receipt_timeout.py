"""The receipt loop in the two databases, without a broker: which unanswered events the seller
sends again, under which message ids and after how long; and how the buyer answers a copy of an
event it already has (with what it recorded, so that the seller's row gets acknowledged).
The same through a real nats-server and real expiry: test_retention_gap_replay.py and
test_duplicate_delivery.py."""

from __future__ import annotations

import json

import psycopg
import pytest

from yggdrasil.federation.approvals import approve_inbound_document, reject_inbound_document
from yggdrasil.federation.publisher import publish_pending, resend_unanswered
from yggdrasil.federation.relay import InboundMessage

from .b2b_harness import SELLER, Tenant, deliver, outbox_message, sell
from .test_outbox_enqueue_and_claim import FakeJetStream

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


async def publish_all(tenant: Tenant, broker: FakeJetStream, **timeouts: float) -> int:
    async with await psycopg.AsyncConnection.connect(tenant.dsn) as conn:
        return (await publish_pending(conn, broker, limit=100, receipt_timeout=TIMEOUT, **timeouts)).published


async def resend(tenant: Tenant) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(tenant.dsn) as conn:
        return (await resend_unanswered(conn)).resent


def make_overdue(tenant: Tenant) -> None:
    tenant.fetch("UPDATE b2b_events SET receipt_due_at = now() - interval '1 second' "
                 "WHERE receipt_due_at IS NOT NULL RETURNING 1")


def receipts_sent(tenant: Tenant) -> list[tuple[str, str, str | None]]:
    rows = tenant.fetch("SELECT envelope FROM b2b_events WHERE event_type = 'b2b.receipt' ORDER BY id")
    payloads = [json.loads(bytes(raw))["payload"] for (raw,) in rows]
    return [(p["event_id"], p["outcome"], p["reason"]) for p in payloads]


async def test_a_published_order_event_is_due_a_receipt_after_the_timeout_and_a_receipt_is_due_none(
    seller: Tenant, buyer: Tenant
):
    await deliver(buyer, outbox_message(seller, await sell(seller, "SO-9001")))
    await publish_all(seller, FakeJetStream())
    await publish_all(buyer, FakeJetStream())  # the buyer's receipt
    [(due_in,)] = seller.fetch("SELECT extract(epoch FROM receipt_due_at - now())::float8 FROM b2b_events")
    assert TIMEOUT - 5 < due_in <= TIMEOUT
    assert buyer.fetch("SELECT event_type, status, receipt_due_at FROM b2b_events") == [
        ("b2b.receipt", "published", None)]


async def test_only_overdue_events_read_past_or_newest_in_their_stream_are_sent_again(seller: Tenant):
    envelopes = [await sell(seller, f"SO-91{n:02d}") for n in range(5)]
    await publish_all(seller, FakeJetStream())
    assert await resend(seller) == {}, "nothing is overdue yet"
    # The buyer answered the second event: it read the stream past the first.
    seller.fetch("UPDATE b2b_events SET status = 'acknowledged', receipt_outcome = 'applied' "
                 "WHERE event_id = %s RETURNING 1", (envelopes[1].event_id,))
    make_overdue(seller)

    assert await resend(seller) == {"bravo-buyer": 2}
    marked = seller.fetch("SELECT aggregate_id, replays, resends FROM b2b_events WHERE replay_requested_at IS NOT NULL "
                          "ORDER BY id")
    # The first was read past (lost); the last probes; the two between wait for what it shows.
    assert marked == [("SO-9100", 1, 1), ("SO-9104", 1, 1)]
    assert await resend(seller) == {}, "marked once"

    broker = FakeJetStream()
    assert await publish_all(seller, broker) == 2
    assert [msg_id for *_, msg_id in broker.published] == [f"{envelopes[0].event_id}:replay:1",
                                                          f"{envelopes[4].event_id}:replay:1"]
    # Still `published`, now due after twice the timeout.
    due = seller.fetch("SELECT aggregate_id, status, extract(epoch FROM receipt_due_at - now())::float8 "
                       "FROM b2b_events WHERE resends = 1 ORDER BY id")
    assert [(order, status) for order, status, _ in due] == [("SO-9100", "published"), ("SO-9104", "published")]
    assert all(2 * TIMEOUT - 5 < seconds <= 2 * TIMEOUT for *_, seconds in due)


async def test_the_wait_doubles_with_each_resend_up_to_the_cap(seller: Tenant):
    await sell(seller, "SO-9200")
    await publish_all(seller, FakeJetStream())
    waits = []
    for _ in range(5):
        make_overdue(seller)
        assert await resend(seller) == {"bravo-buyer": 1}
        await publish_all(seller, FakeJetStream(), resend_cap=5 * TIMEOUT)
        waits.append(round(seller.scalar("SELECT extract(epoch FROM receipt_due_at - now())::float8 FROM b2b_events")
                           / TIMEOUT))
    assert waits == [2, 4, 5, 5, 5]
    assert seller.fetch("SELECT status, resends, replays, attempts FROM b2b_events") == [("published", 5, 5, 6)]


async def test_an_acknowledged_event_is_never_sent_again(seller: Tenant, buyer: Tenant):
    envelope = await sell(seller, "SO-9300")
    await publish_all(seller, FakeJetStream())
    await deliver(buyer, outbox_message(seller, envelope))
    await publish_all(buyer, FakeJetStream())
    [(subject, raw)] = buyer.fetch("SELECT subject, envelope FROM b2b_events")
    await deliver(seller, InboundMessage(subject, bytes(raw)))
    seller.fetch("UPDATE b2b_events SET receipt_due_at = now() - interval '1 hour' RETURNING 1")
    assert await resend(seller) == {}
    assert seller.fetch("SELECT status, resends FROM b2b_events") == [("acknowledged", 0)]


async def test_a_copy_of_an_event_already_recorded_is_answered_with_what_was_recorded(seller: Tenant, buyer: Tenant):
    applied = await sell(seller, "SO-9400")
    rejected = await sell(seller, "SO-9401", quantity="0.0001")  # more decimals than a quantity holds
    await sell(seller, "SO-9402")  # never delivered: the next one is held
    held = await sell(seller, "SO-9402", "confirmed", "confirmed")
    recorded = [outbox_message(seller, e) for e in (applied, rejected, held)]
    assert [d.outcome for d in await deliver(buyer, *recorded)] == ["applied", "rejected", "held"]
    buyer.fetch("UPDATE b2b_events SET status = 'published' RETURNING 1")  # our first answers have left

    copies = await deliver(buyer, *recorded)
    assert [(d.verb, d.outcome) for d in copies] == [("ack", "duplicate")] * 3
    answers = receipts_sent(buyer)
    assert [(event_id, outcome) for event_id, outcome, _ in answers[3:]] == [
        (str(applied.event_id), "applied"), (str(rejected.event_id), "rejected"), (str(held.event_id), "held")]
    assert answers[4][2].startswith("order.line_invalid: ")
    # A copy that arrives while our answer has not left yet is answered by that answer.
    await deliver(buyer, recorded[0])
    assert len(receipts_sent(buyer)) == 6
    assert buyer.scalar("SELECT count(*) FROM purchasing_orders WHERE b2b_source_tenant = %s", (SELLER,)) == 1


async def test_a_copy_of_an_event_a_person_decided_on_is_answered_with_the_decision(seller: Tenant, buyer: Tenant):
    buyer.fetch("UPDATE b2b_partners SET approval_policy = 'approve' WHERE tenant_id = %s RETURNING 1", (SELLER,))
    accepted, refused = await sell(seller, "SO-9500"), await sell(seller, "SO-9501")
    messages = [outbox_message(seller, e) for e in (accepted, refused)]
    assert [d.outcome for d in await deliver(buyer, *messages)] == ["awaiting_approval"] * 2
    approvals = dict(buyer.fetch("SELECT aggregate_id, id FROM b2b_approvals"))
    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        await approve_inbound_document(conn, approvals["SO-9500"], decided_by="alice", tenant_id=buyer.id,
                                       signing_key=buyer.key)
        await reject_inbound_document(conn, approvals["SO-9501"], decided_by="alice", reason="no budget",
                                      tenant_id=buyer.id, signing_key=buyer.key)
        await conn.commit()
    buyer.fetch("UPDATE b2b_events SET status = 'published' RETURNING 1")

    await deliver(buyer, *messages)
    assert [(event_id, outcome, reason) for event_id, outcome, reason in receipts_sent(buyer)[4:]] == [
        (str(accepted.event_id), "accepted", None), (str(refused.event_id), "rejected", "no budget")]
