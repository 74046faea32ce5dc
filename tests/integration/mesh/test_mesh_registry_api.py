"""The mesh's admin API and the registry's public part, in-process on a real ygg_central:
admin authentication, tenants, partnerships, and the registry document with its ETag."""

from __future__ import annotations

import pytest
from mesh_harness import admin_token, bearer, mesh_settings, open_mesh, public_key

from yggdrasil.mesh.domain.registry import key_id_of

pytestmark = pytest.mark.integration


def _tenant(tenant_id: str, **fields: object) -> dict[str, object]:
    return {"id": tenant_id, "name": f"{tenant_id.upper()} Trading", "api_url": f"http://127.0.0.1:9/{tenant_id}",
            "public_key": public_key(), **fields}


@pytest.fixture
async def mesh(central_dsn: str):
    async with open_mesh(mesh_settings(central_dsn, mesh_health_enabled=False)) as http:
        http.headers.update(bearer(admin_token(central_dsn)))
        yield http


async def test_admin_endpoints_need_an_admin_token_while_health_and_registry_are_public(central_dsn: str) -> None:
    async with open_mesh(mesh_settings(central_dsn, mesh_health_enabled=False)) as http:
        token = admin_token(central_dsn)
        for method, path in [("GET", "/api/v1/tenants"), ("POST", "/api/v1/tenants"), ("GET", "/api/v1/tenants/acme"),
                             ("GET", "/api/v1/partnerships"), ("POST", "/api/v1/partnerships/1/accept"),
                             ("GET", "/api/v1/health/tenants"), ("GET", "/api/v1/health/transitions")]:
            missing = await http.request(method, path)
            assert missing.status_code == 401, (method, path)
            assert missing.json()["error"]["code"] == "auth.missing_token"
            unknown = await http.request(method, path, headers=bearer("yggadm_not-a-real-token"))
            assert unknown.status_code == 401, (method, path)
            assert unknown.json()["error"]["code"] == "auth.invalid_token"
            assert unknown.headers["www-authenticate"] == "Bearer"

        created = await http.post("/api/v1/tenants", json=_tenant("acme"), headers=bearer(token))
        assert created.status_code == 201, created.text
        assert (await http.get("/health")).json()["status"] == "ok"
        assert (await http.get("/metrics")).status_code == 200
        registry = await http.get("/registry/v1/tenants/acme/partners")
        assert registry.status_code == 200
        assert registry.json() == {"tenant_id": "acme", "partners": []}


async def test_tenants_are_registered_listed_filtered_and_moved_through_their_statuses(mesh) -> None:
    for tenant_id in ("acme", "bravo", "charlie"):
        assert (await mesh.post("/api/v1/tenants", json=_tenant(tenant_id))).status_code == 201

    page = (await mesh.get("/api/v1/tenants", params={"limit": 2})).json()
    assert [t["id"] for t in page["items"]] == ["acme", "bravo"] and page["next_after"] == "bravo"
    rest = (await mesh.get("/api/v1/tenants", params={"limit": 2, "after": "bravo"})).json()
    assert [t["id"] for t in rest["items"]] == ["charlie"] and rest["next_after"] is None

    before = (await mesh.get("/api/v1/tenants/bravo")).json()
    suspended = await mesh.post("/api/v1/tenants/bravo/suspend")
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert suspended.json()["status_changed_at"] > before["status_changed_at"]
    only_suspended = (await mesh.get("/api/v1/tenants", params={"status": "suspended"})).json()["items"]
    assert [t["id"] for t in only_suspended] == ["bravo"]

    again = await mesh.post("/api/v1/tenants/bravo/suspend")
    assert again.status_code == 409
    assert again.json()["error"] == {"code": "tenant.invalid_transition",
                                     "message": "tenant bravo is suspended; suspend applies only to a tenant that is active"}
    assert (await mesh.post("/api/v1/tenants/bravo/reactivate")).json()["status"] == "active"
    assert (await mesh.post("/api/v1/tenants/bravo/depart")).json()["status"] == "departed"
    assert (await mesh.post("/api/v1/tenants/bravo/reactivate")).status_code == 409
    patch_departed = await mesh.patch("/api/v1/tenants/bravo", json={"name": "Bravo Again"})
    assert patch_departed.status_code == 409 and patch_departed.json()["error"]["code"] == "tenant.departed"

    new_key = public_key()
    patched = await mesh.patch("/api/v1/tenants/acme", json={"name": "ACME Holdings", "public_key": new_key,
                                                              "api_url": "https://erp.acme.example/"})
    assert patched.status_code == 200
    body = patched.json()
    assert (body["name"], body["public_key"], body["api_url"]) == ("ACME Holdings", new_key, "https://erp.acme.example")
    assert body["key_id"] == key_id_of(new_key)

    missing = await mesh.get("/api/v1/tenants/nobody")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "tenant.not_found"


