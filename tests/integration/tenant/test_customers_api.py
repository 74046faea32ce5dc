import pytest

pytestmark = pytest.mark.integration


async def test_customer_is_created_read_listed_and_updated_with_its_version(api):
    created = await api.post("/api/v1/customers", role="sales",
                             json={"code": "BRAVO", "name": "BRAVO-BUYER GmbH", "partner_tenant_id": "bravo"})
    assert created.status_code == 201, created.text
    customer = created.json()
    assert customer["version"] == 1 and customer["partner_tenant_id"] == "bravo"

    fetched = await api.get(f"/api/v1/customers/{customer['id']}", role="auditor")
    assert fetched.json()["name"] == "BRAVO-BUYER GmbH"

    updated = await api.patch(f"/api/v1/customers/{customer['id']}", role="sales",
                              json={"version": 1, "name": "BRAVO-BUYER AG"})
    assert updated.status_code == 200 and updated.json()["version"] == 2

    stale = await api.patch(f"/api/v1/customers/{customer['id']}", role="sales",
                            json={"version": 1, "name": "lost update"})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "resource.stale_version"

    listed = await api.get("/api/v1/customers?q=bravo&partner=true")
    assert [c["name"] for c in listed.json()["items"]] == ["BRAVO-BUYER AG"]


async def test_customer_list_pages_with_a_cursor(api):
    for n in range(5):
        r = await api.post("/api/v1/customers", json={"code": f"C{n}", "name": f"Customer {n}"})
        assert r.status_code == 201
    first = (await api.get("/api/v1/customers?limit=2")).json()
    second = (await api.get(f"/api/v1/customers?limit=2&after={first['next_after']}")).json()
    third = (await api.get(f"/api/v1/customers?limit=2&after={second['next_after']}")).json()
    names = [c["code"] for page in (first, second, third) for c in page["items"]]
    assert names == ["C0", "C1", "C2", "C3", "C4"]
    assert third["next_after"] is None


async def test_requests_without_token_or_with_wrong_role_are_refused(api):
    anonymous = await api.http.get("/api/v1/customers")
    assert anonymous.status_code == 401
    wrong_role = await api.post("/api/v1/customers", role="warehouse", json={"code": "X", "name": "X"})
    assert wrong_role.status_code == 403
    assert "warehouse" in wrong_role.json()["error"]["message"]


async def test_duplicate_code_is_a_conflict_and_bad_fields_are_named(api):
    assert (await api.post("/api/v1/customers", json={"code": "DUP", "name": "One"})).status_code == 201
    dup = await api.post("/api/v1/customers", json={"code": "DUP", "name": "Two"})
    assert dup.status_code == 409
    bad = await api.post("/api/v1/customers", json={"code": "", "name": "N\u0000UL", "currency": "euro"})
    assert bad.status_code == 422
    locations = {p["location"] for p in bad.json()["error"]["problems"]}
    assert {"body.code", "body.name", "body.currency"} <= locations
