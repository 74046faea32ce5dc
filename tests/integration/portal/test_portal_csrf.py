"""State-changing requests that ride on the session cookie must carry that session's CSRF token:
without one, or with another session's, they are refused with 403 and change nothing."""

from __future__ import annotations

import pytest
from portal_harness import (
    api_sign_in,
    bearer,
    client_for,
    make_org_with_owner,
    open_portal,
    portal_settings,
    query,
    web_sign_in,
)

pytestmark = pytest.mark.integration


async def test_a_form_post_needs_the_csrf_token_of_its_own_session(central_dsn: str) -> None:
    settings = portal_settings(central_dsn)
    await make_org_with_owner(settings, "csrf-org", "olga@csrf.example")
    async with open_portal(settings) as (app, browser):
        own_token = await web_sign_in(browser, "olga@csrf.example")
        async with client_for(app) as other_browser:  # a second session of the same user
            other_token = await web_sign_in(other_browser, "olga@csrf.example")
        assert own_token != other_token

        form = {"subject": "CSRF-PROBE", "body": "posted"}
        missing = await browser.post("/orgs/csrf-org/tickets", data=form)
        assert missing.status_code == 403
        assert "no CSRF token" in missing.text
        foreign = await browser.post("/orgs/csrf-org/tickets", data={**form, "csrf_token": other_token})
        assert foreign.status_code == 403
        assert "does not belong to this session" in foreign.text
        cross_site = await browser.post("/orgs/csrf-org/tickets", data={**form, "csrf_token": own_token},
                                        headers={"Origin": "https://evil.example"})
        assert cross_site.status_code == 403
        assert query(central_dsn, "SELECT count(*) AS n FROM portal_tickets")[0]["n"] == 0

        accepted = await browser.post("/orgs/csrf-org/tickets", data={**form, "csrf_token": own_token},
                                      headers={"Origin": "http://portal.test"})
        assert accepted.status_code == 303
        assert [r["subject"] for r in query(central_dsn, "SELECT subject FROM portal_tickets")] == ["CSRF-PROBE"]

        # Sign-out is a state change too.
        assert (await browser.post("/logout", data={})).status_code == 403
        assert (await browser.get("/account")).status_code == 200
        metrics = (await browser.get("/metrics")).text
        assert "ygg_portal_csrf_refused_total 4.0" in metrics


async def test_the_json_api_on_the_cookie_needs_the_csrf_header_but_a_bearer_token_does_not(central_dsn: str) -> None:
    settings = portal_settings(central_dsn)
    await make_org_with_owner(settings, "csrf-api", "carl@csrf.example")
    async with open_portal(settings) as (app, client):
        session = await api_sign_in(client, "carl@csrf.example")  # also sets the cookie
        body = {"subject": "API", "body": "via cookie"}
        refused = await client.post("/api/v1/orgs/csrf-api/tickets", json=body)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf.refused"
        wrong = await client.post("/api/v1/orgs/csrf-api/tickets", json=body, headers={"X-CSRF-Token": "x" * 43})
        assert wrong.status_code == 403
        with_header = await client.post("/api/v1/orgs/csrf-api/tickets", json=body,
                                        headers={"X-CSRF-Token": session["csrf_token"]})
        assert with_header.status_code == 201
        # Reads need no token.
        assert (await client.get("/api/v1/orgs/csrf-api/tickets")).status_code == 200

        async with client_for(app) as api_client:  # no cookies: a script with the bearer token
            by_bearer = await api_client.post("/api/v1/orgs/csrf-api/tickets", json=body,
                                              headers=bearer(session["token"]))
            assert by_bearer.status_code == 201
            signed_out = await api_client.delete("/api/v1/session", headers=bearer(session["token"]))
            assert signed_out.status_code == 204
            # The session is revoked in the database: the cookie is dead too.
            gone = await api_client.get("/api/v1/me", headers=bearer(session["token"]))
            assert gone.status_code == 401
        assert (await client.get("/api/v1/me")).status_code == 401
