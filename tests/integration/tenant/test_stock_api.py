from decimal import Decimal

import psycopg
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
async def clock_and_depot(api):
    item = await api.post("/api/v1/items", role="warehouse",
                          json={"sku": "RETRO-CLOCK", "name": "Retro alarm clock", "cost": "20"})
    depot = await api.post("/api/v1/warehouses", role="warehouse", json={"code": "NORTH", "name": "North depot"})
    assert item.status_code == depot.status_code == 201
    return item.json()["id"], depot.json()["id"]


async def adjust(api, item_id, warehouse_id, quantity, note="", role="warehouse"):
    return await api.post("/api/v1/stock/adjustments", role=role,
                          json={"item_id": item_id, "warehouse_id": warehouse_id, "quantity": quantity, "note": note})


async def test_adjustments_add_and_take_out_stock(api, clock_and_depot):
    item_id, depot_id = clock_and_depot
    added = await adjust(api, item_id, depot_id, "12.5", note="opening stock")
    assert added.status_code == 201, added.text
    assert added.json() == {"item_id": item_id, "warehouse_id": depot_id, "quantity": "12.500", "adjusted_by": "12.5"}

    taken = await adjust(api, item_id, depot_id, "-2.5", note="broken in transit")
    assert taken.status_code == 201
    assert Decimal(taken.json()["quantity"]) == 10

    levels = (await api.get(f"/api/v1/stock?item_id={item_id}", role="sales")).json()["items"]
    assert [(lv["sku"], lv["warehouse_code"], Decimal(lv["quantity"])) for lv in levels] == [("RETRO-CLOCK", "NORTH", 10)]


async def test_a_shortage_is_refused_with_409_and_changes_nothing(api, clock_and_depot):
    item_id, depot_id = clock_and_depot
    assert (await adjust(api, item_id, depot_id, "3")).status_code == 201

    short = await adjust(api, item_id, depot_id, "-3.001")
    assert short.status_code == 409
    assert short.json()["error"]["code"] == "stock.insufficient"
    assert "need 3.001, have 3.000" in short.json()["error"]["message"]

    with psycopg.connect(api.dsn) as conn:
        assert conn.execute("SELECT quantity FROM stock_levels").fetchall() == [(Decimal("3.000"),)]
        assert conn.execute("SELECT count(*) FROM stock_moves").fetchone()[0] == 1

    never_stocked = await api.post("/api/v1/warehouses", role="warehouse", json={"code": "EMPTY", "name": "Empty"})
    nothing_there = await adjust(api, item_id, never_stocked.json()["id"], "-1")
    assert nothing_there.status_code == 409
    assert "have 0" in nothing_there.json()["error"]["message"]


async def test_moves_are_listed_with_filters_and_pages(api, clock_and_depot):
    item_id, depot_id = clock_and_depot
    south = (await api.post("/api/v1/warehouses", role="warehouse", json={"code": "SOUTH", "name": "South"})).json()
    for quantity in ("5", "-1", "2"):
        assert (await adjust(api, item_id, depot_id, quantity)).status_code == 201
    assert (await adjust(api, item_id, south["id"], "7", note="count")).status_code == 201

    north_moves = (await api.get(f"/api/v1/stock/moves?warehouse_id={depot_id}")).json()
    assert [Decimal(m["quantity"]) for m in north_moves["items"]] == [5, -1, 2]
    assert {m["reason"] for m in north_moves["items"]} == {"adjustment"}

    first = (await api.get("/api/v1/stock/moves?limit=3")).json()
    rest = (await api.get(f"/api/v1/stock/moves?limit=3&after={first['next_after']}")).json()
    assert [m["warehouse_code"] for m in first["items"] + rest["items"]] == ["NORTH"] * 3 + ["SOUTH"]
    assert rest["items"][0]["note"] == "count" and rest["next_after"] is None

    by_reason = await api.get(f"/api/v1/stock/moves?item_id={item_id}&reason=sales_shipment")
    assert by_reason.json()["items"] == []
    by_reference = await api.get("/api/v1/stock/moves?reference_type=sales_order&reference_id=1")
    assert by_reference.json()["items"] == []
    assert (await api.get("/api/v1/stock/moves?reason=theft")).status_code == 422


async def test_stock_levels_page_and_filter_by_warehouse(api, clock_and_depot):
    item_id, depot_id = clock_and_depot
    lamp = (await api.post("/api/v1/items", role="warehouse", json={"sku": "LAVA-LAMP", "name": "Lava lamp"})).json()
    south = (await api.post("/api/v1/warehouses", role="warehouse", json={"code": "SOUTH", "name": "South"})).json()
    for item, warehouse in ((item_id, depot_id), (lamp["id"], depot_id), (item_id, south["id"])):
        assert (await adjust(api, item, warehouse, "1")).status_code == 201

    first = (await api.get("/api/v1/stock?limit=2")).json()
    second = (await api.get(f"/api/v1/stock?limit=2&after={first['next_after']}")).json()
    assert [(s["sku"], s["warehouse_code"]) for s in first["items"] + second["items"]] == [
        ("RETRO-CLOCK", "NORTH"), ("LAVA-LAMP", "NORTH"), ("RETRO-CLOCK", "SOUTH")]
    assert second["next_after"] is None
    south_only = (await api.get(f"/api/v1/stock?warehouse_id={south['id']}")).json()["items"]
    assert [s["sku"] for s in south_only] == ["RETRO-CLOCK"]


async def test_an_unknown_item_or_warehouse_gets_422_naming_the_field(api, clock_and_depot):
    item_id, depot_id = clock_and_depot
    unknown_item = await adjust(api, 987654, depot_id, "1")
    assert unknown_item.status_code == 422
    assert unknown_item.json()["error"]["message"] == "item_id 987654 does not exist"
    unknown_depot = await adjust(api, item_id, 987654, "1")
    assert unknown_depot.status_code == 422
    assert unknown_depot.json()["error"]["message"] == "warehouse_id 987654 does not exist"
    with psycopg.connect(api.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM stock_moves").fetchone()[0] == 0


@pytest.mark.parametrize("quantity", ["0", "0.0000", "1.0001", "123456789012", "NaN", "Infinity", "ten", None])
async def test_a_zero_or_malformed_quantity_gets_422(api, clock_and_depot, quantity):
    item_id, depot_id = clock_and_depot
    r = await adjust(api, item_id, depot_id, quantity)
    assert r.status_code == 422, r.text
    assert "body.quantity" in {p["location"] for p in r.json()["error"]["problems"]}


async def test_adjusting_stock_needs_the_warehouse_role(api, clock_and_depot):
    item_id, depot_id = clock_and_depot
    assert (await adjust(api, item_id, depot_id, "1", role="sales")).status_code == 403
    assert (await adjust(api, item_id, depot_id, "1", role="auditor")).status_code == 403
    assert (await adjust(api, item_id, depot_id, "1", role="admin")).status_code == 201


async def test_a_cached_stock_list_sees_an_adjustment_at_once(api, clock_and_depot):
    item_id, depot_id = clock_and_depot
    assert (await api.get("/api/v1/stock")).json()["items"] == []
    assert (await adjust(api, item_id, depot_id, "4")).status_code == 201
    levels = (await api.get("/api/v1/stock")).json()["items"]
    assert [Decimal(s["quantity"]) for s in levels] == [4]
