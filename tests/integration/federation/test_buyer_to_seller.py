"""The other direction, on two real tenant databases: BRAVO-BUYER raises a purchase order with
its partner supplier ACME-SELLER, which becomes one sales order there; the seller's steps on it
come back to the buyer's original purchase order, and the buyer's receipt of the goods goes back
to the sales order. Each side's order services write the outbox rows; `carry` stands in for the
two sidecars and the broker, except in the last test, which runs both sidecars and a real
nats-server. Also here: what a divergence is, in the seller-to-buyer direction."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest

from yggdrasil.events.catalogue import payload_state_hash
from yggdrasil.federation.approvals import approve_inbound_document
from yggdrasil.federation.relay import InboundMessage
from yggdrasil.tenant import services
from yggdrasil.tenant.adapters.b2b_views import order_federation
from yggdrasil.tenant.adapters.orders import PURCHASES, SALES, PgOrderRepository
from yggdrasil.tenant.domain.commands import CreateSalesOrder, NewLine

from .b2b_harness import (
    BUYER,
    BUYER_SKU,
    SELLER,
    SELLER_SKU,
    Tenant,
    act,
    buy,
    carry,
    change_purchase_order,
    deliver,
    divergences,
    eventually,
    outbound,
    outbox_message,
    prepare_trade_both_ways,
    purchase_orders,
    running_sidecar,
    sales_orders,
    sell,
)

pytestmark = pytest.mark.integration


def sales_order_id(seller: Tenant, po_id: int) -> int:
    return seller.scalar("SELECT id FROM crm_sales_orders WHERE b2b_source_tenant = %s AND b2b_source_order_id = %s",
                         (BUYER, str(po_id)))


def outbox(tenant: Tenant) -> list[tuple]:
    """(type, status, receipt outcome, receipt reason) of the tenant's order events, in order."""
    return tenant.fetch("SELECT event_type, status, receipt_outcome, receipt_reason FROM b2b_events "
                        "WHERE module <> 'b2b' ORDER BY id")


def purchase_order(buyer: Tenant, po_id: int) -> tuple:
    return buyer.fetch("SELECT state, b2b_counterpart_order_id, b2b_counterpart_state, b2b_source_tenant "
                       "FROM purchasing_orders WHERE id = %s", (po_id,))[0]


async def test_a_buyers_purchase_order_becomes_exactly_one_sales_order_at_the_supplier(seller: Tenant, buyer: Tenant):
    supplier = await prepare_trade_both_ways(seller, buyer)
    po_id = await buy(buyer, supplier)
    [created] = buyer.fetch("SELECT subject, envelope FROM b2b_events")
    assert [d.outcome for d in await carry(buyer, seller)] == ["applied"]

    # The buyer's SKU is mapped to the seller's item and kept with the line; the customer is
    # the one created for the partner, and the change is audited as the partner's.
    assert sales_orders(seller) == [(str(po_id), "draft", "draft", "EUR", BUYER, 1, SELLER_SKU, BUYER_SKU,
                                     Decimal("3.000"), Decimal("19.9000"))]
    assert seller.fetch("SELECT code, partner_tenant_id FROM customers") == [(f"b2b:{BUYER}", BUYER)]
    assert seller.scalar("SELECT actor FROM audit_change_log WHERE table_name = 'crm_sales_orders' "
                         "AND operation = 'INSERT'") == f"b2b:{BUYER}"
    # Delivered again (a redelivery, a producer retry): still one sales order.
    again = await deliver(seller, InboundMessage(created[0], bytes(created[1])))
    assert [d.outcome for d in again] == ["duplicate"]
    assert seller.scalar("SELECT count(*) FROM crm_sales_orders") == 1
    # A faithful application: the seller's view hashes as the buyer's order did.
    assert divergences(seller) == []
    # Nothing goes back for the sales order's creation but the receipt (which, still unsent,
    # answers the copy too).
    assert seller.fetch("SELECT event_type FROM b2b_events") == [("b2b.receipt",)]


