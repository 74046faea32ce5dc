"""`ygg demo` runs the coordination plane too: the mesh server and the customer portal are
supervised processes listed in stack.json, the demo tenants are registered at the mesh with an
active partnership, the sidecars trade on their synced copy of the registry, and each tenant's
organization has an owner who can sign in to the portal.

The must-show of the coordination-plane issue: the mesh server and the portal SIGKILLed while
the tenants trade. Orders go on federating both ways while both are down (the sidecars work
from their copy of the registry), the supervisor restarts both, and afterwards every
organization, user, membership, subscription, ticket and comment is there, read through the
portal's API with the session opened before the kill, and the mesh lists the same tenants and
partnerships.

A second `ygg demo` on the same state directory reuses all of it: the same admin token and
logins, no second organization, user, ticket or partnership.

The tests share one demo run (the module-scoped `coordination_demo`) and run in file order.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest
from demo_harness import (
    RESTART_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    DemoRun,
    admin_client,
    federated_order,
    healthy,
    is_alive,
    running_demo,
    sell_to_bravo,
)

from yggdrasil.devstack.seed import PARTNERSHIP_POLICY, seed_trade_purchase_order, traded_items

pytestmark = pytest.mark.e2e

FLOW_TIMEOUT = 30.0
# The mesh polls at start and every 10 s; the sidecars sync every 5 s, backing off to 15 s.
HEALTH_TIMEOUT = 30.0
SYNC_TIMEOUT = 40.0
PLANE = ("mesh", "portal")
# The portal's entity tables: what a restart must not lose (sessions and events grow with use).
PORTAL_TABLES = ("organizations", "portal_users", "portal_memberships", "portal_subscriptions", "portal_tickets",
                 "portal_ticket_comments")


# -- reading the stack --------------------------------------------------------------------------

def coordinated_stack(demo: DemoRun) -> dict[str, Any] | None:
    """stack.json once everything runs: broker, sidecars, mesh and portal."""
    stack = demo.stack()
    if not stack or not stack.get("mesh") or not stack.get("portal"):
        return None
    wanted = ("broker", "sidecar:acme", "sidecar:bravo", *PLANE)
    return stack if all(stack["processes"].get(name) for name in wanted) else None


def mesh_admin(stack: dict[str, Any]) -> httpx.Client:
    mesh = stack["mesh"]
    return httpx.Client(base_url=mesh["url"], timeout=10.0,
                        headers={"Authorization": f"Bearer {mesh['admin_token']}"})


def mesh_registry(mesh: httpx.Client) -> dict[str, Any]:
    """What the mesh says about tenants and partnerships (not health: that moves by itself)."""
    tenants = mesh.get("/api/v1/tenants", params={"limit": 500})
    assert tenants.status_code == 200, tenants.text
    partnerships = mesh.get("/api/v1/partnerships", params={"limit": 500})
    assert partnerships.status_code == 200, partnerships.text
    return {
        "tenants": {t["id"]: {k: t[k] for k in ("name", "api_url", "public_key", "key_id", "status")}
                    for t in tenants.json()["items"]},
        "partnerships": {p["id"]: {k: p[k] for k in ("tenant_low", "tenant_high", "status", "approval_policy",
                                                     "modules", "accepted_at")}
                         for p in partnerships.json()["items"]},
    }


def tenant_health(mesh: httpx.Client) -> dict[str, str | None]:
    answer = mesh.get("/api/v1/health/tenants")
    assert answer.status_code == 200, answer.text
    return {row["tenant_id"]: row["health"] for row in answer.json()["items"]}


def sign_in(portal_url: str, email: str, password: str) -> httpx.Response:
    return httpx.post(f"{portal_url}/api/v1/session", json={"email": email, "password": password}, timeout=10.0)


@contextmanager
def portal_client(portal_url: str, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=portal_url, timeout=10.0, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else None


def portal_view(portal: httpx.Client) -> dict[str, Any]:
    """Everything the signed-in owner sees of their organizations, through the portal's API."""
    view: dict[str, Any] = {"me": ok(portal.get("/api/v1/me")), "orgs": {}}
    for org in ok(portal.get("/api/v1/orgs"))["items"]:
        slug = org["slug"]
        tickets = ok(portal.get(f"/api/v1/orgs/{slug}/tickets", params={"limit": 100}))["items"]
        view["orgs"][slug] = {
            "organization": ok(portal.get(f"/api/v1/orgs/{slug}")),
            "tenants": ok(portal.get(f"/api/v1/orgs/{slug}/tenants")),
            "members": ok(portal.get(f"/api/v1/orgs/{slug}/members"))["items"],
            "subscription": ok(portal.get(f"/api/v1/orgs/{slug}/subscription")),
            "tickets": tickets,
            "comments": {t["id"]: ok(portal.get(f"/api/v1/orgs/{slug}/tickets/{t['id']}/comments"))["items"]
                         for t in tickets},
        }
    return view


