"""The relay's fast pass (federation/batch.py) on two real tenant databases: it applies the
common case of a batch with one statement per kind of row, records what the per-message path
records, and leaves everything else, untouched, to the per-message path."""

from __future__ import annotations


import psycopg
import pytest

from yggdrasil.events.envelope import Envelope
from yggdrasil.events.signing import verify_envelope
from yggdrasil.federation.batch import Inbound, apply_common_case
from yggdrasil.federation.partners import load_partners
from yggdrasil.federation.relay import InboundMessage, verify_message

from .b2b_harness import SELLER, Tenant, deliver, order_lifecycle, outbox_message, purchase_orders, sell

pytestmark = pytest.mark.integration


async def common_case(tenant: Tenant, *messages: InboundMessage) -> set[int]:
    """Run only the fast pass on `messages`, commit, and return the indexes it applied."""
    async with await psycopg.AsyncConnection.connect(tenant.dsn) as conn:
        async with conn.transaction():
            partners = await load_partners(conn)
            inbound = [Inbound(i, *verify_message(m, partners, tenant.id)) for i, m in enumerate(messages)]
            return await apply_common_case(conn, inbound, tenant_id=tenant.id, signing_key=tenant.key,
                                           max_bytes=256 * 1024)


def written(buyer: Tenant) -> dict[str, object]:
    """What an inbound batch leaves on the buyer, ids and times aside."""
    return {
        "orders": purchase_orders(buyer),
        "audit": buyer.fetch(
            "SELECT table_name, operation, actor, new_values ->> 'state', new_values ->> 'b2b_source_state' "
            "FROM audit_change_log WHERE table_name LIKE 'purchasing_order%%' ORDER BY seq"),
        "inbox": buyer.fetch("SELECT event_type, aggregate_id, sequence, outcome, applied_at IS NOT NULL "
                             "FROM b2b_inbox ORDER BY aggregate_id, sequence"),
        "sequences": buyer.fetch("SELECT aggregate_id, last_sequence FROM b2b_inbound_sequences ORDER BY 1"),
        "stamps": buyer.fetch("SELECT b2b_source_order_id, confirmed_at IS NOT NULL, version FROM purchasing_orders "
                              "ORDER BY 1"),
    }


async def first_order_through_the_per_message_path(seller: Tenant, buyer: Tenant) -> None:
    # The first order from a partner creates its supplier row, which the fast pass leaves alone.
    [disposition] = await deliver(buyer, outbox_message(seller, await sell(seller, "SO-0")))
    assert disposition.outcome == "applied"