async def test_the_supplier_confirms_and_ships_and_the_buyers_original_purchase_order_follows(
    seller: Tenant, buyer: Tenant
):
    supplier = await prepare_trade_both_ways(seller, buyer)
    po_id = await buy(buyer, supplier)
    await carry(buyer, seller)
    so_id = sales_order_id(seller, po_id)
    await act(seller, services.confirm_sales_order, so_id)
    await act(seller, services.ship_sales_order, so_id)

    # The seller's steps go to the buyer, naming the buyer's order.
    sent = [json.loads(bytes(raw)) for (raw,) in seller.fetch(
        "SELECT envelope FROM b2b_events WHERE module = 'sales' ORDER BY id")]
    assert [(e["type"], e["payload"]["counterpart_order_id"], e["sequence"]) for e in sent] == [
        ("sales.order.confirmed", str(po_id), 1), ("sales.order.shipped", str(po_id), 2)]
    assert [d.outcome for d in await carry(seller, buyer, "sales.%")] == ["applied", "applied"]

    # The buyer's original purchase order moved; no second one was created.
    assert buyer.scalar("SELECT count(*) FROM purchasing_orders") == 1
    assert purchase_order(buyer, po_id) == ("confirmed", str(so_id), "shipped", None)
    audit = buyer.fetch(
        """
        SELECT operation, new_values ->> 'state', new_values ->> 'b2b_counterpart_state', actor FROM audit_change_log
         WHERE table_name = 'purchasing_orders' AND record_id = %s ORDER BY seq
        """, (po_id,))
    assert [row[:3] for row in audit] == [("INSERT", "draft", None), ("UPDATE", "confirmed", "confirmed"),
                                          ("UPDATE", "confirmed", "shipped")]
    assert [row[3] for row in audit[1:]] == [f"b2b:{SELLER}"] * 2

    # The buyer receives the goods; the seller's sales order records it and stays shipped.
    await act(buyer, services.receive_purchase_order, po_id)
    assert [d.outcome for d in await carry(buyer, seller, "purchasing.%")] == ["applied"]
    assert seller.fetch("SELECT state, b2b_source_state FROM crm_sales_orders") == [("shipped", "received")]
    assert [row[1] for row in seller.fetch(
        "SELECT new_values ->> 'state', new_values ->> 'b2b_source_state' FROM audit_change_log "
        "WHERE table_name = 'crm_sales_orders' ORDER BY seq")] == ["draft", "draft", "draft", "received"]

    # Every receipt back: each side sees its events applied, and neither found a divergence.
    await carry(seller, buyer, "b2b.receipt%")
    await carry(buyer, seller, "b2b.receipt%")
    assert outbox(buyer) == [("purchasing.order.created", "acknowledged", "applied", None),
                             ("purchasing.order.received", "acknowledged", "applied", None)]
    assert outbox(seller) == [("sales.order.confirmed", "acknowledged", "applied", None),
                              ("sales.order.shipped", "acknowledged", "applied", None)]
    assert divergences(buyer) == [] and divergences(seller) == []

    # What each side's API shows for the order.
    async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
        so = await PgOrderRepository(conn, SALES).get(so_id)
        seen = (await order_federation(conn, "sales_order", [so]))[so_id]
    assert (seen["direction"], seen["partner"], seen["state"], seen["partner_state"], seen["last_event_type"],
            seen["receipt_outcome"]) == ("inbound", BUYER, "applied", "received", "sales.order.shipped", "applied")
    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        po = await PgOrderRepository(conn, PURCHASES).get(po_id)
        seen = (await order_federation(conn, "purchase_order", [po]))[po_id]
    assert (seen["direction"], seen["partner"], seen["state"], seen["partner_state"]) == (
        "outbound", SELLER, "applied", "shipped")


async def test_the_buyers_change_to_a_draft_replaces_the_sales_orders_lines(seller: Tenant, buyer: Tenant):
    supplier = await prepare_trade_both_ways(seller, buyer)
    po_id = await buy(buyer, supplier)
    await carry(buyer, seller)
    await change_purchase_order(buyer, po_id, quantity="5")
    assert [d.outcome for d in await carry(buyer, seller)] == ["applied"]
    assert sales_orders(seller) == [(str(po_id), "draft", "draft", "EUR", BUYER, 1, SELLER_SKU, BUYER_SKU,
                                     Decimal("5.000"), Decimal("19.9000"))]
    assert seller.scalar("SELECT count(*) FROM audit_change_log WHERE table_name = 'crm_sales_order_lines' "
                         "AND operation = 'DELETE'") == 1
    assert divergences(seller) == []


