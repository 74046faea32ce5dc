"""The relay's database side, batch by batch, on two real tenant databases (no broker): what an
inbound event does to the buyer, and what the buyer answers."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest

from yggdrasil.events.canonical import state_hash
from yggdrasil.events.envelope import Envelope
from yggdrasil.events.signing import generate_keypair, sign_envelope
from yggdrasil.federation.partners import load_partners
from yggdrasil.federation.relay import CheckedAhead, InboundMessage, RelayContext, apply_inbound_batch, check_messages
from yggdrasil.federation.resync import request_resyncs

from .b2b_harness import (
    BUYER,
    BUYER_SKU,
    SELLER,
    Tenant,
    deliver,
    order_lifecycle,
    outbox_message,
    purchase_orders,
    sell,
)

pytestmark = pytest.mark.integration


def receipts_sent(tenant: Tenant) -> list[tuple[str, str, str | None]]:
    """(event id answered, outcome, reason) of every receipt in `tenant`'s outbox, in order:
    alone (the per-message path), or in the bundles the fast pass stores."""
    rows = tenant.fetch("SELECT event_type, envelope FROM b2b_events WHERE event_type LIKE 'b2b.receipt%' ORDER BY id")
    payloads = [item for event_type, raw in rows for payload in [json.loads(bytes(raw))["payload"]]
                for item in (payload["receipts"] if event_type == "b2b.receipts" else [payload])]
    return [(p["event_id"], p["outcome"], p["reason"]) for p in payloads]


async def test_a_created_event_becomes_a_purchase_order_linked_to_the_sellers_order(seller: Tenant, buyer: Tenant):
    created = await sell(seller, "SO-1001")
    [disposition] = await deliver(buyer, outbox_message(seller, created))
    assert (disposition.verb, disposition.outcome) == ("ack", "applied")
    assert purchase_orders(buyer) == [("SO-1001", "draft", "draft", "EUR", SELLER, 1, Decimal("3.000"), BUYER_SKU)]
    # The supplier was created for the partner, and the change is audited as the partner's.
    assert buyer.fetch("SELECT code, partner_tenant_id FROM suppliers") == [(f"b2b:{SELLER}", SELLER)]
    assert buyer.scalar(
        "SELECT actor FROM audit_change_log WHERE table_name = 'purchasing_orders' AND operation = 'INSERT'"
    ) == f"b2b:{SELLER}"
    assert buyer.fetch("SELECT outcome FROM b2b_inbox") == [("applied",)]
    assert receipts_sent(buyer) == [(str(created.event_id), "applied", None)]


async def test_the_same_event_delivered_twice_creates_one_purchase_order(seller: Tenant, buyer: Tenant):
    message = outbox_message(seller, await sell(seller, "SO-1002"))
    first = await deliver(buyer, message, message)   # twice in one batch
    again = await deliver(buyer, message)            # and redelivered later
    assert [d.outcome for d in first + again] == ["applied", "duplicate", "duplicate"]
    assert len(purchase_orders(buyer)) == 1
    assert len(receipts_sent(buyer)) == 1


async def test_events_ahead_of_their_predecessors_are_held_then_applied_in_the_sellers_order(
    seller: Tenant, buyer: Tenant
):
    created, confirmed, shipped = [outbox_message(seller, e) for e in await order_lifecycle(seller, "SO-1003")]
    assert [d.outcome for d in await deliver(buyer, shipped, confirmed)] == ["held", "held"]
    assert purchase_orders(buyer) == []
    assert buyer.scalar("SELECT count(*) FROM b2b_held_events") == 2

    assert [d.outcome for d in await deliver(buyer, created)] == ["applied"]
    [(_, state, source_state, *_)] = purchase_orders(buyer)
    assert (state, source_state) == ("confirmed", "shipped")
    assert buyer.scalar("SELECT count(*) FROM b2b_held_events") == 0
    assert buyer.fetch("SELECT outcome FROM b2b_inbox ORDER BY sequence") == [("applied",)] * 3
    audit = buyer.fetch(
        """
        SELECT new_values ->> 'state', new_values ->> 'b2b_source_state' FROM audit_change_log
         WHERE table_name = 'purchasing_orders' ORDER BY seq
        """
    )
    assert audit == [("draft", "draft"), ("confirmed", "confirmed"), ("confirmed", "shipped")]
    outcomes = [outcome for _, outcome, _ in receipts_sent(buyer)]
    assert outcomes == ["held", "held", "applied", "applied", "applied"]


async def test_forged_unknown_and_malformed_events_are_quarantined_and_the_next_valid_one_applies(
    seller: Tenant, buyer: Tenant
):
    genuine = await sell(seller, "SO-1004")
    subject = outbox_message(seller, genuine).subject
    impostor_key = generate_keypair()[0]
    payload = {"order_id": "SO-666", "currency": "EUR", "state": "draft", "lines": []}
    forged = sign_envelope(Envelope.create(type="sales.order.created", source=SELLER, destination=BUYER,
                                           aggregate_id="SO-666", sequence=1, payload=payload,
                                           state_hash=state_hash(payload)), impostor_key)
    unknown = sign_envelope(forged.model_copy(update={"source": "charlie-unknown"}), impostor_key)
    tampered = json.loads(outbox_message(seller, genuine).data)
    tampered["payload"]["lines"][0]["quantity"] = "3000"
    dispositions = await deliver(
        buyer,
        InboundMessage(subject, forged.encode()),
        InboundMessage(f"ygg.events.sales.{BUYER}.charlie-unknown", unknown.encode()),
        InboundMessage(subject, b'{"schema_version": 1, "event_id": '),
        InboundMessage(subject, json.dumps(tampered).encode()),
        InboundMessage(f"ygg.events.purchasing.{BUYER}.{SELLER}", forged.encode()),
        outbox_message(seller, genuine),
    )
    assert [(d.verb, d.outcome, d.reason) for d in dispositions] == [
        ("term", "quarantined", "signature.invalid"),
        ("term", "quarantined", "partner.unknown"),
        ("term", "quarantined", "envelope.malformed"),
        ("term", "quarantined", "signature.invalid"),
        ("term", "quarantined", "envelope.subject_mismatch"),
        ("ack", "applied", None),
    ]
    quarantined = buyer.fetch("SELECT source_tenant, reason, length(raw) > 0 FROM b2b_quarantine ORDER BY id")
    assert quarantined == [
        (SELLER, "signature.invalid", True), ("charlie-unknown", "partner.unknown", True),
        (SELLER, "envelope.malformed", True), (SELLER, "signature.invalid", True),
        (SELLER, "envelope.subject_mismatch", True),
    ]
    assert [row[0] for row in purchase_orders(buyer)] == ["SO-1004"]
    # Nothing is answered to a sender we could not verify.
    assert [outcome for _, outcome, _ in receipts_sent(buyer)] == ["applied"]


async def test_a_partner_that_requires_approval_queues_the_order_until_a_person_decides(
    seller: Tenant, buyer: Tenant
):
    buyer.fetch("UPDATE b2b_partners SET approval_policy = 'approve' WHERE tenant_id = %s RETURNING 1", (SELLER,))
    created, confirmed, _ = [outbox_message(seller, e) for e in await order_lifecycle(seller, "SO-1005")]
    assert [d.outcome for d in await deliver(buyer, created, confirmed)] == ["awaiting_approval"] * 2
    assert purchase_orders(buyer) == []
    # One pending document, following the seller's latest state.
    assert buyer.fetch("SELECT aggregate_id, sequence, payload ->> 'state', waiting_reason, state FROM b2b_approvals"
                       ) == [("SO-1005", 2, "confirmed", "partner.approval_required", "pending")]
    assert [outcome for _, outcome, _ in receipts_sent(buyer)] == ["awaiting_approval"] * 2


async def test_an_unmapped_sku_sends_the_order_to_approvals(seller: Tenant, buyer: Tenant):
    created = await sell(seller, "SO-1006", sku="MYSTERY-GADGET")
    [disposition] = await deliver(buyer, outbox_message(seller, created))
    assert disposition.outcome == "awaiting_approval"
    assert buyer.fetch("SELECT waiting_reason, waiting_detail FROM b2b_approvals") == [
        ("items.unmapped", "no item mapped for SKUs MYSTERY-GADGET")
    ]
    assert purchase_orders(buyer) == []


async def test_an_order_the_buyer_cannot_record_is_rejected_with_a_reason_and_later_changes_still_apply(
    seller: Tenant, buyer: Tenant
):
    bad = await sell(seller, "SO-1007", quantity="0.0001")  # more decimals than a quantity holds
    good = await sell(seller, "SO-1007", "updated", quantity="2")
    dispositions = await deliver(buyer, outbox_message(seller, good), outbox_message(seller, bad))
    assert [(d.outcome, d.reason) for d in dispositions] == [("held", None), ("rejected", "order.line_invalid")]
    assert buyer.fetch("SELECT reason FROM b2b_quarantine") == [("order.line_invalid",)]
    # The refused event used up its number: the held update after it applied.
    assert [(row[0], row[6]) for row in purchase_orders(buyer)] == [("SO-1007", Decimal("2.000"))]
    answers = receipts_sent(buyer)
    assert [outcome for _, outcome, _ in answers] == ["held", "rejected", "applied"]
    assert answers[1][2].startswith("order.line_invalid: line 1:")


async def test_a_receipt_marks_the_sellers_outbox_row_with_what_the_buyer_recorded(seller: Tenant, buyer: Tenant):
    created, confirmed, _ = await order_lifecycle(seller, "SO-1008")
    await deliver(buyer, outbox_message(seller, confirmed))
    await deliver(buyer, outbox_message(seller, created))
    receipts = buyer.fetch("SELECT subject, envelope FROM b2b_events WHERE event_type = 'b2b.receipt' ORDER BY id")
    held_receipt, applied_receipt, applied_confirmed = [InboundMessage(s, bytes(r)) for s, r in receipts]

    # Late and out of order: the newer receipt of the confirmed event wins.
    outcomes = await deliver(seller, applied_receipt, applied_confirmed, held_receipt, held_receipt)
    assert [d.outcome for d in outcomes] == ["applied", "applied", "duplicate", "duplicate"]
    rows = seller.fetch(
        "SELECT event_id, status, receipt_outcome FROM b2b_events WHERE event_type LIKE 'sales.%%' ORDER BY sequence"
    )
    assert rows[:2] == [(created.event_id, "acknowledged", "applied"), (confirmed.event_id, "acknowledged", "applied")]
    assert rows[2][1:] == ("pending", None)


async def test_a_gap_that_stays_open_is_replayed_from_the_sellers_outbox(seller: Tenant, buyer: Tenant):
    created, confirmed, shipped = await order_lifecycle(seller, "SO-1009")
    await deliver(buyer, outbox_message(seller, confirmed), outbox_message(seller, shipped))  # created is lost

    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        async with conn.transaction():
            asked = await request_resyncs(conn, tenant_id=buyer.id, signing_key=buyer.key, after_seconds=0)
    assert asked == 1
    [(subject, raw)] = buyer.fetch(
        "SELECT subject, envelope FROM b2b_events WHERE event_type = 'b2b.resync.request'")
    assert json.loads(bytes(raw))["payload"] == {"aggregate_id": "SO-1009", "from_sequence": 1}

    # The seller marks the order's events from 1 on for replay; its publisher sends them again.
    assert [d.outcome for d in await deliver(seller, InboundMessage(subject, bytes(raw)))] == ["applied"]
    assert seller.fetch("SELECT sequence, replays FROM b2b_events WHERE replay_requested_at IS NOT NULL "
                        "ORDER BY sequence") == [(1, 1), (2, 1), (3, 1)]
    replayed = [await deliver(buyer, outbox_message(seller, e)) for e in (created, confirmed, shipped)]
    assert [d.outcome for [d] in replayed] == ["applied", "duplicate", "duplicate"]
    assert [row[2] for row in purchase_orders(buyer)] == ["shipped"]


async def test_a_failing_statement_whose_result_is_not_read_rolls_back_only_its_own_event(
    seller: Tenant, buyer: Tenant
):
    # The relay pipelines the statements it does not read (the receipt's outbox row among them):
    # an error there must still roll back that event's savepoint, and only that one.
    first = await sell(seller, "SO-1020")
    second = await sell(seller, "SO-1021")
    with psycopg.connect(buyer.dsn) as conn:
        conn.execute("""
            CREATE FUNCTION refuse_one_receipt() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.aggregate_id = %s AND convert_from(NEW.envelope, 'UTF8') LIKE '%%"outcome":"applied"%%' THEN
                    RAISE EXCEPTION 'no receipt today';
                END IF;
                RETURN NEW;
            END $$""".replace("%s", f"'{first.event_id}'"))
        conn.execute("CREATE TRIGGER refuse_one_receipt BEFORE INSERT ON b2b_events "
                     "FOR EACH ROW EXECUTE FUNCTION refuse_one_receipt()")
    dispositions = await deliver(buyer, outbox_message(seller, first), outbox_message(seller, second))
    assert [(d.outcome, d.reason) for d in dispositions] == [("rejected", "apply.refused"), ("applied", None)]
    assert [row[0] for row in purchase_orders(buyer)] == ["SO-1021"]
    assert buyer.fetch("SELECT reason FROM b2b_quarantine") == [("apply.refused",)]
    assert sorted(buyer.fetch("SELECT outcome FROM b2b_inbox")) == [("applied",), ("rejected",)]
    assert buyer.fetch("SELECT aggregate_id, last_sequence FROM b2b_inbound_sequences ORDER BY aggregate_id") == [
        ("SO-1020", 1), ("SO-1021", 1)]
    assert [(event_id, outcome) for event_id, outcome, _ in receipts_sent(buyer)] == [
        (str(first.event_id), "rejected"), (str(second.event_id), "applied")]


async def test_checks_made_ahead_count_only_if_the_registry_is_unchanged_in_the_transaction(
    seller: Tenant, buyer: Tenant
):
    # The sidecar checks the next batch (signatures, partner) while the current one is in its
    # transaction; the transaction reads the registry again and trusts those checks only if it
    # is the same.
    ctx = RelayContext(buyer.id, buyer.key)
    # The partner's first order creates its supplier (the per-message path); the next ones are
    # the common case the fast pass takes.
    await deliver(buyer, outbox_message(seller, await sell(seller, "SO-1029")))
    first, second = [outbox_message(seller, await sell(seller, order)) for order in ("SO-1030", "SO-1031")]
    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        partners = await load_partners(conn)
    ahead = CheckedAhead(partners, check_messages([first], partners, ctx, ahead=True))
    assert list(ahead.verified) == [0], "the seller's event passes its checks"
    assert ahead.verified[0].payload is not None, "its payload checked ahead"

    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        async with conn.transaction():
            [applied] = await apply_inbound_batch(conn, [first], ctx, checked=ahead)
    assert applied.outcome == "applied"
    [(bundle,)] = buyer.fetch("SELECT envelope FROM b2b_events WHERE event_type = 'b2b.receipts'")
    assert [item.event_id for item in Envelope.decode(bytes(bundle)).typed_payload().receipts] == [
        Envelope.decode(first.data).event_id], "answered by the fast pass"

    # Suspended after the next batch was checked ahead: the transaction checks it again.
    ahead = CheckedAhead(partners, check_messages([second], partners, ctx))
    buyer.fetch("UPDATE b2b_partners SET status = 'suspended' WHERE tenant_id = %s RETURNING 1", (SELLER,))
    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        async with conn.transaction():
            [refused] = await apply_inbound_batch(conn, [second], ctx, checked=ahead)
    assert (refused.verb, refused.outcome, refused.reason) == ("term", "quarantined", "partner.inactive")
    assert [row[0] for row in purchase_orders(buyer)] == ["SO-1029", "SO-1030"]
