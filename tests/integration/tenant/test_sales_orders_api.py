"""Sales orders over HTTP against a real database: lifecycle, stock, roles, bad input, versions,
audit."""

import asyncio
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pytest

pytestmark = pytest.mark.integration

URL = "/api/v1/sales-orders"


@dataclass
class Shop:
    customer: int
    dormant_customer: int
    depot: int
    clock: int      # list price 24.90, 10 in stock
    lamp: int       # list price 12.50, 2 in stock


@pytest.fixture
def shop(api) -> Shop:
    """Master data written straight to the database: these tests are about orders."""
    with psycopg.connect(api.dsn) as conn:
        def one(query, *params):
            return conn.execute(query, params).fetchone()[0]

        customer = one("INSERT INTO customers (code, name, currency) VALUES ('BRAVO', 'BRAVO-BUYER GmbH', 'CHF') RETURNING id")
        dormant = one("INSERT INTO customers (code, name, active) VALUES ('SLEEPY', 'Sleepy Ltd', false) RETURNING id")
        depot = one("INSERT INTO warehouses (code, name) VALUES ('NORTH', 'North depot') RETURNING id")
        clock = one("INSERT INTO items (sku, name, list_price) VALUES ('RETRO-CLOCK', 'Retro clock', 24.90) RETURNING id")
        lamp = one("INSERT INTO items (sku, name, list_price) VALUES ('LAVA-LAMP', 'Lava lamp', 12.50) RETURNING id")
        conn.execute("INSERT INTO stock_levels (item_id, warehouse_id, quantity) VALUES (%s, %s, 10), (%s, %s, 2)",
                     (clock, depot, lamp, depot))
    return Shop(customer, dormant, depot, clock, lamp)


def order_body(shop: Shop, **overrides):
    body = {
        "customer_id": shop.customer, "warehouse_id": shop.depot, "reference": "PO-BRAVO-1",
        "lines": [{"item_id": shop.clock, "quantity": 3},
                  {"item_id": shop.lamp, "quantity": "2", "unit_price": "11.00"}],
    }
    body.update(overrides)
    return body


def stock(dsn, item_id, warehouse_id) -> Decimal:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT quantity FROM stock_levels WHERE item_id = %s AND warehouse_id = %s",
                           (item_id, warehouse_id)).fetchone()
    return row[0] if row else Decimal(0)


async def create(api, shop, **overrides) -> dict:
    r = await api.post(URL, role="sales", json=order_body(shop, **overrides))
    assert r.status_code == 201, r.text
    return r.json()


async def test_an_order_is_created_as_draft_with_list_prices_totals_and_the_customers_currency(api, shop):
    order = await create(api, shop)
    assert order["state"] == "draft" and order["version"] == 1
    assert order["currency"] == "CHF" and order["customer_id"] == shop.customer
    assert [(l["line_no"], l["item_id"], Decimal(l["quantity"]), Decimal(l["unit_price"]), Decimal(l["total"]))
            for l in order["lines"]] == [(1, shop.clock, 3, Decimal("24.90"), Decimal("74.70")),
                                         (2, shop.lamp, 2, Decimal("11.00"), Decimal("22.00"))]
    assert Decimal(order["total"]) == Decimal("96.70")
    assert all(line["id"] for line in order["lines"])

    fetched = await api.get(f"{URL}/{order['id']}", role="auditor")
    assert fetched.status_code == 200
    assert fetched.json() == order


async def test_full_lifecycle_confirm_then_ship_takes_the_goods_out_of_stock(api, shop):
    order = await create(api, shop)
    confirmed = await api.post(f"{URL}/{order['id']}/confirm", role="sales", json={"version": 1})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["state"] == "confirmed" and confirmed.json()["confirmed_at"]
    assert confirmed.json()["version"] == 2

    shipped = await api.post(f"{URL}/{order['id']}/ship", role="warehouse")
    assert shipped.status_code == 200, shipped.text
    assert shipped.json()["state"] == "shipped" and shipped.json()["shipped_at"]
    assert stock(api.dsn, shop.clock, shop.depot) == 7
    assert stock(api.dsn, shop.lamp, shop.depot) == 0
    with psycopg.connect(api.dsn) as conn:
        moves = conn.execute("SELECT item_id, quantity, reason, reference_type, reference_id FROM stock_moves ORDER BY item_id").fetchall()
    assert sorted(moves) == sorted([(shop.clock, Decimal(-3), "sales_shipment", "sales_order", order["id"]),
                                    (shop.lamp, Decimal(-2), "sales_shipment", "sales_order", order["id"])])

    # The cached GET saw the write.
    assert (await api.get(f"{URL}/{order['id']}")).json()["state"] == "shipped"


