"""One effect per event when the same event reaches the buyer more than once.

Published twice under the same message id (a producer retry), and again under another id
(standing in for a retry after the broker's de-duplication window: the buyer cannot tell the
two apart, since only the message id differs): test_federation_through_broker.py,
`test_the_same_event_published_twice_creates_one_purchase_order`. Here: the redelivery that
follows a relay killed between its commit and its ack, and the copy the seller sends itself when
the buyer's receipt never reached it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from yggdrasil.broker.streams import consumer_spec
from yggdrasil.devstack.nats import EmbeddedNats
from yggdrasil.federation.keys import write_signing_key

from .b2b_harness import (
    BUYER,
    Tenant,
    broker_admin,
    consumer_drained,
    create_consumers,
    eventually,
    outbox_statuses,
    purchase_orders,
    running_sidecar,
    sell,
)

pytestmark = pytest.mark.integration

# `ygg sidecar run`, except that the first `ack` kills the process (SIGKILL, no cleanup): the
# relay has committed the batch and dies before the broker hears about it.
DIE_AT_FIRST_ACK = """
import os, signal, sys
from nats.aio.msg import Msg

async def die(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

Msg.ack = die
from yggdrasil.cli import main
sys.argv = ["ygg", "sidecar", "run"]
main()
"""


async def test_an_event_redelivered_after_the_relay_died_between_commit_and_ack_creates_one_purchase_order(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats, tmp_path: Path
):
    seller, buyer = federation
    await create_consumers(broker.url, BUYER, ack_wait=1.0)
    key_path = tmp_path / "buyer.key"
    write_signing_key(key_path, buyer.key)
    env = {**os.environ, "YGG_TENANT_ID": buyer.id, "YGG_TENANT_DSN": buyer.dsn, "YGG_BROKER_URL": broker.url,
           "YGG_SIGNING_KEY_PATH": str(key_path), "YGG_LOG_JSON": "true"}
    async with running_sidecar(seller):
        await sell(seller, "SO-7001")
        await eventually(lambda: outbox_statuses(seller) == [("published", None)], what="the event published")
        with open(tmp_path / "dying-relay.log", "wb") as log:
            relay = subprocess.Popen([sys.executable, "-c", DIE_AT_FIRST_ACK], env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
        assert await asyncio.to_thread(relay.wait, 30) == -9
        # Committed, never acknowledged: the order exists, the broker still owes the message.
        assert len(purchase_orders(buyer)) == 1
        spec = consumer_spec(BUYER, "sales")
        async with broker_admin(broker.url) as nc:
            info = await nc.jetstream().consumer_info(spec.stream, spec.durable)
        assert (info.num_ack_pending, info.ack_floor.stream_seq) == (1, 0)

        async with running_sidecar(buyer) as status:
            await eventually(lambda: consumer_drained(broker.url, BUYER), what="the redelivery answered")
            await eventually(lambda: outbox_statuses(seller) == [("acknowledged", "applied")],
                             what="the seller's row acknowledged")
    assert status.relay.outcomes == {"duplicate": 1}
    assert len(purchase_orders(buyer)) == 1
    assert buyer.fetch("SELECT outcome FROM b2b_inbox") == [("applied",)]


async def test_an_event_sent_again_after_its_receipt_was_lost_is_answered_and_creates_no_second_order(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats
):
    seller, buyer = federation
    seller.extra_settings.update(receipt_timeout_seconds=1.0, receipt_resend_max_interval_seconds=2.0)
    async with running_sidecar(seller):
        envelope = await sell(seller, "SO-7002")
        await eventually(lambda: outbox_statuses(seller) == [("published", None)], what="the event published")
    async with running_sidecar(buyer) as buyer_status:
        await eventually(lambda: buyer.scalar("SELECT status FROM b2b_events") == "published",
                         what="the buyer's receipt published")
        # The receipt is lost before the seller reads it (purged, as retention would).
        async with broker_admin(broker.url) as nc:
            await nc.jetstream().purge_stream("YGG_B2B")
        async with running_sidecar(seller) as seller_status:
            await eventually(lambda: outbox_statuses(seller) == [("acknowledged", "applied")], timeout=20,
                             what="the seller's row acknowledged by the answer to its copy")
    [(resends,)] = seller.fetch("SELECT resends FROM b2b_events")
    assert resends >= 1 and seller_status.publisher.resent_total >= 1
    assert buyer_status.relay.outcomes["applied"] == 1 and buyer_status.relay.outcomes["duplicate"] >= 1
    assert len(purchase_orders(buyer)) == 1
    # Every answer says what was recorded, applied (not "duplicate").
    rows = buyer.fetch("SELECT envelope FROM b2b_events ORDER BY id")
    receipts = [json.loads(bytes(raw))["payload"] for (raw,) in rows]
    assert len(receipts) >= 2
    assert {(r["event_id"], r["outcome"]) for r in receipts} == {(str(envelope.event_id), "applied")}
