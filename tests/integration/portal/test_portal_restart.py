"""A real `ygg portal serve` killed with SIGKILL and started again loses nothing: organizations,
users, memberships, subscription, tickets and comments are all there, and a session opened
before the kill (bearer token, cookie and its CSRF token) still works after it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from portal_harness import YGG, bearer, portal_process, query

pytestmark = pytest.mark.e2e


def ygg(*args: str, dsn: str) -> str:
    result = subprocess.run([YGG, *args, "--dsn", dsn], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "YGG_PORTAL_ARGON2_TIME_COST": "1",
                                 "YGG_PORTAL_ARGON2_MEMORY_KIB": "1024", "YGG_PORTAL_ARGON2_PARALLELISM": "1"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def snapshot(http: httpx.Client, token: str) -> dict:
    headers = bearer(token)
    tickets = http.get("/api/v1/orgs/kill-org/tickets", headers=headers).json()["items"]
    return {
        "org": http.get("/api/v1/orgs/kill-org", headers=headers).json(),
        "members": http.get("/api/v1/orgs/kill-org/members", headers=headers).json(),
        "subscription": http.get("/api/v1/orgs/kill-org/subscription", headers=headers).json(),
        "tickets": tickets,
        "comments": [http.get(f"/api/v1/orgs/kill-org/tickets/{t['id']}/comments", headers=headers).json()
                     for t in tickets],
    }


def test_a_sigkilled_portal_restarts_with_all_its_data_and_sessions(central_dsn: str, tmp_path: Path) -> None:
    # Bootstrap as an operator does: the CLI writes the first organization and its owner.
    made = ygg("portal", "org", "create", "--name", "KILL-ORG Ltd", "--slug", "kill-org", dsn=central_dsn)
    assert made == "kill-org\n"
    created = ygg("portal", "user", "create", "--email", "kim@kill.example", "--name", "Kim", "--org", "kill-org",
                  "--role", "owner", dsn=central_dsn)
    password = re.search(r"^password: (\S+)$", created, re.M)[1]

    with portal_process(central_dsn, tmp_path) as portal:
        port = portal.url.rsplit(":", 1)[1]
        with httpx.Client(base_url=portal.url) as api, httpx.Client(base_url=portal.url) as browser:
            session = api.post("/api/v1/session", json={"email": "kim@kill.example", "password": password}).json()
            as_kim = bearer(session["token"])
            invited = api.post("/api/v1/orgs/kill-org/members", headers=as_kim,
                               json={"email": "max@kill.example", "role": "member", "display_name": "Max"}).json()
            assert api.patch("/api/v1/orgs/kill-org/subscription", headers=as_kim,
                             json={"plan": "business", "seats": 12}).status_code == 200
            assert api.post("/api/v1/orgs/kill-org/subscription/renew", headers=as_kim).status_code == 200
            ticket = api.post("/api/v1/orgs/kill-org/tickets", headers=as_kim,
                              json={"subject": "Invoices missing", "body": "since Monday"}).json()
            assert api.post(f"/api/v1/orgs/kill-org/tickets/{ticket['id']}/comments", headers=as_kim,
                            json={"body": "still missing"}).status_code == 201
            assert api.post(f"/api/v1/orgs/kill-org/tickets/{ticket['id']}/assign", headers=as_kim,
                            json={"assignee_id": session["user"]["id"]}).status_code == 200
            # A browser session: cookie plus the CSRF token from a rendered form.
            assert browser.post("/login", data={"email": "kim@kill.example", "password": password}).status_code == 303
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/account").text)[1]
            before = snapshot(api, session["token"])

        # The access log names the request and the user behind it.
        entries = [json.loads(line) for line in portal.log_path.read_text().splitlines() if line.startswith("{")]
        ticket_posts = [e for e in entries
                        if e.get("route") == "/api/v1/orgs/{slug}/tickets" and e.get("status") == 201]
        assert ticket_posts and ticket_posts[0]["actor"] == f"user:{session['user']['id']}"
        assert ticket_posts[0]["request_id"]

        portal.process.send_signal(signal.SIGKILL)
        assert portal.process.wait(10) == -signal.SIGKILL

    with portal_process(central_dsn, tmp_path, port=int(port)) as restarted:
        with httpx.Client(base_url=restarted.url) as api:
            assert snapshot(api, session["token"]) == before
            assert api.get("/api/v1/me", headers=as_kim).json()["email"] == "kim@kill.example"
            # The new member's one-time password, issued before the kill, still signs in.
            max_signs_in = api.post("/api/v1/session", json={"email": "max@kill.example",
                                                             "password": invited["initial_password"]})
            assert max_signs_in.status_code == 201
        # The browser's cookie and CSRF token were rows in the database, not memory.
        with httpx.Client(base_url=restarted.url, cookies=browser.cookies) as same_browser:
            page = same_browser.get(f"/orgs/kill-org/tickets/{ticket['id']}")
            assert page.status_code == 200 and "still missing" in page.text
            posted = same_browser.post(f"/orgs/kill-org/tickets/{ticket['id']}/comments",
                                       data={"csrf_token": csrf, "body": "after the restart"})
            assert posted.status_code == 303

    counts = query(central_dsn, """
        SELECT (SELECT count(*) FROM organizations) AS orgs, (SELECT count(*) FROM portal_users) AS users,
               (SELECT count(*) FROM portal_memberships) AS memberships,
               (SELECT count(*) FROM portal_ticket_comments) AS comments,
               (SELECT plan FROM portal_subscriptions) AS plan""")[0]
    assert counts == {"orgs": 1, "users": 2, "memberships": 2, "comments": 2, "plan": "business"}
