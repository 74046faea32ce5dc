from decimal import Decimal

import pytest

pytestmark = pytest.mark.integration

RETRO_CLOCK = {"sku": "RETRO-CLOCK", "name": "Retro alarm clock", "unit": "pcs",
               "list_price": "49.90", "cost": "21.5", "reorder_point": "10"}


async def create_item(api, **overrides):
    r = await api.post("/api/v1/items", role="warehouse", json={**RETRO_CLOCK, **overrides})
    assert r.status_code == 201, r.text
    return r.json()


async def create_warehouse(api, code="NORTH", name="North depot"):
    r = await api.post("/api/v1/warehouses", role="warehouse", json={"code": code, "name": name})
    assert r.status_code == 201, r.text
    return r.json()


async def test_item_is_created_read_filtered_and_updated_with_its_version(api):
    item = await create_item(api)
    assert item["version"] == 1 and item["active"] is True
    assert Decimal(item["list_price"]) == Decimal("49.90") and Decimal(item["cost"]) == Decimal("21.5")

    fetched = await api.get(f"/api/v1/items/{item['id']}", role="sales")
    assert fetched.status_code == 200 and fetched.json()["sku"] == "RETRO-CLOCK"

    await create_item(api, sku="LAVA-LAMP", name="Lava lamp")
    by_name = await api.get("/api/v1/items?q=clock")
    assert [i["sku"] for i in by_name.json()["items"]] == ["RETRO-CLOCK"]
    by_sku = await api.get("/api/v1/items?sku=LAVA-LAMP")
    assert [i["sku"] for i in by_sku.json()["items"]] == ["LAVA-LAMP"]

    updated = await api.patch(f"/api/v1/items/{item['id']}", role="warehouse",
                              json={"version": 1, "list_price": "52", "active": False})
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2 and Decimal(updated.json()["list_price"]) == 52

    inactive = await api.get("/api/v1/items?active=false")
    assert [i["sku"] for i in inactive.json()["items"]] == ["RETRO-CLOCK"]


async def test_a_stale_item_version_is_refused_and_changes_nothing(api):
    item = await create_item(api)
    assert (await api.patch(f"/api/v1/items/{item['id']}", role="warehouse",
                            json={"version": 1, "name": "First"})).status_code == 200
    stale = await api.patch(f"/api/v1/items/{item['id']}", role="warehouse",
                            json={"version": 1, "name": "Lost update"})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "resource.stale_version"
    assert (await api.get(f"/api/v1/items/{item['id']}")).json()["name"] == "First"

    stale_delete = await api.delete(f"/api/v1/items/{item['id']}?version=1", role="warehouse")
    assert stale_delete.status_code == 409


async def test_item_list_filters_items_below_their_reorder_point(api):
    short = await create_item(api, sku="SHORT", name="Short item", reorder_point="10")
    stocked = await create_item(api, sku="STOCKED", name="Stocked item", reorder_point="10")
    await create_item(api, sku="NO-REORDER", name="Never reordered", reorder_point="0")
    north = await create_warehouse(api)
    for item_id, quantity in ((short["id"], "9.999"), (stocked["id"], "10")):
        r = await api.post("/api/v1/stock/adjustments", role="warehouse",
                           json={"item_id": item_id, "warehouse_id": north["id"], "quantity": quantity})
        assert r.status_code == 201, r.text

    below = await api.get("/api/v1/items?below_reorder=true")
    assert [i["sku"] for i in below.json()["items"]] == ["SHORT"]
    not_below = await api.get("/api/v1/items?below_reorder=false")
    assert [i["sku"] for i in not_below.json()["items"]] == ["STOCKED", "NO-REORDER"]


