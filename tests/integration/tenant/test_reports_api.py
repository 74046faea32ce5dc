"""Each report's figures, checked exactly against a small, hand-computed data set. Orders are
written with SQL: the reports read tables, not the order API."""

from datetime import date
from decimal import Decimal

import psycopg
import pytest

pytestmark = pytest.mark.integration

D = Decimal


async def post(api, url, role, body):
    r = await api.post(url, role=role, json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def insert_order(conn, kind, party_id, warehouse_id, state, order_date, currency, lines):
    orders, order_lines, party = {
        "sales": ("crm_sales_orders", "crm_sales_order_lines", "customer_id"),
        "purchase": ("purchasing_orders", "purchasing_order_lines", "supplier_id"),
    }[kind]
    order_id = conn.execute(
        f"INSERT INTO {orders} ({party}, warehouse_id, state, order_date, currency) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (party_id, warehouse_id, state, order_date, currency),
    ).fetchone()[0]
    for line_no, (item_id, quantity, unit_price) in enumerate(lines, start=1):
        conn.execute(
            f"INSERT INTO {order_lines} (order_id, line_no, item_id, quantity, unit_price) VALUES (%s, %s, %s, %s, %s)",
            (order_id, line_no, item_id, quantity, unit_price),
        )
    return order_id


@pytest.fixture
async def books(api):
    """Two customers, a supplier, four items, two warehouses, stock, and orders in every state."""
    ids = {
        "acme": await post(api, "/api/v1/customers", "sales", {"code": "ACME", "name": "ACME Retail"}),
        "bravo": await post(api, "/api/v1/customers", "sales", {"code": "BRAVO", "name": "BRAVO-BUYER"}),
        "gamma": await post(api, "/api/v1/suppliers", "purchasing", {"code": "GAMMA", "name": "GAMMA Parts"}),
        "clock": await post(api, "/api/v1/items", "warehouse",
                            {"sku": "RETRO-CLOCK", "name": "Retro clock", "cost": "20", "reorder_point": "10"}),
        "lamp": await post(api, "/api/v1/items", "warehouse", {"sku": "LAVA-LAMP", "name": "Lava lamp", "cost": "12.5"}),
        "gadget": await post(api, "/api/v1/items", "warehouse",
                             {"sku": "GADGET", "name": "Gadget", "cost": "3", "reorder_point": "1"}),
        "neon": await post(api, "/api/v1/items", "warehouse",
                           {"sku": "NEON-SIGN", "name": "Neon sign", "reorder_point": "5", "active": False}),
        "north": await post(api, "/api/v1/warehouses", "warehouse", {"code": "NORTH", "name": "North depot"}),
        "south": await post(api, "/api/v1/warehouses", "warehouse", {"code": "SOUTH", "name": "South depot"}),
    }
    for item, warehouse, quantity in (("clock", "north", "4"), ("clock", "south", "3.5"), ("lamp", "north", "6"),
                                      ("gadget", "north", "1"), ("gadget", "north", "-1")):
        r = await api.post("/api/v1/stock/adjustments", role="warehouse",
                           json={"item_id": ids[item], "warehouse_id": ids[warehouse], "quantity": quantity})
        assert r.status_code == 201, r.text

    clock, lamp, north = ids["clock"], ids["lamp"], ids["north"]
    with psycopg.connect(api.dsn) as conn:
        ids["s_draft"] = insert_order(conn, "sales", ids["acme"], north, "draft", date(2024, 3, 1), "EUR",
                                      [(clock, "2", "49.90"), (lamp, "3", "15")])            # 144.80
        ids["s_confirmed"] = insert_order(conn, "sales", ids["acme"], north, "confirmed", date(2024, 3, 5), "EUR",
                                          [(clock, "1", "49.90"), (lamp, "2.125", "4")])     # 58.40
        ids["s_shipped_usd"] = insert_order(conn, "sales", ids["acme"], north, "shipped", date(2024, 3, 31), "USD",
                                            [(lamp, "10", "2.5")])                           # 25.00
        insert_order(conn, "sales", ids["acme"], north, "cancelled", date(2024, 3, 10), "EUR", [(clock, "1", "1000")])
        ids["s_april"] = insert_order(conn, "sales", ids["bravo"], north, "confirmed", date(2024, 4, 1), "EUR",
                                      [(clock, "1", "100")])                                 # 100.00
        insert_order(conn, "sales", ids["bravo"], north, "shipped", date(2024, 2, 29), "EUR", [(clock, "1", "7")])
        ids["s_empty"] = insert_order(conn, "sales", ids["bravo"], north, "confirmed", date(2024, 3, 15), "EUR", [])
        ids["p_draft"] = insert_order(conn, "purchase", ids["gamma"], north, "draft", date(2024, 3, 2), "EUR",
                                      [(clock, "20", "19.5")])                               # 390.00
        ids["p_confirmed"] = insert_order(conn, "purchase", ids["gamma"], north, "confirmed", date(2024, 3, 20), "EUR",
                                          [(clock, "30", "20")])                             # 600.00
        insert_order(conn, "purchase", ids["gamma"], north, "received", date(2024, 3, 3), "EUR", [(lamp, "5", "1")])
        insert_order(conn, "purchase", ids["gamma"], north, "cancelled", date(2024, 3, 4), "EUR", [(lamp, "5", "1")])
    return ids


async def test_open_orders_lists_draft_and_confirmed_orders_with_party_and_total(api, books):
    r = await api.get("/api/v1/reports/open-orders", role="auditor")
    assert r.status_code == 200, r.text
    report = r.json()
    assert [(o["kind"], o["id"], o["state"], o["party_name"], o["currency"], D(o["total"]))
            for o in report["orders"]] == [
        ("sales", books["s_draft"], "draft", "ACME Retail", "EUR", D("144.80")),
        ("purchase", books["p_draft"], "draft", "GAMMA Parts", "EUR", D("390")),
        ("sales", books["s_confirmed"], "confirmed", "ACME Retail", "EUR", D("58.40")),
        ("sales", books["s_empty"], "confirmed", "BRAVO-BUYER", "EUR", D("0")),
        ("purchase", books["p_confirmed"], "confirmed", "GAMMA Parts", "EUR", D("600")),
        ("sales", books["s_april"], "confirmed", "BRAVO-BUYER", "EUR", D("100")),
    ]
    assert [o["line_count"] for o in report["orders"]] == [2, 1, 2, 0, 1, 1]
    assert [(t["kind"], t["currency"], t["order_count"], D(t["amount"])) for t in report["totals"]] == [
        ("purchase", "EUR", 2, D("990")), ("sales", "EUR", 4, D("303.20"))]

    sales_only = (await api.get("/api/v1/reports/open-orders?kind=sales", role="purchasing")).json()
    assert {o["kind"] for o in sales_only["orders"]} == {"sales"} and len(sales_only["orders"]) == 4
    assert (await api.get("/api/v1/reports/open-orders?kind=rental")).status_code == 422


async def test_sales_by_customer_totals_confirmed_and_shipped_orders_per_currency_in_the_period(api, books):
    r = await api.get("/api/v1/reports/sales-by-customer?from=2024-03-01&to=2024-03-31", role="sales")
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["from"], report["to"]) == ("2024-03-01", "2024-03-31")
    assert [(c["code"], c["order_count"], [(t["currency"], t["order_count"], D(t["amount"])) for t in c["totals"]])
            for c in report["customers"]] == [
        ("ACME", 2, [("EUR", 1, D("58.40")), ("USD", 1, D("25"))]),
        ("BRAVO", 1, [("EUR", 1, D("0"))]),
    ]
    assert [(t["currency"], t["order_count"], D(t["amount"])) for t in report["totals"]] == [
        ("EUR", 2, D("58.40")), ("USD", 1, D("25"))]

    one_day = (await api.get("/api/v1/reports/sales-by-customer?from=2024-02-29&to=2024-02-29")).json()
    assert [(c["code"], D(c["totals"][0]["amount"])) for c in one_day["customers"]] == [("BRAVO", D("7"))]
    assert (await api.get("/api/v1/reports/sales-by-customer?from=2030-01-01&to=2030-12-31")).json()["customers"] == []


