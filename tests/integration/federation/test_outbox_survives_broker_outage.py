"""The broker is down while the seller takes 500 orders for a partner customer through its own
HTTP API (so the order service's own hook writes the outbox): the seller works as usual, every
event waits in its outbox, and once the broker is back the buyer has 500 purchase orders, each
exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conftest import open_api
from yggdrasil.devstack.nats import EmbeddedNats
from yggdrasil.federation.keys import write_signing_key
from yggdrasil.settings import Settings

from .b2b_harness import BUYER, SELLER, SELLER_SKU, Tenant, eventually, outbox_statuses, running_sidecar

pytestmark = pytest.mark.integration

ORDERS = 500


def seller_api_settings(seller: Tenant, key_path: Path) -> Settings:
    # No rate limit in the way of 500 orders in a few seconds from one client.
    return Settings(tenant_id=SELLER, tenant_dsn=seller.dsn, signing_key_path=key_path, log_json=False,
                    rate_limit_per_second=100_000, rate_limit_burst=100_000)


async def test_orders_taken_while_the_broker_is_down_stay_pending_then_each_becomes_one_purchase_order(
    federation: tuple[Tenant, Tenant], broker: EmbeddedNats, tmp_path: Path
):
    seller, buyer = federation
    key_path = tmp_path / "seller.key"
    write_signing_key(key_path, seller.key)
    broker.stop()
    async with running_sidecar(seller) as seller_status, running_sidecar(buyer):
        await eventually(lambda: seller_status.broker.state == "unreachable", what="the sidecar to notice")
        async with open_api(seller_api_settings(seller, key_path)) as api:
            warehouse = (await api.post("/api/v1/warehouses", json={"code": "WH-ACME", "name": "Main"})).json()
            item = (await api.post("/api/v1/items", json={"sku": SELLER_SKU, "name": "Retro clock",
                                                           "list_price": "19.90"})).json()
            partner = (await api.post("/api/v1/customers", json={"code": "BRAVO", "name": "BRAVO-BUYER",
                                                                  "partner_tenant_id": BUYER})).json()
            walk_in = (await api.post("/api/v1/customers", json={"code": "WALK-IN", "name": "Walk-in"})).json()

            def order(customer: dict) -> dict:
                return {"customer_id": customer["id"], "warehouse_id": warehouse["id"],
                        "lines": [{"item_id": item["id"], "quantity": "3"}]}

            order_ids = []
            for _ in range(ORDERS):
                response = await api.post("/api/v1/sales-orders", json=order(partner))
                assert response.status_code == 201, response.text
                order_ids.append(str(response.json()["id"]))

            # The seller works as usual: a local order is taken and confirmed, the orders list.
            local = await api.post("/api/v1/sales-orders", json=order(walk_in))
            assert local.status_code == 201
            confirmed = await api.post(f"/api/v1/sales-orders/{local.json()['id']}/confirm")
            assert (confirmed.status_code, confirmed.json()["state"]) == (200, "confirmed")
            assert (await api.get("/api/v1/sales-orders")).status_code == 200

            await asyncio.sleep(1.0)  # the publisher has had every chance to try
            assert seller.fetch("SELECT status, count(*), max(attempts) FROM b2b_events GROUP BY status") == [
                ("pending", ORDERS, 0)]
            health = (await api.get("/health")).json()
            assert health["federation"]["outbox_pending"] == ORDERS

        broker.start()
        await eventually(lambda: buyer.scalar("SELECT count(*) FROM purchasing_orders") == ORDERS, timeout=45,
                         what=f"{ORDERS} purchase orders")
        await eventually(lambda: outbox_statuses(seller) == [("acknowledged", "applied")] * ORDERS, timeout=30,
                         what=f"{ORDERS} receipts at the seller")

    per_order = dict(buyer.fetch(
        "SELECT b2b_source_order_id, count(*) FROM purchasing_orders WHERE b2b_source_tenant = %s GROUP BY 1",
        (SELLER,)))
    assert sorted(per_order) == sorted(order_ids)
    assert set(per_order.values()) == {1}, "no order twice"
    assert buyer.scalar("SELECT count(*) FROM b2b_inbox") == ORDERS