async def test_item_list_pages_with_a_cursor(api):
    for n in range(5):
        await create_item(api, sku=f"PAGE-{n}", name=f"Paged item {n}")
    seen, after = [], 0
    for _ in range(3):
        page = (await api.get(f"/api/v1/items?limit=2&after={after}")).json()
        seen += [i["sku"] for i in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == [f"PAGE-{n}" for n in range(5)]
    assert after is None


async def test_invalid_item_input_gets_422_naming_the_field(api):
    negative = await api.post("/api/v1/items", role="warehouse", json={**RETRO_CLOCK, "list_price": "-1"})
    assert negative.status_code == 422
    assert "body.list_price" in {p["location"] for p in negative.json()["error"]["problems"]}

    nul = await api.post("/api/v1/items", role="warehouse", json={**RETRO_CLOCK, "name": "Retro\u0000clock"})
    assert nul.status_code == 422
    assert "NUL" in nul.json()["error"]["message"]

    too_precise = await api.post("/api/v1/items", role="warehouse", json={**RETRO_CLOCK, "cost": "1.00001"})
    assert too_precise.status_code == 422
    too_large = await api.post("/api/v1/items", role="warehouse", json={**RETRO_CLOCK, "cost": "1e12"})
    assert too_large.status_code == 422
    not_a_number = await api.post("/api/v1/items", role="warehouse", json={**RETRO_CLOCK, "cost": "NaN"})
    assert not_a_number.status_code == 422
    unknown_field = await api.post("/api/v1/items", role="warehouse", json={**RETRO_CLOCK, "colour": "red"})
    assert unknown_field.status_code == 422

    item = await create_item(api)
    null_name = await api.patch(f"/api/v1/items/{item['id']}", role="warehouse", json={"version": 1, "name": None})
    assert null_name.status_code == 422
    assert "name cannot be null" in null_name.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/api/v1/items/{}", "/api/v1/warehouses/{}"])
@pytest.mark.parametrize("bad_id", ["99999999999999999999", "0", "-1", "abc"])
async def test_out_of_range_ids_in_the_path_get_422_not_500(api, path, bad_id):
    for method in ("GET", "PATCH", "DELETE"):
        kwargs = {"json": {"version": 1}} if method == "PATCH" else {}
        r = await api.request(method, path.format(bad_id), **kwargs)
        assert r.status_code == 422, (method, r.text)


async def test_missing_master_data_is_404(api):
    assert (await api.get("/api/v1/items/9223372036854775807")).status_code == 404
    r = await api.patch("/api/v1/warehouses/12345", json={"version": 1, "name": "Ghost"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "resource.not_found"


async def test_duplicate_sku_or_warehouse_code_is_a_conflict(api):
    await create_item(api)
    assert (await api.post("/api/v1/items", role="warehouse", json=RETRO_CLOCK)).status_code == 409
    await create_warehouse(api)
    dup = await api.post("/api/v1/warehouses", role="warehouse", json={"code": "NORTH", "name": "Another"})
    assert dup.status_code == 409


async def test_only_the_warehouse_role_and_admin_change_items_and_warehouses(api):
    assert (await api.post("/api/v1/items", role="sales", json=RETRO_CLOCK)).status_code == 403
    assert (await api.post("/api/v1/warehouses", role="purchasing",
                           json={"code": "X", "name": "X"})).status_code == 403
    assert (await api.post("/api/v1/items", role="admin", json=RETRO_CLOCK)).status_code == 201
    assert (await api.http.get("/api/v1/items")).status_code == 401


async def test_an_item_or_warehouse_with_stock_cannot_be_deleted(api):
    item = await create_item(api)
    north = await create_warehouse(api)
    r = await api.post("/api/v1/stock/adjustments", role="warehouse",
                       json={"item_id": item["id"], "warehouse_id": north["id"], "quantity": "3"})
    assert r.status_code == 201

    refused = await api.delete(f"/api/v1/items/{item['id']}", role="warehouse")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "resource.conflict"
    assert (await api.delete(f"/api/v1/warehouses/{north['id']}", role="warehouse")).status_code == 409
    assert (await api.get(f"/api/v1/items/{item['id']}")).status_code == 200


async def test_an_unreferenced_item_is_deleted(api):
    item = await create_item(api)
    assert (await api.delete(f"/api/v1/items/{item['id']}?version=1", role="warehouse")).status_code == 204
    assert (await api.get(f"/api/v1/items/{item['id']}")).status_code == 404


async def test_warehouse_is_created_listed_updated_and_deleted(api):
    north = await create_warehouse(api)
    south = await create_warehouse(api, code="SOUTH", name="South depot")
    assert north["address"] == "" and north["version"] == 1

    listed = await api.get("/api/v1/warehouses?q=depot&limit=1")
    assert [w["code"] for w in listed.json()["items"]] == ["NORTH"]
    assert listed.json()["next_after"] == north["id"]
    by_code = await api.get("/api/v1/warehouses?code=SOUTH")
    assert [w["id"] for w in by_code.json()["items"]] == [south["id"]]

    moved = await api.patch(f"/api/v1/warehouses/{north['id']}", role="warehouse",
                            json={"version": 1, "address": "1 Harbour Road"})
    assert moved.status_code == 200 and moved.json()["address"] == "1 Harbour Road"
    stale = await api.patch(f"/api/v1/warehouses/{north['id']}", role="warehouse",
                            json={"version": 1, "address": "elsewhere"})
    assert stale.status_code == 409

    assert (await api.delete(f"/api/v1/warehouses/{south['id']}", role="warehouse")).status_code == 204
    remaining = await api.get("/api/v1/warehouses")
    assert [w["code"] for w in remaining.json()["items"]] == ["NORTH"]


async def test_a_cached_item_list_sees_a_new_item_at_once(api):
    await create_item(api)
    first = await api.get("/api/v1/items")
    assert len(first.json()["items"]) == 1
    await create_item(api, sku="LAVA-LAMP", name="Lava lamp")
    second = await api.get("/api/v1/items")
    assert [i["sku"] for i in second.json()["items"]] == ["RETRO-CLOCK", "LAVA-LAMP"]
