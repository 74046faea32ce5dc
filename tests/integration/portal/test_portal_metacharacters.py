"""Quotes, SQL and HTML metacharacters in every text field are stored verbatim (read back from
the database and the API equal to what was sent) and shown inert on the pages (escaped)."""

from __future__ import annotations

import html

import pytest
from portal_harness import (
    NASTY,
    api_sign_in,
    bearer,
    make_org_with_owner,
    open_portal,
    portal_settings,
    query,
    web_sign_in,
)

pytestmark = pytest.mark.integration

ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
ODD_EMAIL = "o'neil&<b>\"q\"@meta.example"


def assert_inert(page_text: str, *values: str) -> None:
    """No script element, no raw markup from the data, and the data itself there once unescaped."""
    assert "<script" not in page_text.lower()
    assert ESCAPED_SCRIPT in page_text
    for value in values:
        assert html.unescape(page_text).count(value) >= 1, value


async def test_every_text_field_keeps_metacharacters_verbatim_and_pages_show_them_inert(central_dsn: str) -> None:
    settings = portal_settings(central_dsn)
    await make_org_with_owner(settings, "meta-home", "mia@meta.example")
    body = NASTY + "\nsecond line\t'tab'"
    async with open_portal(settings) as (app, client):
        csrf = await web_sign_in(client, "mia@meta.example")
        # Through the forms: an organization, the display name, a ticket and a comment.
        created = await client.post("/orgs", data={"csrf_token": csrf, "name": NASTY, "slug": "meta-org"})
        assert created.status_code == 303 and created.headers["location"] == "/orgs/meta-org"
        assert (await client.post("/account", data={"csrf_token": csrf, "display_name": NASTY})).status_code == 303
        opened = await client.post("/orgs/meta-org/tickets", data={"csrf_token": csrf, "subject": NASTY, "body": body})
        assert opened.status_code == 303
        ticket_path = opened.headers["location"]
        commented = await client.post(ticket_path + "/comments", data={"csrf_token": csrf, "body": NASTY})
        assert commented.status_code == 303
        invited = await client.post("/orgs/meta-org/members", data={
            "csrf_token": csrf, "email": ODD_EMAIL, "display_name": NASTY, "role": "member"})
        assert invited.status_code == 201
        assert_inert(invited.text, NASTY, ODD_EMAIL)

        # Through the JSON API: the same values, sent as JSON.
        session = await api_sign_in(client, "mia@meta.example")
        as_mia = bearer(session["token"])
        api_org = await client.post("/api/v1/orgs", headers=as_mia, json={"name": NASTY, "slug": "meta-api"})
        assert api_org.status_code == 201 and api_org.json()["name"] == NASTY
        api_ticket = await client.post("/api/v1/orgs/meta-api/tickets", headers=as_mia,
                                       json={"subject": NASTY, "body": body})
        assert api_ticket.status_code == 201
        api_comment = await client.post(f"/api/v1/orgs/meta-api/tickets/{api_ticket.json()['id']}/comments",
                                        headers=as_mia, json={"body": NASTY})
        assert api_comment.status_code == 201 and api_comment.json()["body"] == NASTY
        renamed = await client.patch("/api/v1/me", headers=as_mia, json={"display_name": NASTY + "!"})
        assert renamed.json()["display_name"] == NASTY + "!"
        assert (await client.patch("/api/v1/me", headers=as_mia, json={"display_name": NASTY})).status_code == 200

        # The database holds exactly what was typed, and the SQL in it did nothing.
        assert [r["name"] for r in query(central_dsn, "SELECT name FROM organizations WHERE slug LIKE 'meta-%%' "
                                                      "AND slug <> 'meta-home' ORDER BY id")] == [NASTY, NASTY]
        users = query(central_dsn, "SELECT email, display_name FROM portal_users ORDER BY id")
        assert [u["display_name"] for u in users] == [NASTY, NASTY]
        assert users[1]["email"] == ODD_EMAIL
        tickets = query(central_dsn, "SELECT subject, body FROM portal_tickets ORDER BY id")
        assert tickets == [{"subject": NASTY, "body": body}] * 2
        assert [c["body"] for c in query(central_dsn, "SELECT body FROM portal_ticket_comments")] == [NASTY, NASTY]

        # The API gives it back unchanged.
        for slug in ("meta-org", "meta-api"):
            assert (await client.get(f"/api/v1/orgs/{slug}", headers=as_mia)).json()["name"] == NASTY
            listed = (await client.get(f"/api/v1/orgs/{slug}/tickets", headers=as_mia)).json()["items"]
            assert [(t["subject"], t["body"], t["opened_by_name"]) for t in listed] == [(NASTY, body, NASTY)]
            comments = (await client.get(f"/api/v1/orgs/{slug}/tickets/{listed[0]['id']}/comments",
                                         headers=as_mia)).json()["items"]
            assert [(c["body"], c["author_name"]) for c in comments] == [(NASTY, NASTY)]
        members = (await client.get("/api/v1/orgs/meta-org/members", headers=as_mia)).json()["items"]
        assert {(m["email"], m["display_name"]) for m in members} == {("mia@meta.example", NASTY), (ODD_EMAIL, NASTY)}
        assert (await client.get("/api/v1/me", headers=as_mia)).json()["display_name"] == NASTY

        # Every page that shows them shows them as text.
        for path in ("/", "/orgs/meta-org", "/orgs/meta-org/members", "/orgs/meta-org/tickets", ticket_path,
                     "/orgs/meta-org/subscription", "/account"):
            page = await client.get(path)
            assert page.status_code == 200, path
            assert_inert(page.text, NASTY)
            assert page.headers["content-security-policy"].startswith("default-src 'none'")
        detail = (await client.get(ticket_path)).text
        assert html.unescape(detail).count(NASTY) >= 4  # subject, body, comment, names
        assert "&#39;; DROP TABLE portal_users; -- " in detail and "&#34;x&#34; &amp; ü" in detail
