"""A portal user sees only their own organizations: another organization's tickets, members and
subscription answer 404 (as if they did not exist), on the web pages and in the API alike."""

from __future__ import annotations

import pytest
from portal_harness import api_sign_in, bearer, make_org_with_owner, open_portal, portal_settings, web_sign_in

pytestmark = pytest.mark.integration


async def test_a_member_of_one_organization_gets_404_for_everything_of_another(central_dsn: str) -> None:
    settings = portal_settings(central_dsn)
    await make_org_with_owner(settings, "alpha-org", "ann@alpha.example", role="member")
    await make_org_with_owner(settings, "bravo-org", "bob@bravo.example")
    async with open_portal(settings) as (app, client):
        bob = await api_sign_in(client, "bob@bravo.example")
        bravo_ticket = (await client.post("/api/v1/orgs/bravo-org/tickets", headers=bearer(bob["token"]),
                                          json={"subject": "BRAVO-ONLY", "body": "secret"})).json()
        ann = await api_sign_in(client, "ann@alpha.example")
        own_ticket = (await client.post("/api/v1/orgs/alpha-org/tickets", headers=bearer(ann["token"]),
                                        json={"subject": "ALPHA", "body": "ours"})).json()
        as_ann = bearer(ann["token"])

        # Her own organization works ...
        assert (await client.get("/api/v1/orgs/alpha-org/tickets", headers=as_ann)).status_code == 200
        # ... the other one is not there, whichever way she asks.
        for path in ("/api/v1/orgs/bravo-org", "/api/v1/orgs/bravo-org/tickets",
                     f"/api/v1/orgs/bravo-org/tickets/{bravo_ticket['id']}",
                     f"/api/v1/orgs/bravo-org/tickets/{bravo_ticket['id']}/comments",
                     "/api/v1/orgs/bravo-org/members", "/api/v1/orgs/bravo-org/subscription",
                     "/api/v1/orgs/bravo-org/tenants",
                     # another organization's ticket id under her own organization
                     f"/api/v1/orgs/alpha-org/tickets/{bravo_ticket['id']}"):
            response = await client.get(path, headers=as_ann)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "resource.not_found"
            assert "BRAVO" not in response.text
        nowhere = await client.get("/api/v1/orgs/no-such-org/tickets", headers=as_ann)
        assert nowhere.status_code == 404
        # The answer for a real but foreign organization is the one for a missing one.
        foreign = await client.get("/api/v1/orgs/bravo-org/tickets", headers=as_ann)
        assert foreign.json() == nowhere.json()
        for method, path, body in (
                ("POST", "/api/v1/orgs/bravo-org/tickets", {"subject": "x", "body": "y"}),
                ("POST", f"/api/v1/orgs/bravo-org/tickets/{bravo_ticket['id']}/comments", {"body": "y"}),
                ("POST", f"/api/v1/orgs/alpha-org/tickets/{bravo_ticket['id']}/comments", {"body": "y"}),
                ("POST", f"/api/v1/orgs/alpha-org/tickets/{bravo_ticket['id']}/close", None),
                ("POST", "/api/v1/orgs/bravo-org/members", {"email": "eve@x.example", "role": "member"}),
                ("POST", "/api/v1/orgs/bravo-org/subscription/cancel", {"at_period_end": False}),
                ("DELETE", "/api/v1/orgs/bravo-org", None)):
            response = await client.request(method, path, headers=as_ann, json=body)
            assert response.status_code == 404, (method, path, response.text)
        # Her list of organizations names only her own.
        listed = (await client.get("/api/v1/orgs", headers=as_ann)).json()["items"]
        assert [o["slug"] for o in listed] == ["alpha-org"]

        # The web pages: the same 404s, and nothing of bravo's on them.
        csrf = await web_sign_in(client, "ann@alpha.example")
        assert (await client.get(f"/orgs/alpha-org/tickets/{own_ticket['id']}")).status_code == 200
        for path in ("/orgs/bravo-org", "/orgs/bravo-org/tickets", f"/orgs/bravo-org/tickets/{bravo_ticket['id']}",
                     f"/orgs/alpha-org/tickets/{bravo_ticket['id']}", "/orgs/bravo-org/members",
                     "/orgs/bravo-org/subscription"):
            page = await client.get(path)
            assert page.status_code == 404, path
            assert "BRAVO-ONLY" not in page.text and "secret" not in page.text
        page = await client.post(f"/orgs/bravo-org/tickets/{bravo_ticket['id']}/comments",
                                 data={"csrf_token": csrf, "body": "sneaky"})
        assert page.status_code == 404
        home = await client.get("/")
        assert "alpha-org" in home.text and "bravo-org" not in home.text

    # Nothing of Ann's attempts reached bravo's ticket.
    from portal_harness import query
    assert query(central_dsn, "SELECT count(*) AS n FROM portal_ticket_comments")[0]["n"] == 0