async def test_a_cancelled_purchase_order_cancels_the_sales_order(seller: Tenant, buyer: Tenant):
    supplier = await prepare_trade_both_ways(seller, buyer)
    po_id = await buy(buyer, supplier)
    await carry(buyer, seller)
    await act(buyer, services.cancel_purchase_order, po_id)
    assert [d.outcome for d in await carry(buyer, seller)] == ["applied"]
    assert seller.fetch("SELECT state, b2b_source_state, cancelled_at IS NOT NULL FROM crm_sales_orders") == [
        ("cancelled", "cancelled", True)]
    # Applying the buyer's cancellation is not a step of ours to report back: our outbox holds
    # receipts only (one per event, or a bundle of those the common case applied).
    assert {row[0] for row in seller.fetch("SELECT event_type FROM b2b_events")} <= {"b2b.receipt", "b2b.receipts"}


async def test_a_shipped_sales_order_refuses_the_buyers_cancellation_with_a_reason(seller: Tenant, buyer: Tenant):
    supplier = await prepare_trade_both_ways(seller, buyer)
    po_id = await buy(buyer, supplier)
    await carry(buyer, seller)
    so_id = sales_order_id(seller, po_id)
    await act(seller, services.confirm_sales_order, so_id)
    await act(seller, services.ship_sales_order, so_id)
    await act(buyer, services.confirm_purchase_order, po_id)  # the buyer's own approval step
    await act(buyer, services.cancel_purchase_order, po_id)   # before the seller's news arrived
    [refused] = await carry(buyer, seller, "purchasing.%")
    assert (refused.outcome, refused.reason) == ("rejected", "order.invalid_transition")
    assert seller.fetch("SELECT state FROM crm_sales_orders") == [("shipped",)]
    await carry(seller, buyer, "b2b.receipt%")
    [(_, status, outcome, reason)] = outbox(buyer)[1:]
    assert (status, outcome) == ("rejected", "rejected")
    assert reason.startswith(f"order.invalid_transition: sales order {so_id} is shipped and cannot be cancelled")


async def test_an_update_after_the_supplier_confirmed_is_rejected_and_the_buyer_sees_why(
    seller: Tenant, buyer: Tenant
):
    supplier = await prepare_trade_both_ways(seller, buyer)
    po_id = await buy(buyer, supplier)
    await carry(buyer, seller)
    so_id = sales_order_id(seller, po_id)
    await act(seller, services.confirm_sales_order, so_id)
    # The buyer changes its order before the seller's confirmation reaches it.
    await change_purchase_order(buyer, po_id, quantity="5")
    [refused] = await carry(buyer, seller, "purchasing.%")
    assert (refused.verb, refused.outcome, refused.reason) == ("ack", "rejected", "order.not_editable")
    assert [(row[1], row[8]) for row in sales_orders(seller)] == [("confirmed", Decimal("3.000"))]

    # The buyer's outbox row says so, with the reason.
    await carry(seller, buyer, "b2b.receipt%")
    assert outbox(buyer) == [
        ("purchasing.order.created", "acknowledged", "applied", None),
        ("purchasing.order.updated", "rejected", "rejected",
         f"order.not_editable: sales order {so_id} is confirmed; only a draft follows changes to its lines or "
         "currency, so this change of the buyer's order was not applied"),
    ]
    # When the confirmation arrives, the buyer's order follows it, and the difference in
    # quantities (the seller confirmed 3, the buyer now wants 5) is recorded as a divergence.
    assert [d.outcome for d in await carry(seller, buyer, "sales.%")] == ["applied"]
    assert purchase_order(buyer, po_id)[0] == "confirmed"
    [(event_type, table, _, _, detail)] = divergences(buyer)
    assert (event_type, table) == ("sales.order.confirmed", "purchasing_orders")
    assert detail == (f"our record differs from the partner's order: line 1: {SELLER_SKU} 3.000 at 19.9000 there, "
                      f"{BUYER_SKU} 5.000 at 19.9000 here")


