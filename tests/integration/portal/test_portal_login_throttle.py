"""Repeated failed sign-ins lock the account for a while (429 with Retry-After), the right
password included, without telling whether the email has an account; the lock is a row in
PostgreSQL, so every copy of the portal enforces it, and it ends when its time is up."""

from __future__ import annotations

import asyncio

import pytest
from portal_harness import PASSWORD, make_org_with_owner, open_portal, portal_settings, query

pytestmark = pytest.mark.integration

LOCK_SECONDS = 2.0


async def _sign_in(client, email: str, password: str):  # noqa: ANN001, ANN202
    return await client.post("/api/v1/session", json={"email": email, "password": password})


async def test_repeated_failures_lock_the_account_even_for_the_right_password_until_the_lock_ends(
        central_dsn: str) -> None:
    settings = portal_settings(central_dsn, portal_login_max_failures=3, portal_login_lockout_seconds=LOCK_SECONDS)
    await make_org_with_owner(settings, "lock-org", "lena@lock.example")
    async with open_portal(settings) as (app, client), open_portal(settings) as (other_app, other_copy):
        answers = [await _sign_in(client, "Lena@Lock.example", f"wrong-{n}") for n in range(3)]
        assert [a.status_code for a in answers] == [401, 401, 429]
        assert answers[0].json()["error"] == {"code": "auth.login_failed", "message": "the email or password is wrong"}
        assert 1 <= int(answers[2].headers["Retry-After"]) <= LOCK_SECONDS

        # Locked: the right password is refused too, on this copy of the portal and on another.
        for portal in (client, other_copy):
            refused = await _sign_in(portal, "lena@lock.example", PASSWORD)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "auth.throttled"
            assert "try again in" in refused.json()["error"]["message"]
        page = await client.post("/login", data={"email": "lena@lock.example", "password": PASSWORD})
        assert page.status_code == 429 and "Retry-After" in page.headers
        assert "too many failed sign-in attempts" in page.text
        assert "ygg_portal_session" not in page.headers.get("set-cookie", "")

        # An email without an account gets exactly the same answers: nothing reveals which exist.
        ghost = [await _sign_in(client, "nobody@lock.example", f"guess-{n}") for n in range(4)]
        assert [g.status_code for g in ghost] == [401, 401, 429, 429]
        assert ghost[0].json() == answers[0].json()
        assert ghost[3].json()["error"]["code"] == refused.json()["error"]["code"]

        locks = query(central_dsn, "SELECT count(*) AS n FROM portal_login_throttle WHERE locked_until > now()")
        assert locks[0]["n"] == 2  # the two emails; the address is far from its own limit

        # When the lock has run out the right password works (and clears the count).
        await asyncio.sleep(int(refused.headers["Retry-After"]) + 0.2)
        welcome = await _sign_in(other_copy, "lena@lock.example", PASSWORD)
        assert welcome.status_code == 201, welcome.text
        lena_subject = "SELECT count(*) AS n FROM portal_login_throttle WHERE subject = 'email:' || " \
                       "encode(sha256(convert_to(%s, 'UTF8')), 'hex')"
        assert query(central_dsn, lena_subject, "lena@lock.example")[0]["n"] == 0
        assert query(central_dsn, lena_subject, "nobody@lock.example")[0]["n"] == 1
        metrics = (await client.get("/metrics")).text
        assert 'ygg_portal_sign_ins_total{outcome="throttled"}' in metrics


async def test_many_failures_from_one_address_lock_that_address_for_every_email(central_dsn: str) -> None:
    settings = portal_settings(central_dsn, portal_login_max_failures=100, portal_login_max_failures_per_address=4,
                               portal_login_lockout_seconds=60)
    await make_org_with_owner(settings, "spray-org", "sam@spray.example")
    async with open_portal(settings) as (app, client):
        spray = [await _sign_in(client, f"user{n}@spray.example", "Winter2024!") for n in range(4)]
        assert [s.status_code for s in spray] == [401, 401, 401, 429]
        refused = await _sign_in(client, "sam@spray.example", PASSWORD)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) > 1