async def test_tenant_registration_explains_what_is_wrong(mesh) -> None:
    async def refused(body: dict[str, object]) -> tuple[int, str, str]:
        response = await mesh.post("/api/v1/tenants", json=body)
        error = response.json()["error"]
        return response.status_code, error["code"], error["message"]

    assert (await refused(_tenant("Acme; DROP")))[:2] == (422, "tenant.invalid_id")
    assert (await refused(_tenant("acme", api_url="ftp://acme")))[:2] == (422, "tenant.invalid_api_url")
    status, code, message = await refused(_tenant("acme", public_key="bm90IGEga2V5"))
    assert (status, code) == (422, "tenant.invalid_public_key") and "Ed25519" in message
    assert (await refused(_tenant("acme", name="  ")))[:2] == (422, "tenant.invalid_name")
    status, code, message = await refused({"id": "acme"})
    assert (status, code) == (422, "request.invalid") and "body.name" in message
    assert (await mesh.post("/api/v1/tenants", json=_tenant("acme"))).status_code == 201
    assert await refused(_tenant("acme")) == (409, "tenant.exists", "tenant 'acme' is already registered (active)")


async def test_a_partnership_is_proposed_by_one_side_and_answered_by_the_other(mesh) -> None:
    for tenant_id in ("acme", "bravo", "charlie"):
        await mesh.post("/api/v1/tenants", json=_tenant(tenant_id))

    proposed = await mesh.post("/api/v1/partnerships", json={"proposed_by": "bravo", "partner": "acme",
                                                              "modules": ["sales", "purchasing"],
                                                              "approval_policy": "auto"})
    assert proposed.status_code == 201, proposed.text
    partnership = proposed.json()
    assert (partnership["tenant_low"], partnership["tenant_high"], partnership["invited"], partnership["status"]) == \
        ("acme", "bravo", "acme", "proposed")

    duplicate = await mesh.post("/api/v1/partnerships", json={"proposed_by": "acme", "partner": "bravo"})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "partnership.exists"
    assert f"partnership {partnership['id']}" in duplicate.json()["error"]["message"]

    own = await mesh.post(f"/api/v1/partnerships/{partnership['id']}/accept", json={"by": "bravo"})
    assert own.status_code == 422 and own.json()["error"]["message"].endswith("only acme can accept it")
    outsider = await mesh.post(f"/api/v1/partnerships/{partnership['id']}/accept", json={"by": "charlie"})
    assert outsider.status_code == 422 and outsider.json()["error"]["code"] == "partnership.not_a_side"
    accepted = await mesh.post(f"/api/v1/partnerships/{partnership['id']}/accept", json={"by": "acme"})
    assert accepted.status_code == 200 and accepted.json()["status"] == "active"
    assert accepted.json()["accepted_at"] is not None
    assert (await mesh.post(f"/api/v1/partnerships/{partnership['id']}/decline", json={"by": "acme"})).status_code == 409
    assert (await mesh.post(f"/api/v1/partnerships/{partnership['id']}/suspend")).json()["status"] == "suspended"
    assert (await mesh.post(f"/api/v1/partnerships/{partnership['id']}/resume")).json()["status"] == "active"

    declined_id = (await mesh.post("/api/v1/partnerships", json={"proposed_by": "acme", "partner": "charlie"})).json()["id"]
    assert (await mesh.post(f"/api/v1/partnerships/{declined_id}/decline", json={"by": "charlie"})).json()["status"] == "declined"
    # A declined (or ended) pair can be proposed again; the same row starts afresh.
    again = await mesh.post("/api/v1/partnerships", json={"proposed_by": "charlie", "partner": "acme"})
    assert again.status_code == 201 and again.json()["id"] == declined_id and again.json()["proposed_by"] == "charlie"

    listed = (await mesh.get("/api/v1/partnerships", params={"tenant": "bravo"})).json()["items"]
    assert [p["id"] for p in listed] == [partnership["id"]]
    assert [p["id"] for p in (await mesh.get("/api/v1/partnerships", params={"status": "proposed"})).json()["items"]] == [declined_id]

    bad = await mesh.post("/api/v1/partnerships", json={"proposed_by": "acme", "partner": "nobody"})
    assert bad.status_code == 422 and bad.json()["error"]["message"] == "no tenant 'nobody' in the registry"
    assert (await mesh.post("/api/v1/partnerships", json={"proposed_by": "acme", "partner": "acme"})).status_code == 422
    bad_modules = await mesh.post("/api/v1/partnerships", json={"proposed_by": "acme", "partner": "bravo",
                                                                 "modules": ["hr"]})
    assert bad_modules.status_code == 422 and "unknown: hr" in bad_modules.json()["error"]["message"]