def central_rows(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - our names
                for table in PORTAL_TABLES}


def partner_copy(dsn: str) -> dict[str, tuple[str, str, str]]:
    """The sidecar's copy of its partners: tenant -> (status, source, approval policy)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT tenant_id, status, source, approval_policy FROM b2b_partners").fetchall()
    return {tenant: (status, source, policy) for tenant, status, source, policy in rows}


def last_sync(dsn: str) -> tuple[datetime | None, int]:
    """(last successful registry sync, failures in a row) as the sidecar recorded them."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT last_success_at, consecutive_failures FROM b2b_registry_sync").fetchone()
    return (row[0], row[1]) if row else (None, 0)


def database_now(dsn: str) -> datetime:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT now()").fetchone()[0]


def buy_from_acme(bravo: httpx.Client) -> dict[str, Any]:
    """A purchase order on bravo for its supplier ACME, of the items bravo maps to acme's."""
    return seed_trade_purchase_order(bravo, "acme", [bought for _, bought in traded_items("bravo", "acme")])


# -- the tests ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def coordination_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """One `ygg demo` for the tests of this module (each needs a stack up; starting one takes
    several seconds)."""
    folder = tmp_path_factory.mktemp("coordination-demo")
    with running_demo(folder / "demo", folder / "demo.out") as run:
        yield run


def test_demo_runs_mesh_and_portal_with_the_tenants_registered_and_owner_logins(coordination_demo: DemoRun) -> None:
    demo = coordination_demo
    stack = demo.wait_for(lambda: coordinated_stack(demo), START_TIMEOUT, "stack.json with mesh and portal")
    tenants = {t["id"]: t for t in stack["tenants"]}
    for name in PLANE:
        entry = stack[name]
        assert entry["pid"] == stack["processes"][name] and is_alive(entry["pid"]), (name, entry)
        assert entry["url"].startswith("http://127.0.0.1:")
        assert healthy(entry["url"]), f"{name} does not answer /health at {entry['url']}"
        assert stack["restarts"][name] == 0

    with mesh_admin(stack) as mesh:
        # -- the registry: both tenants, with their URLs and keys, trading with each other -----------
        registry = mesh_registry(mesh)
        assert set(registry["tenants"]) == {"acme", "bravo"}
        for tenant_id, entry in registry["tenants"].items():
            assert entry["api_url"] == tenants[tenant_id]["url"]
            assert entry["public_key"] == tenants[tenant_id]["public_key"]
            assert entry["status"] == "active"
        [partnership] = registry["partnerships"].values()
        assert (partnership["tenant_low"], partnership["tenant_high"]) == ("acme", "bravo")
        assert partnership["status"] == "active" and partnership["approval_policy"] == PARTNERSHIP_POLICY
        for tenant_id, partner_id in (("acme", "bravo"), ("bravo", "acme")):
            listed = mesh.get(f"/registry/v1/tenants/{tenant_id}/partners")  # the public part, no token
            assert listed.status_code == 200, listed.text
            [partner] = listed.json()["partners"]
            assert (partner["tenant_id"], partner["status"]) == (partner_id, "active")
            assert partner["public_key"] == tenants[partner_id]["public_key"]

        # -- health: the mesh polls the tenant servers and finds them up ------------------------------
        demo.wait_for(lambda: tenant_health(mesh) == {"acme": "up", "bravo": "up"}, HEALTH_TIMEOUT,
                      "the mesh to report both tenants up")

    # -- each sidecar has synced its partner copy from the mesh ---------------------------------------
    for tenant_id, partner_id in (("acme", "bravo"), ("bravo", "acme")):
        dsn = tenants[tenant_id]["dsn"]
        demo.wait_for(lambda dsn=dsn, partner_id=partner_id:
                      partner_copy(dsn).get(partner_id) == ("active", "mesh", PARTNERSHIP_POLICY),
                      SYNC_TIMEOUT, f"{tenant_id}'s sidecar to sync {partner_id} from the mesh")
        assert last_sync(dsn)[0] is not None

    # -- the portal: each tenant's owner signs in and sees their organization -------------------------
    portal_url = stack["portal"]["url"]
    owners = {o["tenant"]: o for o in stack["portal"]["owners"]}
    assert set(owners) == {"acme", "bravo"}
    for tenant_id, owner in owners.items():
        session = ok(sign_in(portal_url, owner["email"], owner["password"]), 201)
        with portal_client(portal_url, session["token"]) as portal:
            view = portal_view(portal)
        assert view["me"]["email"] == owner["email"]
        assert list(view["orgs"]) == [owner["organization"]]  # their own organization only
        org = view["orgs"][owner["organization"]]
        assert org["organization"]["name"] == tenants[tenant_id]["name"]
        assert [t["id"] for t in org["tenants"]] == [tenant_id]
        assert [(m["email"], m["role"]) for m in org["members"]] == [(owner["email"], "owner")]
        assert org["subscription"]["plan"] == "business"
        assert org["subscription"]["status"] in ("trialing", "active")
        assert len(org["tickets"]) == 1 and org["tickets"][0]["status"] == "open"
    wrong = sign_in(portal_url, owners["acme"]["email"], owners["acme"]["password"] + "x")
    assert wrong.status_code == 401, wrong.text


def test_mesh_and_portal_killed_while_tenants_trade_lose_nothing(coordination_demo: DemoRun) -> None:
    demo = coordination_demo
    stack = demo.wait_for(lambda: coordinated_stack(demo), START_TIMEOUT, "stack.json with mesh and portal")
    tenants = {t["id"]: t for t in stack["tenants"]}
    owners = {o["tenant"]: o for o in stack["portal"]["owners"]}
    portal_url, mesh_url = stack["portal"]["url"], stack["mesh"]["url"]
    central_dsn = stack["portal"]["dsn"]

    with admin_client(tenants["acme"]) as acme, admin_client(tenants["bravo"]) as bravo:
        # -- trading, and the sidecars work from the mesh's registry ----------------------------------
        for tenant_id, partner_id in (("acme", "bravo"), ("bravo", "acme")):
            dsn = tenants[tenant_id]["dsn"]
            demo.wait_for(lambda dsn=dsn, partner_id=partner_id:
                          partner_copy(dsn).get(partner_id) == ("active", "mesh", PARTNERSHIP_POLICY),
                          SYNC_TIMEOUT, f"{tenant_id}'s partner copy from the mesh")
        first = sell_to_bravo(acme, "2")
        demo.wait_for(lambda: federated_order(bravo, "/api/v1/purchase-orders", "acme", first["id"]), FLOW_TIMEOUT,
                      f"bravo's purchase order for acme's order {first['id']}")

        # -- the portal in use: a session, a new ticket with a comment, a new member, more seats ------
        acme_owner = ok(sign_in(portal_url, owners["acme"]["email"], owners["acme"]["password"]), 201)
        bravo_owner = ok(sign_in(portal_url, owners["bravo"]["email"], owners["bravo"]["password"]), 201)
        slug = owners["acme"]["organization"]
        with portal_client(portal_url, acme_owner["token"]) as portal:
            ticket = ok(portal.post(f"/api/v1/orgs/{slug}/tickets", json={
                "subject": "Anvils arrive 'dented' & <late>", "body": "Order 42; please check -- thanks"}), 201)
            ok(portal.post(f"/api/v1/orgs/{slug}/tickets/{ticket['id']}/comments",
                           json={"body": "Photos follow."}), 201)
            invited = ok(portal.post(f"/api/v1/orgs/{slug}/members",
                                     json={"email": "clerk@acme.example", "role": "admin"}), 201)
            assert invited["initial_password"]
            ok(portal.patch(f"/api/v1/orgs/{slug}/subscription", json={"seats": 12}))
            acme_before = portal_view(portal)
        with portal_client(portal_url, bravo_owner["token"]) as portal:
            bravo_before = portal_view(portal)
        rows_before = central_rows(central_dsn)
        assert rows_before["portal_ticket_comments"] >= 1 and rows_before["portal_users"] >= 3
        with mesh_admin(stack) as mesh:
            registry_before = mesh_registry(mesh)
        killed_at = {t: database_now(tenants[t]["dsn"]) for t in tenants}

        # -- kill -9 the mesh server and the portal -----------------------------------------------------
        old = {name: stack["processes"][name] for name in PLANE}
        for pid in old.values():
            os.kill(pid, signal.SIGKILL)
        demo.wait_for(lambda: not any(is_alive(pid) for pid in old.values()), 10, "mesh and portal to die")
        # The supervisor restarts a dead child only after a delay (1 s): they are down now.
        assert not healthy(mesh_url) and not healthy(portal_url)

        # -- trading goes on both ways, from the sidecars' copy of the registry -----------------------
        sold = sell_to_bravo(acme, "3")
        bought = buy_from_acme(bravo)
        demo.wait_for(lambda: federated_order(bravo, "/api/v1/purchase-orders", "acme", sold["id"]), FLOW_TIMEOUT,
                      f"bravo's purchase order for acme's order {sold['id']}, sent with the mesh down")
        demo.wait_for(lambda: federated_order(acme, "/api/v1/sales-orders", "bravo", bought["id"]), FLOW_TIMEOUT,
                      f"acme's sales order for bravo's purchase order {bought['id']}, sent with the mesh down")

        # -- the supervisor restarts both; stack.json has the new pids ------------------------------------
        def restarted() -> dict[str, Any] | None:
            current = demo.stack()
            if not current:
                return None
            new = {name: current["processes"].get(name) for name in PLANE}
            fresh = all(new[n] and new[n] != old[n] and is_alive(new[n]) for n in PLANE)
            return current if fresh and healthy(mesh_url) and healthy(portal_url) else None

        stack = demo.wait_for(restarted, RESTART_TIMEOUT, "mesh and portal to be restarted")
        for name in PLANE:
            assert stack[name]["pid"] == stack["processes"][name]
            assert stack["restarts"][name] == 1
        assert (stack["mesh"]["url"], stack["portal"]["url"]) == (mesh_url, portal_url)

        # -- nothing lost: the sessions opened before the kill still work, and show the same ----------
        with portal_client(portal_url, acme_owner["token"]) as portal:
            assert portal_view(portal) == acme_before
        with portal_client(portal_url, bravo_owner["token"]) as portal:
            assert portal_view(portal) == bravo_before
        acme_org = acme_before["orgs"][slug]
        assert ticket["id"] in acme_org["comments"] and len(acme_org["comments"][ticket["id"]]) == 1
        assert ("clerk@acme.example", "admin") in [(m["email"], m["role"]) for m in acme_org["members"]]
        assert acme_org["subscription"]["seats"] == 12
        assert central_rows(central_dsn) == rows_before
        # The member invited before the kill signs in with the password the portal gave out.
        ok(sign_in(portal_url, "clerk@acme.example", invited["initial_password"]), 201)
        with mesh_admin(stack) as mesh:
            assert mesh_registry(mesh) == registry_before
            demo.wait_for(lambda: tenant_health(mesh) == {"acme": "up", "bravo": "up"}, HEALTH_TIMEOUT,
                          "the restarted mesh to report both tenants up")

        # -- the sidecars sync from the restarted mesh again, and trade on -----------------------------
        for tenant_id in tenants:
            dsn = tenants[tenant_id]["dsn"]
            demo.wait_for(lambda dsn=dsn, since=killed_at[tenant_id]:
                          (lambda synced: synced[0] is not None and synced[0] > since and synced[1] == 0)(
                              last_sync(dsn)),
                          SYNC_TIMEOUT, f"{tenant_id}'s sidecar to sync from the restarted mesh")
        assert partner_copy(tenants["acme"]["dsn"])["bravo"] == ("active", "mesh", PARTNERSHIP_POLICY)
        assert partner_copy(tenants["bravo"]["dsn"])["acme"] == ("active", "mesh", PARTNERSHIP_POLICY)
        last = sell_to_bravo(acme, "4")
        demo.wait_for(lambda: federated_order(bravo, "/api/v1/purchase-orders", "acme", last["id"]), FLOW_TIMEOUT,
                      f"bravo's purchase order for acme's order {last['id']}, after the restart")


def test_a_second_run_reuses_the_registry_organizations_and_logins(coordination_demo: DemoRun) -> None:
    demo = coordination_demo
    stack = demo.wait_for(lambda: coordinated_stack(demo), START_TIMEOUT, "stack.json with mesh and portal")
    central_dsn = stack["portal"]["dsn"]
    rows_before = central_rows(central_dsn)
    with mesh_admin(stack) as mesh:
        registry_before = mesh_registry(mesh)

    # -- SIGTERM stops the mesh and the portal with the rest ----------------------------------------
    plane_pids = [stack["processes"][name] for name in PLANE]
    demo.process.send_signal(signal.SIGTERM)
    try:
        assert demo.process.wait(STOP_TIMEOUT) == 0, demo.tail()
    except subprocess.TimeoutExpired:
        pytest.fail(f"ygg demo did not stop within {STOP_TIMEOUT:.0f}s of SIGTERM:\n{demo.tail()}")
    assert [pid for pid in plane_pids if is_alive(pid)] == []

    # -- the next run: same token and logins, nothing added twice --------------------------------------
    with running_demo(demo.state_dir, demo.log.with_name("demo-second-run.out")) as again:
        second = again.wait_for(lambda: coordinated_stack(again), START_TIMEOUT, "the second run's stack.json")
        assert second["mesh"]["admin_token"] == stack["mesh"]["admin_token"]
        assert second["portal"]["owners"] == stack["portal"]["owners"]
        assert central_rows(second["portal"]["dsn"]) == rows_before
        with mesh_admin(second) as mesh:
            registry_after = mesh_registry(mesh)
        assert registry_after["partnerships"] == registry_before["partnerships"]
        assert set(registry_after["tenants"]) == set(registry_before["tenants"])
        # The registry follows the tenants' URLs (the same ports, unless one was taken meanwhile).
        assert {t: e["api_url"] for t, e in registry_after["tenants"].items()} == {
            t["id"]: t["url"] for t in second["tenants"]}
        for owner in second["portal"]["owners"]:
            ok(sign_in(second["portal"]["url"], owner["email"], owner["password"]), 201)
