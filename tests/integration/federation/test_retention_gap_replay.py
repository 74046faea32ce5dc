"""Events the broker no longer has: expired past a `max_age` of a few seconds while the buyer
was offline, or deleted from the stream by hand. Nothing is missing in the end, and each gap is
filled from the seller's outbox by the mechanism that can see it:

- a later event of the order reached the buyer and is held: the buyer asks for a resync;
- the order's last event is the one lost, so nothing is held and the buyer sees no gap: the
  seller's receipt timeout sends it again.

(A first event deleted by hand, with later ones held behind it, is resynced in
test_federation_through_broker.py, `test_an_event_deleted_from_the_stream_is_replayed_...`.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from yggdrasil.broker.streams import declared_streams, ensure_streams, stream_name
from yggdrasil.broker.subjects import event_subject
from yggdrasil.devstack.nats import EmbeddedNats

from .b2b_harness import (
    BUYER,
    SELLER,
    Tenant,
    broker_admin,
    eventually,
    outbox_statuses,
    running_sidecar,
    sell,
    source_states,
)

pytestmark = pytest.mark.integration

MAX_AGE = 2.0
SALES = stream_name("sales")


@pytest.fixture
async def short_retention(federation: tuple[Tenant, Tenant], broker: EmbeddedNats) -> AsyncIterator[None]:
    """Streams that keep events `MAX_AGE` seconds; the sidecars must not declare them back to
    the 7-day default."""
    async with broker_admin(broker.url) as nc:
        await ensure_streams(nc.jetstream(), declared_streams(max_age=MAX_AGE))
    for tenant in federation:
        tenant.extra_settings["broker_ensure_streams"] = False
    yield


async def stream_is_empty(broker: EmbeddedNats, stream: str = SALES) -> bool:
    async with broker_admin(broker.url) as nc:
        return (await nc.jetstream().stream_info(stream)).state.messages == 0


async def buyer_online_once(buyer: Tenant) -> None:
    """The buyer's sidecar has run (its durable consumers exist, with an ack floor) and is
    offline from now on."""
    async with running_sidecar(buyer) as status:
        await eventually(lambda: status.relay.state == "running", what="the buyer's relay")


def resync_requests(buyer: Tenant) -> int:
    return buyer.scalar("SELECT count(*) FROM b2b_events WHERE event_type = 'b2b.resync.request'")


@pytest.mark.usefixtures("short_retention")
async def test_an_expired_event_with_a_later_one_held_behind_it_is_resynced_from_the_sellers_outbox(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats
):
    seller, buyer = federation
    buyer.extra_settings["resync_after_seconds"] = 1.0
    await buyer_online_once(buyer)
    async with running_sidecar(seller):
        await sell(seller, "SO-8001", "created", "draft")
        await eventually(lambda: outbox_statuses(seller) == [("published", None)], what="`created` published")
        await eventually(lambda: stream_is_empty(broker), what="`created` expired")
        await sell(seller, "SO-8001", "confirmed", "confirmed")
        await eventually(lambda: len(outbox_statuses(seller)) == 2 and outbox_statuses(seller)[1][0] == "published",
                         what="`confirmed` published")
        async with running_sidecar(buyer):
            await eventually(lambda: source_states(buyer) == {"SO-8001": "confirmed"}, timeout=20,
                             what="the gap filled and the order confirmed")
            await eventually(lambda: outbox_statuses(seller) == [("acknowledged", "applied")] * 2,
                             what="both events acknowledged")
    assert resync_requests(buyer) >= 1
    # Found by the buyer's resync, not by the seller's receipt timeout (60 s here).
    assert seller.fetch("SELECT sequence, replays > 0, resends FROM b2b_events ORDER BY sequence") == [
        (1, True, 0), (2, True, 0)]
    assert buyer.fetch("SELECT sequence, outcome FROM b2b_inbox ORDER BY sequence") == [(1, "applied"), (2, "applied")]


@pytest.mark.usefixtures("short_retention")
async def test_an_orders_last_event_expired_while_the_buyer_was_offline_is_sent_again_after_the_receipt_timeout(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats
):
    seller, buyer = federation
    seller.extra_settings["receipt_timeout_seconds"] = 3.0
    async with running_sidecar(seller), running_sidecar(buyer):
        await sell(seller, "SO-8002", "created", "draft")
        await eventually(lambda: outbox_statuses(seller) == [("acknowledged", "applied")], what="`created` applied")
    # The buyer is offline; `confirmed` is published (the seller's sidecar stops before its
    # receipt is due) and expires.
    async with running_sidecar(seller):
        await sell(seller, "SO-8002", "confirmed", "confirmed")
        await eventually(lambda: outbox_statuses(seller)[1:] == [("published", None)], what="`confirmed` published")
    await eventually(lambda: stream_is_empty(broker), what="`confirmed` expired")
    async with running_sidecar(buyer) as buyer_status:
        # Back, the buyer has nothing to read and nothing held: it sees no gap.
        await eventually(lambda: "sales" in buyer_status.relay.caught_up, what="the buyer's backlog read")
        assert source_states(buyer) == {"SO-8002": "draft"}
        async with running_sidecar(seller) as seller_status:
            await eventually(lambda: source_states(buyer) == {"SO-8002": "confirmed"}, timeout=20,
                             what="the last event sent again and applied")
            await eventually(lambda: outbox_statuses(seller) == [("acknowledged", "applied")] * 2,
                             what="both events acknowledged")
    assert resync_requests(buyer) == 0, "the buyer saw no gap"
    assert seller_status.publisher.resent_total == 1
    assert seller.fetch("SELECT sequence, resends FROM b2b_events ORDER BY sequence") == [(1, 0), (2, 1)]
    assert buyer.fetch("SELECT sequence, outcome FROM b2b_inbox ORDER BY sequence") == [(1, "applied"), (2, "applied")]


async def test_an_orders_last_event_deleted_from_the_stream_is_sent_again_after_the_receipt_timeout(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats
):
    seller, buyer = federation
    seller.extra_settings.update(receipt_timeout_seconds=1.0)
    await buyer_online_once(buyer)
    async with running_sidecar(seller):
        await sell(seller, "SO-8003", "created", "draft")
        await sell(seller, "SO-8003", "confirmed", "confirmed")
        await eventually(lambda: outbox_statuses(seller) == [("published", None)] * 2, what="both published")
        async with broker_admin(broker.url) as nc:
            js = nc.jetstream()
            last = await js.get_last_msg(SALES, event_subject("sales", BUYER, SELLER))
            assert await js.delete_msg(SALES, last.seq)  # `confirmed`, before the buyer read it
        async with running_sidecar(buyer):
            await eventually(lambda: source_states(buyer) == {"SO-8003": "confirmed"}, timeout=20,
                             what="the deleted event sent again and applied")
            await eventually(lambda: outbox_statuses(seller) == [("acknowledged", "applied")] * 2,
                             what="both events acknowledged")
    assert resync_requests(buyer) == 0, "the buyer saw no gap"
    assert seller.scalar("SELECT resends FROM b2b_events WHERE sequence = 2") >= 1