async def test_a_buyers_document_waits_for_approval_when_the_supplier_requires_it(seller: Tenant, buyer: Tenant):
    supplier = await prepare_trade_both_ways(seller, buyer, seller_policy="approve")
    po_id = await buy(buyer, supplier)
    assert [d.outcome for d in await carry(buyer, seller)] == ["awaiting_approval"]
    assert sales_orders(seller) == []
    approval_id, aggregate_type = seller.fetch("SELECT id, aggregate_type FROM b2b_approvals")[0]
    assert aggregate_type == "purchase_order"
    async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
        decision = await approve_inbound_document(conn, approval_id, decided_by="sales-user", tenant_id=SELLER,
                                                  signing_key=seller.key)
    assert decision.order_id == sales_order_id(seller, po_id)
    assert [row[:3] for row in sales_orders(seller)] == [(str(po_id), "draft", "draft")]


async def test_a_buyers_unmapped_sku_sends_the_document_to_approvals(seller: Tenant, buyer: Tenant):
    supplier = await prepare_trade_both_ways(seller, buyer)
    seller.fetch("DELETE FROM b2b_partner_items RETURNING 1")
    await buy(buyer, supplier)
    assert [d.outcome for d in await carry(buyer, seller)] == ["awaiting_approval"]
    assert seller.fetch("SELECT waiting_reason, waiting_detail FROM b2b_approvals") == [
        ("items.unmapped", f"no item mapped for SKUs {BUYER_SKU}")]


async def test_an_event_naming_an_order_we_do_not_have_with_that_partner_is_rejected(seller: Tenant, buyer: Tenant):
    supplier = await prepare_trade_both_ways(seller, buyer)
    po_id = await buy(buyer, supplier)
    other_supplier = buyer.scalar("INSERT INTO suppliers (code, name) VALUES ('LOCAL', 'Local') RETURNING id")
    other_po = await buy(buyer, other_supplier)
    # The seller claims the buyer's purchase order with another supplier, then one that does not exist.
    envelopes = [await sell(seller, f"SO-{n}", "confirmed", "confirmed", counterpart_order_id=str(target))
                 for n, target in ((7001, other_po), (7002, 999_999))]
    dispositions = await deliver(buyer, *(outbox_message(seller, e) for e in envelopes))
    assert [(d.outcome, d.reason) for d in dispositions] == [("rejected", "order.counterpart_unknown")] * 2
    assert buyer.fetch("SELECT state FROM purchasing_orders ORDER BY id") == [("draft",), ("draft",)]
    assert po_id != other_po


async def test_the_buyer_reports_receipt_on_the_sellers_own_sales_order_which_records_it(
    seller: Tenant, buyer: Tenant
):
    """The first direction's return path: the purchase order a seller's sales order became
    names that sales order when it reports the goods received."""
    await prepare_trade_both_ways(seller, buyer)
    customer, warehouse, item = seller.fetch(
        "INSERT INTO customers (code, name, partner_tenant_id) VALUES ('BRAVO', 'BRAVO-BUYER', %s) "
        "RETURNING id, (SELECT id FROM warehouses), (SELECT id FROM items)", (BUYER,))[0]
    async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
        so = await services.create_sales_order(conn, CreateSalesOrder(
            customer_id=customer, warehouse_id=warehouse, lines=[NewLine(item, Decimal("2"))]), outbound=outbound(seller))
    await act(seller, services.confirm_sales_order, so.id)
    await act(seller, services.ship_sales_order, so.id)
    assert [d.outcome for d in await carry(seller, buyer)] == ["applied"] * 3
    [(po_id, source_sku)] = buyer.fetch("SELECT o.id, l.b2b_source_sku FROM purchasing_orders o "
                                        "JOIN purchasing_order_lines l ON l.order_id = o.id")
    assert source_sku == SELLER_SKU

    await act(buyer, services.receive_purchase_order, po_id)
    [received] = [json.loads(bytes(raw)) for (raw,) in buyer.fetch(
        "SELECT envelope FROM b2b_events WHERE module = 'purchasing'")]
    assert (received["type"], received["payload"]["counterpart_order_id"]) == ("purchasing.order.received", str(so.id))
    assert [d.outcome for d in await carry(buyer, seller, "purchasing.%")] == ["applied"]
    assert seller.fetch("SELECT state, b2b_counterpart_order_id, b2b_counterpart_state FROM crm_sales_orders") == [
        ("shipped", str(po_id), "received")]
    assert divergences(buyer) == [] and divergences(seller) == []


