"""Helpers for the portal tests: settings with cheap password hashing, an in-process portal on
the test's ygg_central database, a real `ygg portal serve` process, and signing in.

A plain module (not a conftest.py): test modules import it by name."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import psycopg
from psycopg.rows import dict_row

from yggdrasil.settings import Settings

from conftest import YGG, ServerProcess, running

# argon2 at its cheapest: the tests check behaviour, not the cost of guessing.
CHEAP_HASHING = {"portal_argon2_time_cost": 1, "portal_argon2_memory_kib": 1024, "portal_argon2_parallelism": 1}
PASSWORD = "correct horse battery"
BASE_URL = "http://portal.test"
# Every text field gets this: quotes, SQL, HTML, an ampersand and a non-ASCII letter.
NASTY = "'; DROP TABLE portal_users; -- <script>alert(1)</script> \"x\" & ü"


def portal_settings(central_dsn: str, **overrides: object) -> Settings:
    return Settings(central_dsn=central_dsn, log_json=False, **{**CHEAP_HASHING, **overrides})


@asynccontextmanager
async def open_portal(settings: Settings) -> AsyncIterator[tuple[object, httpx.AsyncClient]]:
    """The portal app in process (lifespan run) and a client for it, with its own cookie jar."""
    from yggdrasil.portal.api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as client:
        yield app, client


def client_for(app: object) -> httpx.AsyncClient:
    """Another browser on the same portal: its own cookies."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL, follow_redirects=False)


async def make_org_with_owner(settings: Settings, slug: str, email: str, name: str | None = None,
                              role: str = "owner") -> dict:
    """An organization and a user who is its `role`, written through the services as the CLI does."""
    from yggdrasil.portal import services
    from yggdrasil.portal.adapters import connect
    from yggdrasil.portal.domain.accounts import Passwords

    passwords = Passwords(settings.portal_argon2_time_cost, settings.portal_argon2_memory_kib,
                          settings.portal_argon2_parallelism)
    async with await connect(settings.central_dsn) as conn:
        org = await services.create_organization(conn, name or slug.upper(), slug)
        user = await services.create_user(conn, passwords, email, email.split("@")[0], PASSWORD)
        await services.add_member_as_operator(conn, slug, user["id"], role)
    return {"org": org, "user": user}


async def api_sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict:
    """Sign in through the API; the client keeps the cookie. Returns token and csrf_token."""
    response = await client.post("/api/v1/session", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return response.json()


async def web_sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    """Sign in through the login form as a browser does; returns the CSRF token from a page."""
    response = await client.post("/login", data={"email": email, "password": password, "next": "/"})
    assert response.status_code == 303, response.text
    return csrf_from(await client.get("/account"))


def csrf_from(page: httpx.Response) -> str:
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "the page has no CSRF field"
    return match[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def query(dsn: str, sql: str, *params: object) -> list[dict]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


@contextmanager
def portal_process(central_dsn: str, log_dir: Path, port: int | None = None) -> Iterator[ServerProcess]:
    """A real `ygg portal serve` on 127.0.0.1, up when yielded; stopped (by its pid) after."""
    from yggdrasil.devstack.ports import free_port

    port = port or free_port()
    env = {**os.environ, "YGG_CENTRAL_DSN": central_dsn, "YGG_PORTAL_PORT": str(port), "YGG_LOG_JSON": "true",
           **{f"YGG_{key.upper()}": str(value) for key, value in CHEAP_HASHING.items()}}
    server = ServerProcess([YGG, "portal", "serve"], env, port, log_dir / f"portal-{port}-{time.monotonic_ns()}.log",
                           "the portal")
    with running(server):
        yield server
