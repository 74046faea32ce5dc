"""A buyer restored from a backup, through a real nats-server: the purchase orders it applied
after the backup are gone, and nothing in the federation brings them back by itself. The
seller's rows are acknowledged (no receipt timeout), the broker delivered the events (the
buyer's consumer acked them), and the buyer has nothing held behind a gap. The seller's operator
runs `ygg replay --to <buyer> --since <before the backup>`: each lost purchase order comes back
once, in its order's sequence, and what the buyer still had stays as it was."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from yggdrasil import db
from yggdrasil.devstack.nats import EmbeddedNats

from .b2b_harness import (
    BUYER,
    Tenant,
    consumer_drained,
    eventually,
    order_lifecycle,
    outbox_statuses,
    running_sidecar,
    sell,
    source_states,
)

pytestmark = pytest.mark.integration

YGG = Path(sys.executable).parent / "ygg"


def database_of(tenant: Tenant) -> str:
    return psycopg.conninfo.conninfo_to_dict(tenant.dsn)["dbname"]


def all_acknowledged(seller: Tenant, count: int) -> bool:
    statuses = outbox_statuses(seller)
    return len(statuses) == count and all(status == "acknowledged" for status, _ in statuses)


async def ygg(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(str(YGG), *args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


async def test_a_buyer_restored_from_a_backup_gets_what_it_lost_back_once_by_replay(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats, pg_admin_dsn: str
):
    seller, buyer = federation
    async with running_sidecar(seller), running_sidecar(buyer):
        await sell(seller, "SO-7001", "created", "draft")
        await eventually(lambda: all_acknowledged(seller, 1), what="the order before the backup")

    # The buyer's nightly backup (a copy of its database, which is what a restore gives back).
    backup = f"{database_of(buyer)}_backup"
    db.create_database(pg_admin_dsn, backup, template=database_of(buyer))
    try:
        since = datetime.now(UTC)
        async with running_sidecar(seller), running_sidecar(buyer):
            await order_lifecycle(seller, "SO-7002")  # created, confirmed, shipped
            await sell(seller, "SO-7003", "created", "draft")
            await eventually(lambda: all_acknowledged(seller, 5), what="every receipt before the loss")
        assert source_states(buyer) == {"SO-7001": "draft", "SO-7002": "shipped", "SO-7003": "draft"}

        # The buyer's host is lost, and its database restored from the backup.
        db.drop_database(pg_admin_dsn, database_of(buyer))
        db.create_database(pg_admin_dsn, database_of(buyer), template=backup)
    finally:
        db.drop_database(pg_admin_dsn, backup)
    assert source_states(buyer) == {"SO-7001": "draft"}

    async with running_sidecar(seller), running_sidecar(buyer) as buyer_status:
        await eventually(lambda: buyer_status.relay.state == "running", what="the restored buyer's relay")
        # The broker has nothing more for it: the buyer's consumer acked all five before the loss.
        assert await consumer_drained(broker.url, BUYER)
        assert source_states(buyer) == {"SO-7001": "draft"}
        code, out, err = await ygg("replay", "--to", BUYER, "--since", since.isoformat(),
                                   "--dsn", seller.dsn)
        assert code == 0, err
        assert out.startswith(f"marked 4 order events to {BUYER} answered since ")
        await eventually(lambda: len(source_states(buyer)) == 3, what="the lost purchase orders")
        await eventually(lambda: buyer.scalar("SELECT count(*) FROM b2b_events WHERE status = 'pending'") == 0,
                         what="the buyer's receipts for the replayed events, sent")
        await eventually(lambda: seller.scalar(
            "SELECT count(*) FROM b2b_events WHERE replay_requested_at IS NOT NULL") == 0,
            what="the replayed rows, sent")

    assert source_states(buyer) == {"SO-7001": "draft", "SO-7002": "shipped", "SO-7003": "draft"}
    assert buyer.scalar("SELECT count(*) FROM purchasing_orders WHERE b2b_source_tenant = %s", (seller.id,)) == 3
    # Applied in sequence: created, then confirmed, then shipped.
    assert buyer.fetch(
        "SELECT event_type, outcome FROM b2b_inbox WHERE aggregate_id = 'SO-7002' ORDER BY sequence") == [
        ("sales.order.created", "applied"), ("sales.order.confirmed", "applied"), ("sales.order.shipped", "applied")]
    assert buyer.scalar("SELECT count(*) FROM b2b_quarantine") == 0
    assert seller.scalar("SELECT count(*) FROM b2b_quarantine") == 0
    assert seller.scalar("SELECT count(*) FROM b2b_divergences") == 0
    assert [status for status, _ in outbox_statuses(seller)] == ["acknowledged"] * 5
    assert seller.fetch(
        "SELECT aggregate_id, replays FROM b2b_events WHERE event_type LIKE 'sales.%%' ORDER BY id") == [
        ("SO-7001", 0), ("SO-7002", 1), ("SO-7002", 1), ("SO-7002", 1), ("SO-7003", 1)]
