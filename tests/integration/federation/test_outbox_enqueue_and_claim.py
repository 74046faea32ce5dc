"""The outbox in the seller's database: what `enqueue_event` writes, when the publisher is woken,
and how two publishers share the pending rows. A fake JetStream stands in for the broker here;
the real one is in test_federation_through_broker.py."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from yggdrasil.events.envelope import Envelope
from yggdrasil.events.signing import verify_envelope
from yggdrasil.federation.publisher import CLAIM_PENDING, publish_pending
from yggdrasil.tenant.adapters.outbox import enqueue_event, outbox_summary

from .b2b_harness import BUYER, Tenant, order_payload, sell

pytestmark = pytest.mark.integration


class FakeJetStream:
    """Acknowledges every publish after `delay`, or fails them all with `error`."""

    def __init__(self, delay: float = 0.0, error: Exception | None = None):
        self.delay, self.error = delay, error
        self.published: list[tuple[str, bytes, str]] = []

    async def publish_async(self, subject: str, payload: bytes, headers: dict[str, str], wait_stall: float):
        if self.error:
            raise self.error
        self.published.append((subject, payload, headers["Nats-Msg-Id"]))
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(self.delay, future.set_result, object())
        return future


async def test_each_order_numbers_its_events_from_one_and_the_row_holds_the_signed_envelope(seller: Tenant):
    first = [await sell(seller, "SO-5001", verb) for verb in ("created", "updated", "confirmed")]
    other = await sell(seller, "SO-5002")
    assert [e.sequence for e in first] + [other.sequence] == [1, 2, 3, 1]
    subject, raw, status = seller.fetch(
        "SELECT subject, envelope, status FROM b2b_events WHERE event_id = %s", (other.event_id,))[0]
    assert (subject, status) == (f"ygg.events.sales.{BUYER}.{seller.id}", "pending")
    stored = Envelope.decode(bytes(raw))
    assert stored == other
    verify_envelope(stored, seller.key.public_key())


async def test_a_rolled_back_change_gives_its_sequence_number_back(seller: Tenant):
    async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
        async with conn.transaction(force_rollback=True):
            await enqueue_event(conn, signing_key=seller.key, source=seller.id, destination=BUYER,
                                type="sales.order.created", aggregate_id="SO-5003",
                                payload=order_payload("SO-5003"), state_hash=None)
    assert (await sell(seller, "SO-5003")).sequence == 1
    assert seller.scalar("SELECT count(*) FROM b2b_events") == 1


async def test_the_publisher_is_notified_when_an_event_commits_and_not_before(seller: Tenant):
    async with await psycopg.AsyncConnection.connect(seller.dsn, autocommit=True) as listener:
        await listener.execute("LISTEN ygg_outbox")
        async with await psycopg.AsyncConnection.connect(seller.dsn) as writer:
            await enqueue_event(writer, signing_key=seller.key, source=seller.id, destination=BUYER,
                                type="sales.order.created", aggregate_id="SO-5004",
                                payload=order_payload("SO-5004"), state_hash=None)
            assert [n async for n in listener.notifies(timeout=0.3)] == []
            await writer.commit()
        assert [n.channel async for n in listener.notifies(timeout=2, stop_after=1)] == ["ygg_outbox"]


async def test_two_publishers_never_claim_the_same_pending_event(seller: Tenant):
    for n in range(6):
        await sell(seller, f"SO-51{n:02d}")
    slow, fast = FakeJetStream(delay=0.5), FakeJetStream()
    async with await psycopg.AsyncConnection.connect(seller.dsn) as a, \
            await psycopg.AsyncConnection.connect(seller.dsn) as b:
        first = asyncio.create_task(publish_pending(a, slow, limit=4))
        await asyncio.sleep(0.2)  # `a` holds its four rows while it waits for the broker
        second = await publish_pending(b, fast, limit=4)
        assert (await first).published == 4
    assert second.published == 2
    slow_ids = {msg_id for *_, msg_id in slow.published}
    fast_ids = {msg_id for *_, msg_id in fast.published}
    assert not slow_ids & fast_ids and len(slow_ids | fast_ids) == 6
    assert seller.scalar("SELECT count(*) FROM b2b_events WHERE status = 'published'") == 6


async def test_events_the_broker_did_not_take_stay_pending_with_the_error(seller: Tenant):
    await sell(seller, "SO-5200")
    async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
        round_ = await publish_pending(conn, FakeJetStream(error=ConnectionError("broker gone")), limit=10)
        summary = await outbox_summary(conn)
    assert (round_.claimed, round_.published) == (1, 0)
    assert seller.fetch("SELECT status, attempts, last_error FROM b2b_events") == [
        ("pending", 1, "ConnectionError: broker gone")]
    assert (summary.pending, summary.failed_attempts, summary.last_error) == (1, 1, "ConnectionError: broker gone")
    assert summary.oldest_pending_seconds is not None and summary.oldest_pending_seconds >= 0


async def test_a_replayed_event_is_published_under_a_new_message_id_and_keeps_its_status(seller: Tenant):
    envelope = await sell(seller, "SO-5300")
    seller.fetch("UPDATE b2b_events SET status = 'acknowledged', replay_requested_at = now(), replays = 2 "
                 "RETURNING 1")
    broker = FakeJetStream()
    async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
        assert (await publish_pending(conn, broker, limit=10)).published == 1
        assert (await publish_pending(conn, broker, limit=10)).claimed == 0
    assert [msg_id for *_, msg_id in broker.published] == [f"{envelope.event_id}:replay:2"]
    assert seller.fetch("SELECT status, replay_requested_at FROM b2b_events") == [("acknowledged", None)]


async def test_a_claim_reads_the_pending_rows_not_the_history_sent_before_them(seller: Tenant):
    # 3,000 events sent and answered, then 5 pending and 1 asked for again, with statistics
    # taken while all were pending (as after a broker outage): the claim still finds its rows
    # through the partial indexes, without filtering its way through the history.
    seller.fetch("""
        INSERT INTO b2b_events (event_id, event_type, module, source_tenant, dest_tenant, aggregate_type,
                                aggregate_id, sequence, subject, envelope)
        SELECT gen_random_uuid(), 'sales.order.created', 'sales', %s, %s, 'sales_order', 'SO-H' || g, 1,
               'ygg.events.sales.' || %s || '.' || %s, '\\x7b7d'::bytea
          FROM generate_series(1, 3006) AS g
        RETURNING 1""", (seller.id, BUYER, BUYER, seller.id))
    with psycopg.connect(seller.dsn, autocommit=True) as conn:
        conn.execute("ANALYZE b2b_events")
    seller.fetch("UPDATE b2b_events SET status = 'acknowledged' WHERE aggregate_id <> ALL(%s) RETURNING 1",
                 ([f"SO-H{n}" for n in range(3001, 3006)],))
    seller.fetch("UPDATE b2b_events SET replay_requested_at = now() WHERE aggregate_id = 'SO-H7' RETURNING 1")

    async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
        cur = await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + CLAIM_PENDING, {"limit": 250})
        [[[plan]]] = await cur.fetchall()
        cur = await conn.execute(CLAIM_PENDING, {"limit": 250})
        claimed = [row[0] for row in await cur.fetchall()]
        await conn.rollback()

    def nodes(node):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    read = [(n["Node Type"], n.get("Rows Removed by Filter", 0)) for n in nodes(plan["Plan"])]
    assert all(removed == 0 for _, removed in read), read
    assert "Seq Scan" not in {node_type for node_type, _ in read}, read
    expected = seller.fetch("SELECT id FROM b2b_events WHERE aggregate_id IN ('SO-H7', 'SO-H3001', 'SO-H3002', "
                            "'SO-H3003', 'SO-H3004', 'SO-H3005') ORDER BY id")
    assert claimed == [row[0] for row in expected]