async def test_shipping_short_stock_is_refused_and_changes_nothing(api, shop):
    order = await create(api, shop, lines=[{"item_id": shop.clock, "quantity": 4},
                                           {"item_id": shop.lamp, "quantity": 3}])
    await api.post(f"{URL}/{order['id']}/confirm", role="sales")

    short = await api.post(f"{URL}/{order['id']}/ship", role="sales")
    assert short.status_code == 409
    body = short.json()["error"]
    assert body["code"] == "stock.insufficient"
    assert f"item {shop.lamp}" in body["message"] and "need 3" in body["message"]

    assert stock(api.dsn, shop.clock, shop.depot) == 10   # the clock line was taken out, then rolled back
    assert stock(api.dsn, shop.lamp, shop.depot) == 2
    after = (await api.get(f"{URL}/{order['id']}")).json()
    assert after["state"] == "confirmed" and after["version"] == 2 and after["shipped_at"] is None
    with psycopg.connect(api.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM stock_moves").fetchone()[0] == 0


@pytest.mark.parametrize("steps, action, message", [
    ([], "ship", "is draft and cannot be shipped"),
    (["cancel"], "confirm", "is cancelled and cannot be confirmed"),
    (["confirm", "ship"], "cancel", "is shipped and cannot be cancelled"),
    (["confirm"], "confirm", "is confirmed and cannot be confirmed"),
])
async def test_invalid_transitions_are_refused_with_409_and_say_why(api, shop, steps, action, message):
    order = await create(api, shop)
    for step in steps:
        assert (await api.post(f"{URL}/{order['id']}/{step}", role="sales")).status_code == 200
    refused = await api.post(f"{URL}/{order['id']}/{action}", role="sales")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "order.invalid_transition"
    assert refused.json()["error"]["message"] == f"sales order {order['id']} {message}"


async def test_a_draft_is_edited_with_its_version_and_lines_are_replaced(api, shop):
    order = await create(api, shop)
    edited = await api.patch(f"{URL}/{order['id']}", role="sales", json={
        "version": 1, "reference": "PO-BRAVO-2", "currency": "EUR",
        "lines": [{"item_id": shop.lamp, "quantity": "1.5"}],
    })
    assert edited.status_code == 200, edited.text
    e = edited.json()
    assert e["version"] == 2 and e["reference"] == "PO-BRAVO-2" and e["currency"] == "EUR"
    assert [(l["line_no"], l["item_id"], Decimal(l["unit_price"])) for l in e["lines"]] == [(1, shop.lamp, Decimal("12.50"))]
    assert Decimal(e["total"]) == Decimal("18.75")
    assert (await api.get(f"{URL}/{order['id']}")).json() == e
    with psycopg.connect(api.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM crm_sales_order_lines").fetchone()[0] == 1

    stale = await api.patch(f"{URL}/{order['id']}", role="sales", json={"version": 1, "notes": "lost update"})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "resource.stale_version"

    header_only = await api.patch(f"{URL}/{order['id']}", role="sales", json={"version": 2, "notes": "call first"})
    assert header_only.status_code == 200 and header_only.json()["lines"] == e["lines"]


async def test_an_order_past_draft_cannot_be_edited(api, shop):
    order = await create(api, shop)
    await api.post(f"{URL}/{order['id']}/confirm", role="sales")
    refused = await api.patch(f"{URL}/{order['id']}", role="sales", json={"version": 2, "notes": "too late"})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "order.not_editable"
    assert refused.json()["error"]["message"] == f"sales order {order['id']} is confirmed; only draft orders can be edited"


async def test_a_stale_version_on_an_action_is_refused(api, shop):
    order = await create(api, shop)
    await api.patch(f"{URL}/{order['id']}", role="sales", json={"version": 1, "notes": "v2"})
    stale = await api.post(f"{URL}/{order['id']}/confirm", role="sales", json={"version": 1})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "resource.stale_version"
    assert (await api.get(f"{URL}/{order['id']}")).json()["state"] == "draft"


async def test_roles_reading_is_open_writing_is_for_sales_and_shipping_also_for_warehouse(api, shop):
    refused = await api.post(URL, role="purchasing", json=order_body(shop))
    assert refused.status_code == 403
    assert (await api.post(URL, role="warehouse", json=order_body(shop))).status_code == 403
    assert (await api.http.post(URL, json=order_body(shop))).status_code == 401
    order = await create(api, shop)
    assert (await api.post(f"{URL}/{order['id']}/confirm", role="warehouse")).status_code == 403
    assert (await api.post(f"{URL}/{order['id']}/confirm", role="admin")).status_code == 200
    assert (await api.post(f"{URL}/{order['id']}/ship", role="auditor")).status_code == 403
    assert (await api.patch(f"{URL}/{order['id']}", role="purchasing", json={"version": 2})).status_code == 403
    assert (await api.get(f"{URL}/{order['id']}", role="purchasing")).status_code == 200


@pytest.mark.parametrize("field, value", [
    ("customer_id", 999_999), ("warehouse_id", 999_999), ("item_id", 999_999),
])
async def test_unknown_references_are_422_and_name_the_field(api, shop, field, value):
    body = order_body(shop)
    if field == "item_id":
        body["lines"][1]["item_id"] = value
    else:
        body[field] = value
    r = await api.post(URL, role="sales", json=body)
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "resource.reference_unknown", "message": f"{field} {value} does not exist"}


async def test_an_inactive_customer_cannot_order(api, shop):
    r = await api.post(URL, role="sales", json=order_body(shop, customer_id=shop.dormant_customer))
    assert r.status_code == 422
    assert r.json()["error"]["message"] == f"customer_id {shop.dormant_customer} is inactive"


@pytest.mark.parametrize("lines", [
    [],
    [{"item_id": 1, "quantity": 0}],
    [{"item_id": 1, "quantity": -2}],
    [{"item_id": 1, "quantity": "1.0001"}],
    [{"item_id": 1, "quantity": 1, "unit_price": -1}],
    [{"item_id": 1, "quantity": "abc"}],
    [{"item_id": 0, "quantity": 1}],
    [{"item_id": 1}],
    [{"item_id": 1, "quantity": 1, "colour": "red"}],
    [{"item_id": 1, "quantity": 1}] * 501,
    "not a list",
])
async def test_bad_lines_are_4xx_never_500(api, shop, lines):
    r = await api.post(URL, role="sales", json=order_body(shop, lines=lines))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"]


@pytest.mark.parametrize("content", [b"{not json", b"", b"[]", b"null", b'{"customer_id": "one"}'])
async def test_malformed_bodies_are_4xx_never_500(api, shop, content):
    r = await api.post(URL, role="sales", content=content, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    order = await create(api, shop)
    action = await api.post(f"{URL}/{order['id']}/confirm", role="sales", content=content or b"{bad",
                            headers={"content-type": "application/json"})
    # An action's body is optional, and JSON null is "no body".
    assert action.status_code == 200 if content == b"null" else 400 <= action.status_code < 500, action.text
    patch = await api.patch(f"{URL}/{order['id']}", role="sales", content=content,
                            headers={"content-type": "application/json"})
    assert 400 <= patch.status_code < 500, patch.text


async def test_bad_patches_are_refused(api, shop):
    order = await create(api, shop)
    for body in ({"version": 1, "lines": []}, {"version": 1, "customer_id": None}, {"notes": "no version"},
                 {"version": 1, "state": "shipped"}, {"version": 1, "customer_id": 999_999}):
        r = await api.patch(f"{URL}/{order['id']}", role="sales", json=body)
        assert r.status_code == 422, (body, r.text)
    assert (await api.get(f"{URL}/{order['id']}")).json()["version"] == 1


async def test_unknown_order_is_404(api, shop):
    assert (await api.get(f"{URL}/424242")).status_code == 404
    r = await api.post(f"{URL}/424242/confirm", role="sales")
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "sales order 424242 does not exist"
    assert (await api.get(f"{URL}/0")).status_code == 422


async def test_orders_are_listed_with_filters_and_keyset_pages(api, shop):
    with psycopg.connect(api.dsn) as conn:
        other = conn.execute("INSERT INTO customers (code, name) VALUES ('CHARLIE', 'Charlie') RETURNING id").fetchone()[0]
    ids = [(await create(api, shop, order_date=f"2025-03-0{n}"))["id"] for n in range(1, 6)]
    theirs = await create(api, shop, customer_id=other, order_date="2025-03-03")
    await api.post(f"{URL}/{ids[0]}/confirm", role="sales")

    first = (await api.get(f"{URL}?limit=2&customer_id={shop.customer}")).json()
    second = (await api.get(f"{URL}?limit=2&customer_id={shop.customer}&after={first['next_after']}")).json()
    third = (await api.get(f"{URL}?limit=2&customer_id={shop.customer}&after={second['next_after']}")).json()
    assert [o["id"] for p in (first, second, third) for o in p["items"]] == ids
    assert third["next_after"] is None
    assert len(first["items"][0]["lines"]) == 2

    assert [o["id"] for o in (await api.get(f"{URL}?state=confirmed")).json()["items"]] == [ids[0]]
    in_range = (await api.get(f"{URL}?from=2025-03-02&to=2025-03-03")).json()["items"]
    assert [o["id"] for o in in_range] == [ids[1], ids[2], theirs["id"]]
    assert (await api.get(f"{URL}?state=lost")).status_code == 422


async def test_audit_rows_name_the_actor_for_the_order_and_each_line(api, shop):
    order = await create(api, shop)
    await api.post(f"{URL}/{order['id']}/confirm", role="sales")
    with psycopg.connect(api.dsn) as conn:
        rows = conn.execute(
            """
            SELECT table_name, record_id, operation, actor FROM audit_change_log
             WHERE table_name IN ('crm_sales_orders', 'crm_sales_order_lines') ORDER BY seq
            """).fetchall()
    line_ids = [line["id"] for line in order["lines"]]
    assert rows == [
        ("crm_sales_orders", order["id"], "INSERT", "sales-user"),
        *[("crm_sales_order_lines", line_id, "INSERT", "sales-user") for line_id in line_ids],
        ("crm_sales_orders", order["id"], "UPDATE", "sales-user"),
    ]


async def test_cancel_a_confirmed_order(api, shop):
    order = await create(api, shop)
    await api.post(f"{URL}/{order['id']}/confirm", role="sales")
    cancelled = await api.post(f"{URL}/{order['id']}/cancel", role="sales", json={"version": 2})
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled" and cancelled.json()["cancelled_at"]
    assert stock(api.dsn, shop.clock, shop.depot) == 10


async def test_concurrent_shipments_never_oversell(api, shop):
    orders = [await create(api, shop, lines=[{"item_id": shop.clock, "quantity": 6}]) for _ in range(2)]
    for order in orders:
        await api.post(f"{URL}/{order['id']}/confirm", role="sales")
    answers = await asyncio.gather(*(api.post(f"{URL}/{o['id']}/ship", role="warehouse") for o in orders))
    assert sorted(a.status_code for a in answers) == [200, 409]
    assert stock(api.dsn, shop.clock, shop.depot) == 4


async def test_concurrent_confirmations_of_one_order_take_turns_and_one_wins(api, shop):
    order = await create(api, shop)
    answers = await asyncio.gather(*(api.post(f"{URL}/{order['id']}/confirm", role="sales") for _ in range(3)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} == {"order.invalid_transition"}
    assert (await api.get(f"{URL}/{order['id']}")).json()["version"] == 2
