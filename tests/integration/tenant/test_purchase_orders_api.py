"""Purchase orders over HTTP against a real database: lifecycle, receiving into stock, roles,
bad input, versions, audit."""

from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pytest

from yggdrasil.tenant.domain.commands import CreatePurchaseOrder, NewLine
from yggdrasil.tenant.services import create_purchase_order

pytestmark = pytest.mark.integration

URL = "/api/v1/purchase-orders"


@dataclass
class Buyer:
    supplier: int
    retired_supplier: int
    depot: int
    clock: int      # list price 24.90, 1 in stock
    lamp: int       # list price 12.50, none in stock yet


@pytest.fixture
def buyer(api) -> Buyer:
    """Master data written straight to the database: these tests are about orders."""
    with psycopg.connect(api.dsn) as conn:
        def one(query, *params):
            return conn.execute(query, params).fetchone()[0]

        supplier = one("INSERT INTO suppliers (code, name, currency, partner_tenant_id) "
                       "VALUES ('ACME', 'ACME-SELLER', 'USD', 'acme-seller') RETURNING id")
        retired = one("INSERT INTO suppliers (code, name, active) VALUES ('GONE', 'Gone Inc', false) RETURNING id")
        depot = one("INSERT INTO warehouses (code, name) VALUES ('SOUTH', 'South depot') RETURNING id")
        clock = one("INSERT INTO items (sku, name, list_price) VALUES ('RETRO-CLOCK', 'Retro clock', 24.90) RETURNING id")
        lamp = one("INSERT INTO items (sku, name, list_price) VALUES ('LAVA-LAMP', 'Lava lamp', 12.50) RETURNING id")
        conn.execute("INSERT INTO stock_levels (item_id, warehouse_id, quantity) VALUES (%s, %s, 1)", (clock, depot))
    return Buyer(supplier, retired, depot, clock, lamp)


def order_body(b: Buyer, **overrides):
    body = {
        "supplier_id": b.supplier, "warehouse_id": b.depot, "expected_date": "2025-04-30",
        "lines": [{"item_id": b.clock, "quantity": "5"}, {"item_id": b.lamp, "quantity": "4.5", "unit_price": "10"}],
    }
    body.update(overrides)
    return body


def stock(dsn, item_id, warehouse_id) -> Decimal:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT quantity FROM stock_levels WHERE item_id = %s AND warehouse_id = %s",
                           (item_id, warehouse_id)).fetchone()
    return row[0] if row else Decimal(0)


async def create(api, b, **overrides) -> dict:
    r = await api.post(URL, role="purchasing", json=order_body(b, **overrides))
    assert r.status_code == 201, r.text
    return r.json()


async def test_full_lifecycle_receiving_puts_the_goods_into_stock(api, buyer):
    order = await create(api, buyer)
    assert order["state"] == "draft" and order["currency"] == "USD" and order["expected_date"] == "2025-04-30"
    assert order["b2b_source_tenant"] is None and order["b2b_source_order_id"] is None
    assert Decimal(order["total"]) == Decimal("5") * Decimal("24.90") + Decimal("45")
    assert (await api.get(f"{URL}/{order['id']}", role="sales")).json() == order

    confirmed = await api.post(f"{URL}/{order['id']}/confirm", role="purchasing", json={"version": 1})
    assert confirmed.status_code == 200 and confirmed.json()["state"] == "confirmed"
    received = await api.post(f"{URL}/{order['id']}/receive", role="warehouse", json={"version": 2})
    assert received.status_code == 200, received.text
    assert received.json()["state"] == "received" and received.json()["received_at"]

    assert stock(api.dsn, buyer.clock, buyer.depot) == 6
    assert stock(api.dsn, buyer.lamp, buyer.depot) == Decimal("4.5")
    with psycopg.connect(api.dsn) as conn:
        moves = conn.execute("SELECT item_id, quantity, reason, reference_type, reference_id FROM stock_moves").fetchall()
    assert sorted(moves) == sorted([(buyer.clock, Decimal(5), "purchase_receipt", "purchase_order", order["id"]),
                                    (buyer.lamp, Decimal("4.5"), "purchase_receipt", "purchase_order", order["id"])])
    # Visible through the stock API too.
    levels = await api.get(f"/api/v1/stock?item_id={buyer.lamp}", role="purchasing")
    assert levels.status_code == 200
    assert [Decimal(level["quantity"]) for level in levels.json()["items"]] == [Decimal("4.5")]