async def test_a_batch_of_new_orders_and_their_moves_is_applied_as_the_per_message_path_would(
    seller: Tenant, buyer: Tenant
):
    await first_order_through_the_per_message_path(seller, buyer)
    lifecycles = [await order_lifecycle(seller, f"SO-{n}") for n in (1, 2)]
    single = await sell(seller, "SO-3")
    messages = [outbox_message(seller, e) for e in (*lifecycles[0], *lifecycles[1], single)]

    assert await common_case(buyer, *messages) == set(range(len(messages)))

    after = written(buyer)
    assert [row[:3] for row in after["orders"]] == [
        ("SO-0", "draft", "draft"), ("SO-1", "confirmed", "shipped"), ("SO-2", "confirmed", "shipped"),
        ("SO-3", "draft", "draft")]
    # Each step audited as its own change, by the partner, in the seller's order.
    headers = [row for row in after["audit"] if row[0] == "purchasing_orders"]
    assert headers[1:] == [
        ("purchasing_orders", "INSERT", f"b2b:{SELLER}", "draft", "draft"),
        ("purchasing_orders", "INSERT", f"b2b:{SELLER}", "draft", "draft"),
        ("purchasing_orders", "INSERT", f"b2b:{SELLER}", "draft", "draft"),
        ("purchasing_orders", "UPDATE", f"b2b:{SELLER}", "confirmed", "confirmed"),
        ("purchasing_orders", "UPDATE", f"b2b:{SELLER}", "confirmed", "confirmed"),
        ("purchasing_orders", "UPDATE", f"b2b:{SELLER}", "confirmed", "shipped"),
        ("purchasing_orders", "UPDATE", f"b2b:{SELLER}", "confirmed", "shipped"),
    ]
    assert {row[:3] for row in after["audit"] if row[0] == "purchasing_order_lines"} == {
        ("purchasing_order_lines", "INSERT", f"b2b:{SELLER}")}
    assert all(row[3:] == ("applied", True) for row in after["inbox"])
    assert after["sequences"] == [("SO-0", 1), ("SO-1", 3), ("SO-2", 3), ("SO-3", 1)]
    assert after["stamps"] == [("SO-0", False, 1), ("SO-1", True, 3), ("SO-2", True, 3), ("SO-3", False, 1)]
    assert audit_chain_intact(buyer)

    # Every event answered `applied`, numbered 1 for its event, in one signed bundle addressed to
    # the seller (the first order's receipt, from the per-message path, is a row of its own); each
    # receipt's counter is taken, as the per-message path would take it.
    receipts = buyer.fetch("SELECT subject, event_type, sequence, envelope FROM b2b_events "
                           "WHERE event_type LIKE 'b2b.receipt%' ORDER BY id")
    assert [event_type for _, event_type, _, _ in receipts] == ["b2b.receipt", "b2b.receipts"]
    subject, _, sequence, raw = receipts[1]
    bundle = Envelope.decode(bytes(raw))
    verify_envelope(bundle, buyer.key.public_key())
    assert (subject, sequence, bundle.destination) == (f"ygg.events.b2b.{SELLER}.{buyer.id}", 1, SELLER)
    items = bundle.typed_payload().receipts
    answered = [e.event_id for e in (*lifecycles[0], *lifecycles[1], single)]
    assert sorted(str(item.event_id) for item in items) == sorted(map(str, answered))
    assert {(item.outcome, item.sequence) for item in items} == {("applied", 1)}
    assert len({item.receipt_id for item in items}) == len(items)
    counters = buyer.fetch("SELECT aggregate_id, last_sequence FROM b2b_order_sequences WHERE aggregate_type = 'b2b_event'")
    assert {str(item.event_id) for item in items} <= {aggregate_id for aggregate_id, last in counters if last == 1}

    # The receipts, back at the seller, go through the fast pass too and mark every outbox row.
    receipt_messages = [InboundMessage(subject, bytes(raw)) for subject, _, _, raw in receipts]
    assert await common_case(seller, *receipt_messages) == set(range(len(receipt_messages)))
    assert seller.fetch("SELECT DISTINCT status, receipt_outcome FROM b2b_events") == [("acknowledged", "applied")]


def audit_chain_intact(tenant: Tenant) -> bool:
    from yggdrasil.ops.audit import verify_audit_chain

    with psycopg.connect(tenant.dsn) as conn:
        return verify_audit_chain(conn).ok


async def test_a_group_outside_the_common_case_is_left_untouched_to_the_per_message_path(
    seller: Tenant, buyer: Tenant
):
    await first_order_through_the_per_message_path(seller, buyer)
    created, confirmed, shipped = await order_lifecycle(seller, "SO-4")
    fresh = await sell(seller, "SO-5")
    # `shipped` arrives before `confirmed`: the whole group is the per-message path's.
    messages = [outbox_message(seller, e) for e in (created, shipped, fresh, confirmed)]
    before = written(buyer)
    assert await common_case(buyer, *messages) == set()
    assert written(buyer) == before
    assert buyer.scalar("SELECT count(*) FROM b2b_events WHERE event_type LIKE 'b2b.receipt%'") == 1

    dispositions = await deliver(buyer, *messages)
    assert [d.outcome for d in dispositions] == ["applied", "held", "applied", "applied"]
    assert [row[:3] for row in purchase_orders(buyer)][1:] == [("SO-4", "confirmed", "shipped"),
                                                              ("SO-5", "draft", "draft")]


async def test_a_duplicate_or_a_stale_receipt_sends_its_group_to_the_per_message_path(
    seller: Tenant, buyer: Tenant
):
    await first_order_through_the_per_message_path(seller, buyer)
    message = outbox_message(seller, await sell(seller, "SO-6"))
    assert await common_case(buyer, message) == {0}
    assert await common_case(buyer, message) == set()     # recorded before
    assert [d.outcome for d in await deliver(buyer, message)] == ["duplicate"]

    receipts = buyer.fetch("SELECT subject, envelope FROM b2b_events WHERE event_type LIKE 'b2b.receipt%' ORDER BY id")
    messages = [InboundMessage(subject, bytes(raw)) for subject, raw in receipts]
    assert await common_case(seller, *messages) == set(range(len(messages)))
    assert await common_case(seller, *messages) == set()  # each already recorded
