"""Roles, the seat limit, the subscription's life, the ticket workflow with pagination and
filters, password re-hashing, tenants owned by an organization, and the operations endpoints,
through the JSON API and the pages of an in-process portal on a real database."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
from portal_harness import (
    api_sign_in,
    bearer,
    make_org_with_owner,
    open_portal,
    portal_settings,
    query,
    web_sign_in,
)

pytestmark = pytest.mark.integration


async def _team(client: httpx.AsyncClient, settings, slug: str) -> dict[str, dict]:  # noqa: ANN001
    """An owner (made by the operator), and an admin and a member invited by the owner."""
    await make_org_with_owner(settings, slug, f"olivia@{slug}.example")
    owner = await api_sign_in(client, f"olivia@{slug}.example")
    team = {"owner": owner}
    for role in ("admin", "member"):
        invited = await client.post(f"/api/v1/orgs/{slug}/members", headers=bearer(owner["token"]),
                                    json={"email": f"{role}@{slug}.example", "role": role})
        assert invited.status_code == 201, invited.text
        password = invited.json()["initial_password"]
        team[role] = {**await api_sign_in(client, f"{role}@{slug}.example", password), "password": password}
    return team


async def test_each_role_may_do_its_own_things_and_gets_403_with_a_reason_otherwise(central_dsn: str) -> None:
    settings = portal_settings(central_dsn)
    async with open_portal(settings) as (app, client):
        team = await _team(client, settings, "roles")
        owner, admin, member = (bearer(team[r]["token"]) for r in ("owner", "admin", "member"))
        ids = {r: team[r]["user"]["id"] for r in team}

        # member: reads, opens and comments
        assert (await client.get("/api/v1/orgs/roles/members", headers=member)).status_code == 200
        ticket = (await client.post("/api/v1/orgs/roles/tickets", headers=member,
                                    json={"subject": "Printer", "body": "on fire"})).json()
        tickets = f"/api/v1/orgs/roles/tickets/{ticket['id']}"
        assert (await client.post(tickets + "/comments", headers=member, json={"body": "still"})).status_code == 201
        for method, path, body in (
                ("POST", "/api/v1/orgs/roles/members", {"email": "x@roles.example", "role": "member"}),
                ("POST", tickets + "/close", None),
                ("POST", tickets + "/assign", {"assignee_id": ids["admin"]}),
                ("PATCH", "/api/v1/orgs/roles", {"name": "Mine now"}),
                ("PATCH", "/api/v1/orgs/roles/subscription", {"seats": 3}),
                ("DELETE", "/api/v1/orgs/roles", None)):
            refused = await client.request(method, path, headers=member, json=body)
            assert refused.status_code == 403, (method, path)
            assert refused.json()["error"]["code"] == "permission.denied"
            assert "your role is member" in refused.json()["error"]["message"]

        # admin: members (not owners) and tickets, not the subscription or the organization's life
        assert (await client.post(tickets + "/assign", headers=admin,
                                  json={"assignee_id": ids["admin"]})).json()["assignee_id"] == ids["admin"]
        not_assignable = await client.post(tickets + "/assign", headers=admin, json={"assignee_id": ids["member"]})
        assert not_assignable.status_code == 422
        assert (await client.post(tickets + "/close", headers=admin)).json()["status"] == "closed"
        assert (await client.post(tickets + "/close", headers=admin)).status_code == 409
        assert (await client.post(tickets + "/reopen", headers=admin)).json()["status"] == "open"
        assert (await client.patch("/api/v1/orgs/roles", headers=admin, json={"name": "Roles & Co"})).status_code == 200
        for method, path, body in (
                ("PATCH", "/api/v1/orgs/roles/subscription", {"seats": 4}),
                ("POST", "/api/v1/orgs/roles/subscription/cancel", {"at_period_end": False}),
                ("DELETE", "/api/v1/orgs/roles", None),
                ("PATCH", f"/api/v1/orgs/roles/members/{ids['member']}", {"role": "owner"}),
                ("DELETE", f"/api/v1/orgs/roles/members/{ids['owner']}", None)):
            refused = await client.request(method, path, headers=admin, json=body)
            assert refused.status_code == 403, (method, path)
            assert "only an owner" in refused.json()["error"]["message"]
        demoted = await client.patch(f"/api/v1/orgs/roles/members/{ids['admin']}", headers=owner,
                                     json={"role": "member"})
        assert demoted.json()["role"] == "member"
        # A demoted admin's assignments go: only admins and owners hold tickets.
        assert (await client.get(tickets, headers=owner)).json()["assignee_id"] is None

        # owner: the last one cannot step down or leave
        for response in (await client.patch(f"/api/v1/orgs/roles/members/{ids['owner']}", headers=owner,
                                            json={"role": "admin"}),
                         await client.delete(f"/api/v1/orgs/roles/members/{ids['owner']}", headers=owner)):
            assert response.status_code == 409
            assert response.json()["error"]["code"] == "membership.last_owner"
        # Web pages refuse the same way (with the session's CSRF token, so the role is what counts).
        csrf = await web_sign_in(client, "member@roles.example", team["member"]["password"])
        page = await client.post("/orgs/roles/members", data={"csrf_token": csrf, "email": "y@roles.example"})
        assert page.status_code == 403 and "only an admin can manage members" in page.text
        # ... and the organization can go, with its tickets.
        assert (await client.delete("/api/v1/orgs/roles", headers=owner)).status_code == 204
        assert (await client.get("/api/v1/orgs/roles", headers=owner)).status_code == 404
        assert query(central_dsn, "SELECT count(*) AS n FROM portal_tickets")[0]["n"] == 0
        events = [e["action"] for e in query(central_dsn, "SELECT action FROM portal_events ORDER BY id")]
        assert {"membership.role_changed", "ticket.closed", "organization.deleted"} <= set(events)


async def test_inviting_beyond_the_seats_is_refused_with_409_and_seats_follow_the_plan(central_dsn: str) -> None:
    settings = portal_settings(central_dsn)
    await make_org_with_owner(settings, "seats", "sue@seats.example")
    async with open_portal(settings) as (app, client):
        owner = bearer((await api_sign_in(client, "sue@seats.example"))["token"])
        assert (await client.patch("/api/v1/orgs/seats/subscription", headers=owner,
                                   json={"seats": 2})).json()["seats"] == 2
        first = await client.post("/api/v1/orgs/seats/members", headers=owner, json={"email": "a@seats.example"})
        assert first.status_code == 201
        full = await client.post("/api/v1/orgs/seats/members", headers=owner, json={"email": "b@seats.example"})
        assert full.status_code == 409
        assert full.json()["error"] == {"code": "subscription.seat_limit",
                                        "message": "all 2 seats of the starter plan are taken; add seats or change "
                                                   "plan before inviting more members"}
        assert query(central_dsn, "SELECT count(*) AS n FROM portal_users WHERE email = 'b@seats.example'")[0]["n"] == 0
        below = await client.patch("/api/v1/orgs/seats/subscription", headers=owner, json={"seats": 1})
        assert below.status_code == 409 and below.json()["error"]["code"] == "subscription.seats_below_members"
        over = await client.patch("/api/v1/orgs/seats/subscription", headers=owner, json={"seats": 6})
        assert over.status_code == 422 and "at most 5 seats" in over.json()["error"]["message"]
        upgraded = await client.patch("/api/v1/orgs/seats/subscription", headers=owner,
                                      json={"plan": "business", "seats": 6})
        assert upgraded.json()["plan"] == "business" and upgraded.json()["seats_used"] == 2
        again = await client.post("/api/v1/orgs/seats/members", headers=owner, json={"email": "B@Seats.example"})
        assert again.status_code == 201
        duplicate = await client.post("/api/v1/orgs/seats/members", headers=owner, json={"email": "b@SEATS.example"})
        assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "membership.exists"
        unknown = await client.patch("/api/v1/orgs/seats/subscription", headers=owner, json={"plan": "platinum"})
        assert unknown.status_code == 422 and "starter, business, enterprise" in unknown.json()["error"]["message"]


async def test_a_subscription_renews_by_a_month_lapses_to_past_due_and_cancels_at_period_end_or_now(
        central_dsn: str) -> None:
    settings = portal_settings(central_dsn)
    await make_org_with_owner(settings, "subs", "sid@subs.example")
    async with open_portal(settings) as (app, client):
        owner = bearer((await api_sign_in(client, "sid@subs.example"))["token"])
        trial = (await client.get("/api/v1/orgs/subs/subscription", headers=owner)).json()
        assert trial["status"] == "trialing"
        renewed = (await client.post("/api/v1/orgs/subs/subscription/renew", headers=owner)).json()
        trial_end = datetime.fromisoformat(trial["current_period_end"])
        assert renewed["status"] == "active"
        assert datetime.fromisoformat(renewed["current_period_start"]) == trial_end
        end = datetime.fromisoformat(renewed["current_period_end"])
        assert (end.year * 12 + end.month) - (trial_end.year * 12 + trial_end.month) == 1

        # A period that ends unrenewed makes it past due (the period is moved into the past here).
        query(central_dsn, "UPDATE portal_subscriptions SET current_period_start = now() - interval '40 days', "
                           "current_period_end = now() - interval '10 days' RETURNING 1")
        assert (await client.get("/api/v1/orgs/subs/subscription", headers=owner)).json()["status"] == "past_due"
        assert (await client.post("/api/v1/orgs/subs/subscription/renew", headers=owner)).json()["status"] == "active"

        scheduled = (await client.post("/api/v1/orgs/subs/subscription/cancel", headers=owner,
                                       json={"at_period_end": True})).json()
        assert scheduled["status"] == "active" and scheduled["cancel_at_period_end"] is True
        cancelled = (await client.post("/api/v1/orgs/subs/subscription/cancel", headers=owner,
                                       json={"at_period_end": False})).json()
        assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
        assert (await client.post("/api/v1/orgs/subs/subscription/cancel", headers=owner)).status_code == 409
        refused = await client.post("/api/v1/orgs/subs/members", headers=owner, json={"email": "n@subs.example"})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "subscription.cancelled"
        back = (await client.post("/api/v1/orgs/subs/subscription/renew", headers=owner)).json()
        assert back["status"] == "active" and back["cancelled_at"] is None
        row = query(central_dsn, "SELECT status, cancelled_at FROM portal_subscriptions")[0]
        assert row == {"status": "active", "cancelled_at": None}

        # The page offers what the owner can do, through forms with the CSRF token.
        csrf = await web_sign_in(client, "sid@subs.example")
        changed = await client.post("/orgs/subs/subscription", data={"csrf_token": csrf, "plan": "enterprise",
                                                                    "seats": "40"})
        assert changed.status_code == 303
        page = (await client.get("/orgs/subs/subscription")).text
        assert "Enterprise" in page and "1 used of 40" in page


async def test_tickets_page_through_with_a_cursor_filter_by_status_and_closed_ones_take_no_comments(
        central_dsn: str) -> None:
    settings = portal_settings(central_dsn)
    await make_org_with_owner(settings, "desk", "dora@desk.example")
    async with open_portal(settings) as (app, client):
        owner = bearer((await api_sign_in(client, "dora@desk.example"))["token"])
        ids = [(await client.post("/api/v1/orgs/desk/tickets", headers=owner,
                                  json={"subject": f"T{n}", "body": "b"})).json()["id"] for n in range(5)]
        for ticket_id in ids[1:3]:
            assert (await client.post(f"/api/v1/orgs/desk/tickets/{ticket_id}/close", headers=owner)).status_code == 200
        seen, after = [], 0
        while True:
            page = (await client.get("/api/v1/orgs/desk/tickets", headers=owner,
                                     params={"limit": 2, "after": after})).json()
            seen += [t["id"] for t in page["items"]]
            if page["next_after"] is None:
                break
            after = page["next_after"]
        assert seen == ids
        closed = (await client.get("/api/v1/orgs/desk/tickets", headers=owner, params={"status": "closed"})).json()
        assert [t["id"] for t in closed["items"]] == ids[1:3]
        assert [t["status"] for t in closed["items"]] == ["closed", "closed"]
        bad = await client.get("/api/v1/orgs/desk/tickets", headers=owner, params={"status": "pending"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "request.invalid"
        on_closed = await client.post(f"/api/v1/orgs/desk/tickets/{ids[1]}/comments", headers=owner, json={"body": "x"})
        assert on_closed.status_code == 409 and on_closed.json()["error"]["code"] == "ticket.closed"
        assert (await client.post(f"/api/v1/orgs/desk/tickets/{ids[1]}/reopen", headers=owner)).status_code == 200
        assert (await client.post(f"/api/v1/orgs/desk/tickets/{ids[1]}/comments", headers=owner,
                                  json={"body": "x"})).status_code == 201
        empty = await client.post("/api/v1/orgs/desk/tickets", headers=owner, json={"subject": "  ", "body": "b"})
        assert empty.status_code == 422

        await web_sign_in(client, "dora@desk.example")
        listing = (await client.get("/orgs/desk/tickets?status=open")).text
        assert "T0" in listing and "T1" in listing and "T2" not in listing


async def test_a_stored_hash_with_old_parameters_is_replaced_at_the_next_sign_in(central_dsn: str) -> None:
    settings = portal_settings(central_dsn)
    await make_org_with_owner(settings, "hash", "hal@hash.example")
    old = query(central_dsn, "SELECT password_hash FROM portal_users")[0]["password_hash"]
    assert "m=1024,t=1,p=1" in old
    stronger = portal_settings(central_dsn, portal_argon2_time_cost=2, portal_argon2_memory_kib=2048)
    async with open_portal(stronger) as (app, client):
        await api_sign_in(client, "hal@hash.example")
        new = query(central_dsn, "SELECT password_hash FROM portal_users")[0]["password_hash"]
        assert new != old and "m=2048,t=2,p=1" in new
        await api_sign_in(client, "HAL@hash.example")  # the new hash checks, and email case does not matter
        assert query(central_dsn, "SELECT password_hash FROM portal_users")[0]["password_hash"] == new


async def test_an_organization_shows_its_tenants_and_cannot_be_deleted_while_it_owns_one(central_dsn: str) -> None:
    settings = portal_settings(central_dsn)
    made = await make_org_with_owner(settings, "owning", "tom@owning.example")
    query(central_dsn, "INSERT INTO tenants (id, name, api_url, public_key, key_id, organization_id) "
                       "VALUES ('acme', 'ACME-SELLER', 'http://127.0.0.1:1', %s, %s, %s) RETURNING id",
          "A" * 43 + "=", "0" * 16, made["org"]["id"])
    async with open_portal(settings) as (app, client):
        owner = bearer((await api_sign_in(client, "tom@owning.example"))["token"])
        tenants = (await client.get("/api/v1/orgs/owning/tenants", headers=owner)).json()
        assert [(t["id"], t["name"], t["status"]) for t in tenants] == [("acme", "ACME-SELLER", "active")]
        refused = await client.delete("/api/v1/orgs/owning", headers=owner)
        assert refused.status_code == 409 and "acme" in refused.json()["error"]["message"]
        await web_sign_in(client, "tom@owning.example")
        assert "ACME-SELLER" in (await client.get("/orgs/owning")).text


async def test_operations_endpoints_and_signed_out_requests(central_dsn: str) -> None:
    async with open_portal(portal_settings(central_dsn)) as (app, client):
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["database"] == "up"
        assert "ygg_portal_http_requests_total" in (await client.get("/metrics")).text
        openapi = (await client.get("/openapi.json")).json()
        assert "/api/v1/orgs/{slug}/tickets" in openapi["paths"] and "/login" not in openapi["paths"]
        assert (await client.get("/docs")).status_code == 200
        signed_out = await client.get("/api/v1/orgs")
        assert signed_out.status_code == 401 and signed_out.headers["www-authenticate"] == "Bearer"
        assert signed_out.json()["error"]["code"] == "auth.required"
        redirect = await client.get("/orgs/x/tickets?status=open")
        assert redirect.status_code == 303
        assert redirect.headers["location"] == "/login?next=%2Forgs%2Fx%2Ftickets%3Fstatus%3Dopen"
        login = await client.get("/login?next=//evil.example/")
        assert 'name="next" value="/"' in login.text
        assert login.headers["x-frame-options"] == "DENY" and "x-request-id" in login.headers
        assert (await client.get("/api/v1/nothing")).json()["error"]["code"] == "route.not_found"
        huge = await client.post("/api/v1/session", content=b"x" * (2 * 1024 * 1024),
                                 headers={"content-type": "application/json"})
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "request.too_large"


async def test_the_session_cookie_is_httponly_and_lax_and_a_session_ends_by_expiry_idleness_or_sign_out(
        central_dsn: str) -> None:
    settings = portal_settings(central_dsn, portal_cookie_secure=True, portal_session_idle_seconds=600)
    await make_org_with_owner(settings, "sess", "sam@sess.example")
    async with open_portal(settings) as (app, client):
        response = await client.post("/login", data={"email": "sam@sess.example", "password": "correct horse battery"})
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("ygg_portal_session=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie and "Path=/" in cookie
        token = cookie.split(";")[0].split("=", 1)[1]
        stored = query(central_dsn, "SELECT token_hash, expires_at - created_at AS lifetime FROM portal_sessions")
        assert len(stored) == 1 and token.encode() not in bytes(stored[0]["token_hash"])  # only its hash is kept
        me = bearer(token)
        assert (await client.get("/api/v1/me", headers=me)).status_code == 200

        query(central_dsn, "UPDATE portal_sessions SET last_seen_at = now() - interval '11 minutes' RETURNING 1")
        assert (await client.get("/api/v1/me", headers=me)).status_code == 401  # idle too long
        query(central_dsn, "UPDATE portal_sessions SET last_seen_at = now(), expires_at = now() - interval '1 second' "
                           "RETURNING 1")
        assert (await client.get("/api/v1/me", headers=me)).status_code == 401  # past its lifetime
        query(central_dsn, "UPDATE portal_sessions SET expires_at = now() + interval '1 hour' RETURNING 1")
        assert (await client.get("/api/v1/me", headers=me)).status_code == 200
        query(central_dsn, "UPDATE portal_users SET active = false RETURNING 1")
        assert (await client.get("/api/v1/me", headers=me)).status_code == 401  # a deactivated user is out at once