@pytest.mark.parametrize("steps, action, message", [
    ([], "receive", "is draft and cannot be received"),
    (["confirm", "receive"], "cancel", "is received and cannot be cancelled"),
    (["cancel"], "receive", "is cancelled and cannot be received"),
])
async def test_invalid_transitions_are_refused_with_409_and_change_nothing(api, buyer, steps, action, message):
    order = await create(api, buyer)
    for step in steps:
        assert (await api.post(f"{URL}/{order['id']}/{step}", role="purchasing")).status_code == 200
    before = stock(api.dsn, buyer.clock, buyer.depot)
    refused = await api.post(f"{URL}/{order['id']}/{action}", role="purchasing")
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == f"purchase order {order['id']} {message}"
    assert stock(api.dsn, buyer.clock, buyer.depot) == before


async def test_a_draft_is_edited_and_expected_date_may_be_cleared(api, buyer):
    order = await create(api, buyer)
    edited = await api.patch(f"{URL}/{order['id']}", role="purchasing",
                             json={"version": 1, "expected_date": None, "lines": [{"item_id": buyer.lamp, "quantity": 2}]})
    assert edited.status_code == 200, edited.text
    assert edited.json()["expected_date"] is None and edited.json()["version"] == 2
    assert [line["item_id"] for line in edited.json()["lines"]] == [buyer.lamp]
    assert (await api.patch(f"{URL}/{order['id']}", role="purchasing",
                            json={"version": 2, "supplier_id": None})).status_code == 422
    stale = await api.patch(f"{URL}/{order['id']}", role="purchasing", json={"version": 1, "notes": "x"})
    assert stale.status_code == 409
    unknown_item = await api.patch(f"{URL}/{order['id']}", role="purchasing",
                                   json={"version": 2, "lines": [{"item_id": 999_999, "quantity": 1}]})
    assert unknown_item.status_code == 422
    assert unknown_item.json()["error"]["message"] == "item_id 999999 does not exist"

    await api.post(f"{URL}/{order['id']}/confirm", role="purchasing")
    late = await api.patch(f"{URL}/{order['id']}", role="purchasing", json={"version": 3, "notes": "late"})
    assert late.status_code == 409 and late.json()["error"]["code"] == "order.not_editable"


async def test_the_b2b_linkage_cannot_be_set_by_a_request(api, buyer):
    r = await api.post(URL, role="purchasing", json=order_body(buyer, b2b_source_tenant="evil", b2b_source_order_id="1"))
    assert r.status_code == 422


async def test_roles_purchasing_writes_and_warehouse_may_receive(api, buyer):
    assert (await api.post(URL, role="sales", json=order_body(buyer))).status_code == 403
    assert (await api.post(URL, role="warehouse", json=order_body(buyer))).status_code == 403
    order = await create(api, buyer)
    assert (await api.post(f"{URL}/{order['id']}/confirm", role="warehouse")).status_code == 403
    assert (await api.post(f"{URL}/{order['id']}/cancel", role="sales")).status_code == 403
    assert (await api.post(f"{URL}/{order['id']}/confirm", role="purchasing")).status_code == 200
    assert (await api.post(f"{URL}/{order['id']}/receive", role="auditor")).status_code == 403
    assert (await api.post(f"{URL}/{order['id']}/receive", role="warehouse")).status_code == 200