async def test_the_registry_lists_partners_with_an_effective_status_and_a_strong_etag(mesh) -> None:
    tenants = {t: _tenant(t) for t in ("acme", "bravo", "charlie", "delta")}
    for body in tenants.values():
        await mesh.post("/api/v1/tenants", json=body)
    ids = {}
    for partner in ("bravo", "charlie", "delta"):
        ids[partner] = (await mesh.post("/api/v1/partnerships", json={"proposed_by": "acme", "partner": partner})).json()["id"]
    for partner in ("bravo", "charlie"):
        await mesh.post(f"/api/v1/partnerships/{ids[partner]}/accept", json={"by": partner})

    first = await mesh.get("/registry/v1/tenants/acme/partners", headers={"Authorization": ""})
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    # delta has only a proposal: not in the registry yet.
    assert [(p["tenant_id"], p["status"]) for p in first.json()["partners"]] == [("bravo", "active"), ("charlie", "active")]
    bravo = first.json()["partners"][0]
    assert (bravo["public_key"], bravo["approval_policy"], bravo["modules"]) == \
        (tenants["bravo"]["public_key"], "approve", ["sales", "purchasing", "b2b"])

    unchanged = await mesh.get("/registry/v1/tenants/acme/partners", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
    listed = await mesh.get("/registry/v1/tenants/acme/partners", headers={"If-None-Match": f'"other", W/{etag}'})
    assert listed.status_code == 304

    await mesh.post(f"/api/v1/partnerships/{ids['bravo']}/suspend")
    await mesh.post("/api/v1/tenants/charlie/depart")
    changed = await mesh.get("/registry/v1/tenants/acme/partners", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert [(p["tenant_id"], p["status"], p["tenant_status"], p["partnership_status"]) for p in changed.json()["partners"]] == [
        ("bravo", "suspended", "active", "suspended"), ("charlie", "departed", "departed", "active")]
    # The other side sees acme.
    assert [p["tenant_id"] for p in (await mesh.get("/registry/v1/tenants/bravo/partners")).json()["partners"]] == ["acme"]
    unknown = await mesh.get("/registry/v1/tenants/nobody/partners")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "tenant.not_found"


async def test_ygg_mesh_admin_token_create_prints_a_token_the_server_accepts(central_dsn: str) -> None:
    import subprocess

    from mesh_harness import YGG

    made = subprocess.run([YGG, "mesh", "admin-token", "create", "--name", "ops-laptop", "--dsn", central_dsn],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("yggadm_")
    refused = subprocess.run([YGG, "mesh", "admin-token", "create", "--name", " ", "--dsn", central_dsn],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stderr.strip() == "error: the token name must be 1 to 100 characters"
    async with open_mesh(mesh_settings(central_dsn, mesh_health_enabled=False)) as http:
        assert (await http.get("/api/v1/tenants", headers=bearer(token))).status_code == 200