async def test_through_the_broker_the_purchase_order_and_the_suppliers_steps_each_reach_the_other_side(
    federation: tuple[Tenant, Tenant]
):
    seller, buyer = federation
    supplier = await prepare_trade_both_ways(seller, buyer)
    async with running_sidecar(seller), running_sidecar(buyer):
        po_id = await buy(buyer, supplier)
        await eventually(lambda: sales_orders(seller), what="the seller's sales order")
        so_id = sales_order_id(seller, po_id)
        await act(seller, services.confirm_sales_order, so_id)
        await act(seller, services.ship_sales_order, so_id)
        await eventually(lambda: purchase_order(buyer, po_id)[2] == "shipped", what="the buyer's order shipped")
        await act(buyer, services.receive_purchase_order, po_id)
        await eventually(lambda: seller.fetch("SELECT state, b2b_source_state FROM crm_sales_orders")
                         == [("shipped", "received")], what="the buyer's receipt of the goods at the seller")
        await eventually(lambda: {row[1] for row in outbox(seller) + outbox(buyer)} == {"acknowledged"},
                         what="every order event acknowledged")
    assert buyer.fetch("SELECT id, state, b2b_counterpart_state FROM purchasing_orders") == [
        (po_id, "received", "shipped")]
    assert seller.scalar("SELECT count(*) FROM crm_sales_orders") == 1
    assert [row[0] for row in outbox(buyer)] == ["purchasing.order.created", "purchasing.order.received"]
    assert [row[0] for row in outbox(seller)] == ["sales.order.confirmed", "sales.order.shipped"]
    assert divergences(buyer) == [] and divergences(seller) == []


# -- divergence, seller to buyer --------------------------------------------------------------------

async def test_a_faithful_application_records_no_divergence(seller: Tenant, buyer: Tenant):
    for verb, state in (("created", "draft"), ("confirmed", "confirmed"), ("shipped", "shipped")):
        await deliver(buyer, outbox_message(seller, await sell(seller, "SO-8001", verb, state)))
    assert [row[2] for row in purchase_orders(buyer)] == ["shipped"]
    assert divergences(buyer) == []


async def test_a_validly_signed_event_whose_state_hash_does_not_match_records_a_divergence(
    seller: Tenant, buyer: Tenant
):
    tampered = await sell(seller, "SO-8002", state_hash="f" * 64)
    [disposition] = await deliver(buyer, outbox_message(seller, tampered))
    assert (disposition.outcome, disposition.reason) == ("applied", None)
    assert len(purchase_orders(buyer)) == 1
    [(event_type, table, expected, actual, detail)] = divergences(buyer)
    assert (event_type, table, expected) == ("sales.order.created", "purchasing_orders", "f" * 64)
    assert actual == payload_state_hash(tampered.payload)
    assert detail == "the event's state_hash does not match its own payload"
    # Audited, like every table people act on.
    assert buyer.scalar("SELECT actor FROM audit_change_log WHERE table_name = 'b2b_divergences'") == f"b2b:{SELLER}"
    # The seller still hears that its event was applied.
    [receipt] = buyer.fetch("SELECT envelope FROM b2b_events WHERE event_type = 'b2b.receipt'")
    assert json.loads(bytes(receipt[0]))["payload"]["outcome"] == "applied"


async def test_a_change_the_buyer_cannot_follow_is_recorded_as_a_divergence(seller: Tenant, buyer: Tenant):
    await deliver(buyer, outbox_message(seller, await sell(seller, "SO-8003")))
    await deliver(buyer, outbox_message(seller, await sell(seller, "SO-8003", "confirmed", "confirmed")))
    changed = await sell(seller, "SO-8003", "updated", "confirmed", quantity="4")
    [disposition] = await deliver(buyer, outbox_message(seller, changed))
    assert disposition.outcome == "applied"
    assert [row[6] for row in purchase_orders(buyer)] == [Decimal("3.000")]
    [(event_type, _, expected, _, detail)] = divergences(buyer)
    assert (event_type, expected) == ("sales.order.updated", changed.state_hash)
    assert detail == ("lines or currency changed while our order is confirmed; not applied; our record differs from "
                      f"the partner's order: line 1: {SELLER_SKU} 4 at 19.90 there, {SELLER_SKU} 3.000 at 19.9000 here")