async def test_unknown_or_inactive_references_and_bad_input_are_422(api, buyer):
    unknown = await api.post(URL, role="purchasing", json=order_body(buyer, supplier_id=999_999))
    assert unknown.status_code == 422 and unknown.json()["error"]["message"] == "supplier_id 999999 does not exist"
    inactive = await api.post(URL, role="purchasing", json=order_body(buyer, supplier_id=buyer.retired_supplier))
    assert inactive.status_code == 422
    assert inactive.json()["error"]["message"] == f"supplier_id {buyer.retired_supplier} is inactive"
    no_depot = await api.post(URL, role="purchasing", json=order_body(buyer, warehouse_id=999_999))
    assert no_depot.status_code == 422
    for lines in ([], [{"item_id": buyer.clock, "quantity": 0}], [{"item_id": buyer.clock, "quantity": "-1"}]):
        assert (await api.post(URL, role="purchasing", json=order_body(buyer, lines=lines))).status_code == 422
    malformed = await api.post(URL, role="purchasing", content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 422
    with psycopg.connect(api.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM purchasing_orders").fetchone()[0] == 0


async def test_orders_are_listed_by_supplier_state_and_date(api, buyer):
    a = await create(api, buyer, order_date="2025-01-10")
    b = await create(api, buyer, order_date="2025-02-10")
    await api.post(f"{URL}/{b['id']}/cancel", role="purchasing")
    listed = (await api.get(f"{URL}?supplier_id={buyer.supplier}&limit=1")).json()
    assert [o["id"] for o in listed["items"]] == [a["id"]] and listed["next_after"] == a["id"]
    assert [o["id"] for o in (await api.get(f"{URL}?state=cancelled")).json()["items"]] == [b["id"]]
    assert [o["id"] for o in (await api.get(f"{URL}?from=2025-02-01")).json()["items"]] == [b["id"]]
    assert (await api.get(f"{URL}?supplier_id={buyer.retired_supplier}")).json() == {"items": [], "next_after": None}


async def test_audit_rows_name_the_actor_for_order_lines_and_stock(api, buyer):
    order = await create(api, buyer)
    await api.post(f"{URL}/{order['id']}/confirm", role="purchasing")
    await api.post(f"{URL}/{order['id']}/receive", role="warehouse")
    with psycopg.connect(api.dsn) as conn:
        rows = conn.execute(
            """
            SELECT table_name, operation, actor, count(*) FROM audit_change_log
             WHERE table_name IN ('purchasing_orders', 'purchasing_order_lines', 'stock_moves')
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """).fetchall()
    assert rows == [
        ("purchasing_order_lines", "INSERT", "purchasing-user", 2),
        ("purchasing_orders", "INSERT", "purchasing-user", 1),
        ("purchasing_orders", "UPDATE", "purchasing-user", 1),
        ("purchasing_orders", "UPDATE", "warehouse-user", 1),
        ("stock_moves", "INSERT", "warehouse-user", 2),
    ]


async def test_a_federated_order_is_created_by_the_service_in_its_own_transaction_and_shows_its_source(api, buyer):
    # The sidecar calls the service on a connection of its own, with no transaction open.
    async with await psycopg.AsyncConnection.connect(api.dsn) as conn:
        order = await create_purchase_order(conn, CreatePurchaseOrder(
            supplier_id=buyer.supplier, warehouse_id=buyer.depot, currency="EUR",
            lines=[NewLine(item_id=buyer.clock, quantity=Decimal(2), unit_price=Decimal("20"))],
            b2b_source_tenant="acme-seller", b2b_source_order_id="SO-17",
        ))
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # committed
    assert order.partner_tenant_id == "acme-seller" and order.events == []
    shown = (await api.get(f"{URL}/{order.id}")).json()
    assert (shown["b2b_source_tenant"], shown["b2b_source_order_id"], shown["currency"]) == ("acme-seller", "SO-17", "EUR")
    edited = await api.patch(f"{URL}/{order.id}", role="purchasing", json={"version": 1, "notes": "checked"})
    assert edited.json()["b2b_source_order_id"] == "SO-17"
