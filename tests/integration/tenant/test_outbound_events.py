"""An order change for a partner tenant writes a signed outbox row in the same transaction."""

import psycopg
import pytest

from yggdrasil.events.envelope import Envelope
from yggdrasil.events.signing import generate_keypair, verify_envelope
from yggdrasil.federation.keys import write_signing_key

from conftest import make_settings, open_api

pytestmark = pytest.mark.integration


@pytest.fixture
def seller_key(tmp_path):
    private, public = generate_keypair()
    path = tmp_path / "acme.key"
    write_signing_key(path, private)
    return path, public


async def seed_master_data(api):
    warehouse = (await api.post("/api/v1/warehouses", json={"code": "WH-ACME", "name": "Main"})).json()
    item = (await api.post("/api/v1/items", json={"sku": "RETRO-CLOCK", "name": "Retro clock",
                                                   "list_price": "12.50", "cost": "7"})).json()
    await api.post("/api/v1/stock/adjustments", json={"item_id": item["id"], "warehouse_id": warehouse["id"],
                                                       "quantity": "100", "note": "opening"})
    partner = (await api.post("/api/v1/customers", json={"code": "BRAVO", "name": "BRAVO-BUYER",
                                                          "partner_tenant_id": "bravo"})).json()
    local = (await api.post("/api/v1/customers", json={"code": "LOCAL", "name": "Walk-in"})).json()
    return warehouse, item, partner, local


def outbox_rows(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT event_type, sequence, dest_tenant, status, envelope FROM b2b_events ORDER BY id"
        ).fetchall()


async def test_partner_order_lifecycle_writes_signed_events_in_sequence(tenant_dsn, seller_key):
    key_path, public_key = seller_key
    async with open_api(make_settings(tenant_dsn, signing_key_path=key_path)) as api:
        warehouse, item, partner, local = await seed_master_data(api)
        order = (await api.post("/api/v1/sales-orders", json={
            "customer_id": partner["id"], "warehouse_id": warehouse["id"],
            "lines": [{"item_id": item["id"], "quantity": "3"}]})).json()
        for action in ("confirm", "ship"):
            assert (await api.post(f"/api/v1/sales-orders/{order['id']}/{action}")).status_code == 200
        local_order = await api.post("/api/v1/sales-orders", json={
            "customer_id": local["id"], "warehouse_id": warehouse["id"],
            "lines": [{"item_id": item["id"], "quantity": "1"}]})
        assert local_order.status_code == 201

    rows = outbox_rows(tenant_dsn)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("sales.order.created", 1, "bravo", "pending"),
        ("sales.order.confirmed", 2, "bravo", "pending"),
        ("sales.order.shipped", 3, "bravo", "pending"),
    ], "only the partner's order federates, one event per change, numbered per order"
    envelopes = [Envelope.decode(bytes(r[4])) for r in rows]
    for envelope in envelopes:
        verify_envelope(envelope, public_key)
        assert envelope.source == "acme" and envelope.aggregate_id == str(order["id"])
    assert envelopes[-1].payload["state"] == "shipped"
    assert envelopes[0].payload["lines"][0]["sku"] == "RETRO-CLOCK"
    assert len({e.state_hash for e in envelopes}) == 3, "each state hashes differently"


async def test_partner_order_without_a_signing_key_is_refused_and_nothing_is_saved(tenant_dsn):
    async with open_api(make_settings(tenant_dsn)) as api:
        warehouse, item, partner, _ = await seed_master_data(api)
        refused = await api.post("/api/v1/sales-orders", json={
            "customer_id": partner["id"], "warehouse_id": warehouse["id"],
            "lines": [{"item_id": item["id"], "quantity": "1"}]})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "federation.not_configured"
        assert "YGG_SIGNING_KEY_PATH" in refused.json()["error"]["message"]
        assert (await api.get("/api/v1/sales-orders")).json()["items"] == []
    assert outbox_rows(tenant_dsn) == []


