"""`ygg tenant depart` end to end: two tenants trade through a real nats-server with real sidecar
processes, then the seller departs. The export is written, the registry says departed, the buyer
learns it from the seller's signed event (and answers it), keeps its purchase order with its
linkage fields, and refuses whatever the departed seller sends afterwards."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from yggdrasil.devstack.nats import EmbeddedNats
from yggdrasil.events.catalogue import PartnerDepartedPayload, ResyncRequestPayload
from yggdrasil.events.envelope import Envelope
from yggdrasil.ops.export import verify_export
from yggdrasil.tenant.adapters.outbox import enqueue_event

from lifecycle_harness import (  # noqa: F401 - fixtures
    BUYER,
    SELLER,
    SidecarProcess,
    Tenant,
    deliver,
    eventually,
    open_broker,
    outbox_message,
    purchase_orders,
    register,
    sell,
    trading_tenants,
    ygg,
)

pytestmark = pytest.mark.integration

PURCHASE_ORDER = ("SELECT id, supplier_id, b2b_source_tenant, b2b_source_order_id, state, b2b_source_state "
                  "FROM purchasing_orders ORDER BY id")


def registry_status(central_dsn: str, tenant: str) -> tuple:
    with psycopg.connect(central_dsn) as conn:
        return conn.execute("SELECT status, status_changed_at > created_at FROM tenants WHERE id = %s",
                            (tenant,)).fetchone()


async def test_a_departing_seller_is_exported_and_marked_departed_and_its_buyer_keeps_the_orders(
    trading_tenants: tuple[Tenant, Tenant], open_broker: EmbeddedNats, central_dsn: str, tmp_path: Path,  # noqa: F811
):
    seller, buyer = trading_tenants
    seller.broker_url = buyer.broker_url = open_broker.url
    register(central_dsn, seller)
    register(central_dsn, buyer)
    sidecars = [SidecarProcess(tenant, tmp_path) for tenant in (seller, buyer)]
    for sidecar in sidecars:
        sidecar.start()
    try:
        # They trade: an order federated, and its receipt back at the seller.
        await sell(seller, "SO-7001")
        await eventually(lambda: [po[0] for po in purchase_orders(buyer)] == ["SO-7001"], timeout=30,
                         what="the buyer's purchase order")
        await eventually(lambda: seller.fetch("SELECT status FROM b2b_events") == [("acknowledged",)], timeout=30,
                         what="the buyer's receipt at the seller")
        order_before = buyer.fetch(PURCHASE_ORDER)
        assert [row[2:4] for row in order_before] == [(SELLER, "SO-7001")]

        export_dir = tmp_path / "acme-export"
        departed = ygg("tenant", "depart", SELLER, "--dsn", seller.dsn, "--central-dsn", central_dsn,
                       "--export-dir", str(export_dir), "--signing-key", str(tmp_path / f"{SELLER}.key"),
                       "--wait", "30", "--note", "Closing down; thank you for trading with us.")
        assert departed.returncode == 0, departed.stderr + departed.stdout
        assert f"partner       {BUYER}: acknowledged (applied)" in departed.stdout
        assert f"registry      {SELLER} departed at" in departed.stdout

        # The export, complete, and holding the trade and the audit trail.
        assert verify_export(export_dir) == []
        manifest = json.loads((export_dir / "manifest.json").read_text())
        rows = {entry["table"]: entry["rows"] for entry in manifest["tables"]}
        assert rows["b2b_events"] == 1 and rows["audit_change_log"] > 0
        exported_events = json.loads((export_dir / "b2b_events.json").read_text())
        assert [(e["event_type"], e["aggregate_id"], e["status"]) for e in exported_events] == [
            ("sales.order.created", "SO-7001", "acknowledged")]

        # The registry, and the buyer's copy of it, which the event changed (with the seller as actor).
        assert registry_status(central_dsn, SELLER) == ("departed", True)
        assert registry_status(central_dsn, BUYER) == ("active", False)
        assert buyer.fetch("SELECT status FROM b2b_partners WHERE tenant_id = %s", (SELLER,)) == [("departed",)]
        assert buyer.fetch("SELECT event_type, outcome FROM b2b_inbox WHERE event_type = 'b2b.partner.departed'") == [
            ("b2b.partner.departed", "applied")]
        assert buyer.fetch(
            "SELECT actor, old_values->>'status', new_values->>'status' FROM audit_change_log "
            "WHERE table_name = 'b2b_partners' AND operation = 'UPDATE'") == [(f"b2b:{SELLER}", "active", "departed")]
        assert seller.fetch("SELECT dest_tenant, status, receipt_outcome FROM b2b_events "
                            "WHERE event_type = 'b2b.partner.departed'") == [(BUYER, "acknowledged", "applied")]

        # The buyer's purchase order is untouched, linkage included.
        assert buyer.fetch(PURCHASE_ORDER) == order_before

        # Whatever the departed seller sends later is refused and kept in quarantine.
        await sell(seller, "SO-7002")
        await eventually(lambda: buyer.fetch("SELECT source_tenant, reason FROM b2b_quarantine"), timeout=30,
                         what="the late event quarantined")
        assert buyer.fetch("SELECT source_tenant, reason FROM b2b_quarantine") == [(SELLER, "partner.inactive")]
        assert [po[0] for po in purchase_orders(buyer)] == ["SO-7001"]
        assert buyer.fetch(PURCHASE_ORDER) == order_before
    finally:
        for sidecar in sidecars:
            sidecar.stop()

    # Departing twice: refused, nothing changes.
    again = ygg("tenant", "depart", SELLER, "--dsn", seller.dsn, "--central-dsn", central_dsn,
                "--export-dir", str(tmp_path / "second-export"), "--signing-key", str(tmp_path / f"{SELLER}.key"))
    assert again.returncode == 1
    assert f"tenant {SELLER} already departed" in again.stderr
    assert not (tmp_path / "second-export").exists()
    assert seller.scalar("SELECT count(*) FROM b2b_events WHERE event_type = 'b2b.partner.departed'") == 1


async def seller_event(seller: Tenant, type: str, aggregate_type: str, aggregate_id: str, payload) -> Envelope:
    """A signed event in the seller's outbox, committed (what its services would write)."""
    async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
        envelope = await enqueue_event(conn, signing_key=seller.key, source=seller.id, destination=BUYER, type=type,
                                       aggregate_type=aggregate_type, aggregate_id=aggregate_id, payload=payload,
                                       state_hash=None)
        await conn.commit()
    return envelope


