"""Inbound documents that wait for a person, and what the seller hears when they decide."""

from __future__ import annotations

import json

import psycopg
import pytest

from yggdrasil.federation.approvals import (
    ApprovalAlreadyDecided,
    approve_inbound_document,
    reject_inbound_document,
)
from yggdrasil.federation.errors import ApplyRefused
from yggdrasil.federation.partners import map_partner_item

from yggdrasil.federation.relay import InboundMessage

from .b2b_harness import BUYER_SKU, SELLER, Tenant, deliver, order_lifecycle, outbox_message, purchase_orders, sell

pytestmark = pytest.mark.integration


def last_receipt(tenant: Tenant) -> tuple[str, str, str | None]:
    raw = tenant.scalar("SELECT envelope FROM b2b_events WHERE event_type = 'b2b.receipt' ORDER BY id DESC LIMIT 1")
    payload = json.loads(bytes(raw))["payload"]
    return payload["event_id"], payload["outcome"], payload["reason"]


async def decide(tenant: Tenant, approve: bool, reason: str | None = None):
    approval_id = tenant.scalar("SELECT id FROM b2b_approvals WHERE state = 'pending'")
    async with await psycopg.AsyncConnection.connect(tenant.dsn) as conn:
        if approve:
            return await approve_inbound_document(conn, approval_id, decided_by="purchasing-user",
                                                  tenant_id=tenant.id, signing_key=tenant.key, reason=reason)
        return await reject_inbound_document(conn, approval_id, decided_by="purchasing-user", reason=reason or "",
                                             tenant_id=tenant.id, signing_key=tenant.key)


async def test_approving_a_waiting_order_creates_it_as_the_seller_last_described_it_and_answers_accepted(
    seller: Tenant, buyer: Tenant
):
    buyer.fetch("UPDATE b2b_partners SET approval_policy = 'approve' RETURNING 1")
    created, confirmed, shipped = await order_lifecycle(seller, "SO-4001")
    await deliver(buyer, outbox_message(seller, created), outbox_message(seller, confirmed))
    decision = await decide(buyer, approve=True)
    assert decision.state == "approved"
    [(order_id, state, source_state, *_)] = purchase_orders(buyer)
    assert (order_id, state, source_state) == ("SO-4001", "confirmed", "confirmed")
    assert last_receipt(buyer) == (str(confirmed.event_id), "accepted", None)
    assert buyer.fetch("SELECT state, decided_by FROM b2b_approvals") == [("approved", "purchasing-user")]
    assert buyer.scalar("SELECT actor FROM audit_change_log WHERE table_name = 'b2b_approvals' "
                        "AND operation = 'UPDATE' ORDER BY seq DESC LIMIT 1") == "purchasing-user"
    # Decided once: the order's later changes now apply without asking.
    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        with pytest.raises(ApprovalAlreadyDecided):
            await approve_inbound_document(conn, decision.approval_id, decided_by="someone-else",
                                           tenant_id=buyer.id, signing_key=buyer.key)
    [disposition] = await deliver(buyer, outbox_message(seller, shipped))
    assert disposition.outcome == "applied"
    assert [row[2] for row in purchase_orders(buyer)] == ["shipped"]


async def test_rejecting_a_waiting_order_answers_the_seller_with_the_reason(seller: Tenant, buyer: Tenant):
    buyer.fetch("UPDATE b2b_partners SET approval_policy = 'approve' RETURNING 1")
    created = await sell(seller, "SO-4002")
    await deliver(buyer, outbox_message(seller, created))
    await decide(buyer, approve=False, reason="we did not order this")
    assert purchase_orders(buyer) == []
    assert last_receipt(buyer) == (str(created.event_id), "rejected", "we did not order this")
    # The seller's outbox row shows the rejection once the receipt arrives.
    receipt = buyer.fetch("SELECT subject, envelope FROM b2b_events WHERE event_type = 'b2b.receipt' ORDER BY id")
    await deliver(seller, *(InboundMessage(s, bytes(r)) for s, r in receipt))
    assert seller.fetch("SELECT status, receipt_outcome, receipt_reason FROM b2b_events WHERE event_id = %s",
                        (created.event_id,)) == [("rejected", "rejected", "we did not order this")]


async def test_an_order_with_an_unmapped_sku_cannot_be_approved_until_the_sku_is_mapped(seller: Tenant, buyer: Tenant):
    created = await sell(seller, "SO-4003", sku="NEW-CLOCK")
    await deliver(buyer, outbox_message(seller, created))
    with pytest.raises(ApplyRefused) as refused:
        await decide(buyer, approve=True)
    assert refused.value.reason == "items.unmapped"
    assert buyer.scalar("SELECT state FROM b2b_approvals") == "pending"
    async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
        await map_partner_item(conn, tenant_id=SELLER, partner_sku="NEW-CLOCK", item_sku=BUYER_SKU)
        await conn.commit()
    await decide(buyer, approve=True)
    assert [row[7] for row in purchase_orders(buyer)] == [BUYER_SKU]