async def test_purchase_order_from_a_seller_reports_only_its_receipt_back(tenant_dsn, seller_key):
    key_path, _ = seller_key
    async with open_api(make_settings(tenant_dsn, signing_key_path=key_path)) as api:
        warehouse, item, _, _ = await seed_master_data(api)
        supplier = (await api.post("/api/v1/suppliers", json={"code": "ACME", "name": "ACME-SELLER",
                                                               "partner_tenant_id": "acme-two"})).json()
        with psycopg.connect(api.dsn) as conn:
            po_id = conn.execute(
                """INSERT INTO purchasing_orders (supplier_id, warehouse_id, b2b_source_tenant, b2b_source_order_id)
                   VALUES (%s, %s, 'acme-two', '77') RETURNING id""", (supplier["id"], warehouse["id"])).fetchone()[0]
            conn.execute("INSERT INTO purchasing_order_lines (order_id, line_no, item_id, quantity, unit_price) "
                         "VALUES (%s, 1, %s, 2, 10)", (po_id, item["id"]))
        assert (await api.post(f"/api/v1/purchase-orders/{po_id}/confirm")).status_code == 200
        assert (await api.post(f"/api/v1/purchase-orders/{po_id}/receive")).status_code == 200
        own = (await api.post("/api/v1/purchase-orders", json={
            "supplier_id": supplier["id"], "warehouse_id": warehouse["id"],
            "lines": [{"item_id": item["id"], "quantity": "5", "unit_price": "9"}]})).json()
        assert (await api.post(f"/api/v1/purchase-orders/{own['id']}/confirm")).status_code == 200

    assert [(r[0], r[1]) for r in outbox_rows(tenant_dsn)] == [
        ("purchasing.order.received", 1),   # the seller's order: only the receipt goes back
        ("purchasing.order.created", 1),    # our own order to a partner supplier; confirm is internal
    ]


async def test_outbox_retention_deletes_only_answered_events_older_than_the_retention(api):
    from yggdrasil.tenant.adapters.outbox import prune_answered_events

    warehouse, item, partner, _ = await seed_master_data(api)
    for _ in range(2):
        order = (await api.post("/api/v1/sales-orders", json={
            "customer_id": partner["id"], "warehouse_id": warehouse["id"],
            "lines": [{"item_id": item["id"], "quantity": "1"}]})).json()
        await api.post(f"/api/v1/sales-orders/{order['id']}/confirm")
    aged = [("acknowledged", "40 days"), ("rejected", "40 days"), ("published", "40 days"), ("acknowledged", "1 day")]
    with psycopg.connect(api.dsn) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM b2b_events ORDER BY id").fetchall()]
        for row_id, (status, age) in zip(ids, aged):
            conn.execute("UPDATE b2b_events SET status = %s, created_at = now() - %s::interval WHERE id = %s",
                         (status, age, row_id))
        conn.commit()
    async with await psycopg.AsyncConnection.connect(api.dsn, autocommit=True) as conn:
        assert await prune_answered_events(conn, older_than_days=30, batch=1) == 2
    with psycopg.connect(api.dsn) as conn:
        kept = conn.execute("SELECT status FROM b2b_events ORDER BY id").fetchall()
    assert [s for (s,) in kept] == ["published", "acknowledged"], "unanswered and recent events stay"


async def test_partner_order_the_partnership_does_not_cover_is_refused_and_nothing_is_saved(tenant_dsn, seller_key):
    from yggdrasil.events.signing import encode_public_key
    from yggdrasil.federation.partners import add_partner

    key_path, _ = seller_key
    async with await psycopg.AsyncConnection.connect(tenant_dsn, autocommit=True) as conn:
        await add_partner(conn, tenant_id="bravo", public_key=encode_public_key(generate_keypair()[1]), name="Bravo")
        # As the mesh's registry sync writes it for a partnership that covers only purchasing.
        await conn.execute("UPDATE b2b_partners SET modules = ARRAY['purchasing', 'b2b'] WHERE tenant_id = 'bravo'")
    async with open_api(make_settings(tenant_dsn, signing_key_path=key_path)) as api:
        warehouse, item, partner, _ = await seed_master_data(api)
        refused = await api.post("/api/v1/sales-orders", json={
            "customer_id": partner["id"], "warehouse_id": warehouse["id"],
            "lines": [{"item_id": item["id"], "quantity": "1"}]})
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "federation.module_not_agreed"
        assert "covers purchasing, b2b, not sales" in refused.json()["error"]["message"]
        assert (await api.get("/api/v1/sales-orders")).json()["items"] == []
    assert outbox_rows(tenant_dsn) == []