async def test_a_departure_refuses_the_partners_later_events_in_the_same_batch_and_speaks_only_for_its_source(
    trading_tenants: tuple[Tenant, Tenant],  # noqa: F811
):
    seller, buyer = trading_tenants
    now = datetime.now(UTC)
    # A departure that names someone else: refused, and the seller stays active.
    for_another = await seller_event(seller, "b2b.partner.departed", "tenant", SELLER,
                                     PartnerDepartedPayload(tenant_id="charlie-trader", departed_at=now))
    [refused] = await deliver(buyer, outbox_message(seller, for_another))
    assert (refused.outcome, refused.reason) == ("rejected", "departure.not_self")
    assert buyer.fetch("SELECT status FROM b2b_partners WHERE tenant_id = %s", (SELLER,)) == [("active",)]

    # The real departure, then another event of the seller in the same fetched batch.
    departure = await seller_event(seller, "b2b.partner.departed", "tenant", SELLER,
                                   PartnerDepartedPayload(tenant_id=SELLER, departed_at=now))
    later = await seller_event(seller, "b2b.resync.request", "purchase_order", "PO-1",
                               ResyncRequestPayload(aggregate_id="PO-1", from_sequence=1))
    dispositions = await deliver(buyer, outbox_message(seller, departure), outbox_message(seller, later))

    assert [(d.outcome, d.reason) for d in dispositions] == [("applied", None), ("quarantined", "partner.inactive")]
    assert buyer.fetch("SELECT status FROM b2b_partners WHERE tenant_id = %s", (SELLER,)) == [("departed",)]
    assert buyer.fetch("SELECT reason FROM b2b_quarantine ORDER BY id") == [("departure.not_self",),
                                                                            ("partner.inactive",)]
    # Answered with a receipt for the departure only (the refused one is a b2b event: not answered).
    receipts = buyer.fetch("SELECT dest_tenant, envelope FROM b2b_events WHERE event_type = 'b2b.receipt'")
    assert [(dest, Envelope.decode(bytes(raw)).payload["event_id"]) for dest, raw in receipts] == [
        (SELLER, str(departure.event_id))]