async def test_sales_by_customer_refuses_an_empty_or_missing_period(api):
    backwards = await api.get("/api/v1/reports/sales-by-customer?from=2024-04-01&to=2024-03-01")
    assert backwards.status_code == 422
    assert backwards.json()["error"]["message"] == "the period is empty: from 2024-04-01 is after to 2024-03-01"
    assert (await api.get("/api/v1/reports/sales-by-customer?to=2024-03-01")).status_code == 422
    assert (await api.get("/api/v1/reports/sales-by-customer?from=2024-02-30&to=2024-03-01")).status_code == 422


async def test_stock_valuation_values_each_level_at_cost_with_a_grand_total(api, books):
    report = (await api.get("/api/v1/reports/stock-valuation", role="warehouse")).json()
    assert [(line["sku"], line["warehouse_code"], D(line["quantity"]), D(line["cost"]), D(line["value"]))
            for line in report["lines"]] == [
        ("LAVA-LAMP", "NORTH", D("6"), D("12.5"), D("75")),
        ("RETRO-CLOCK", "NORTH", D("4"), D("20"), D("80")),
        ("RETRO-CLOCK", "SOUTH", D("3.5"), D("20"), D("70")),
    ]
    assert D(report["total_value"]) == D("225")

    south = (await api.get(f"/api/v1/reports/stock-valuation?warehouse_id={books['south']}")).json()
    assert [line["sku"] for line in south["lines"]] == ["RETRO-CLOCK"] and D(south["total_value"]) == D("70")
    unknown = await api.get("/api/v1/reports/stock-valuation?warehouse_id=999999")
    assert unknown.status_code == 422
    assert unknown.json()["error"]["message"] == "warehouse_id 999999 does not exist"


async def test_stock_valuation_follows_a_stock_change_at_once(api, books):
    before = (await api.get("/api/v1/reports/stock-valuation")).json()
    assert D(before["total_value"]) == D("225")
    r = await api.post("/api/v1/stock/adjustments", role="warehouse",
                       json={"item_id": books["lamp"], "warehouse_id": books["south"], "quantity": "0.1"})
    assert r.status_code == 201
    after = (await api.get("/api/v1/reports/stock-valuation")).json()
    assert D(after["total_value"]) == D("226.25")


async def test_reorder_lists_active_items_below_their_reorder_point_with_the_shortfall(api, books):
    report = (await api.get("/api/v1/reports/reorder", role="purchasing")).json()
    assert [(i["sku"], D(i["reorder_point"]), D(i["on_hand"]), D(i["on_order"]), D(i["shortfall"]))
            for i in report["items"]] == [
        ("RETRO-CLOCK", D("10"), D("7.5"), D("30"), D("2.5")),
        ("GADGET", D("1"), D("0"), D("0"), D("1")),
    ]


async def test_every_role_reads_reports_but_anonymous_callers_do_not(api):
    for role in ("admin", "sales", "purchasing", "warehouse", "auditor"):
        assert (await api.get("/api/v1/reports/reorder", role=role)).status_code == 200
    assert (await api.http.get("/api/v1/reports/open-orders")).status_code == 401
