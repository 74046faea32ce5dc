"""Failure contract: tenant database down → cached reads still answer (marked stale), writes
fail at once with 503, and full service returns without restarting the server."""

import time

import pytest

from yggdrasil import db
from yggdrasil.devstack.postgres import EmbeddedPostgres

from conftest import make_settings, open_api

pytestmark = pytest.mark.integration


@pytest.fixture
def own_postgres(tmp_path):
    """A PostgreSQL of this test's own, so stopping it disturbs no other test."""
    server = EmbeddedPostgres(tmp_path / "pg")
    server.start()
    db.create_database(server.dsn(), "outage")
    db.apply_migrations(server.dsn("outage"), "yggdrasil.tenant")
    try:
        yield server
    finally:
        server.stop()


async def wait_for(predicate, timeout=15.0):
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_stopped_database_serves_stale_reads_refuses_writes_fast_and_recovers(own_postgres):
    settings = make_settings(own_postgres.dsn("outage"), cache_ttl_seconds=60)
    async with open_api(settings) as api:
        # The change listener empties the cache when it connects (it may have missed changes):
        # on a busy machine that can come after the reads below, leaving nothing stale to serve.
        async def listening():
            return (await api.http.get("/health")).json()["change_listener"] == "connected"

        assert await wait_for(listening)
        created = await api.post("/api/v1/customers", json={"code": "ACME-1", "name": "ACME-SELLER"})
        assert created.status_code == 201
        url = f"/api/v1/customers/{created.json()['id']}"
        assert (await api.get(url)).headers["x-cache"] == "miss"
        assert (await api.get(url)).headers["x-cache"] == "hit"
        listing = await api.get("/api/v1/customers")
        assert listing.status_code == 200

        own_postgres.stop("fast")

        started = time.monotonic()
        refused = await api.post("/api/v1/customers", json={"code": "LOST", "name": "never written"})
        elapsed = time.monotonic() - started
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "database.unavailable"
        assert "unreachable" in refused.json()["error"]["message"]
        assert elapsed < 1.0, f"write took {elapsed:.2f}s to be refused"

        async def marked_down():
            return (await api.http.get("/health")).json()["database"]["state"] == "down"

        assert await wait_for(marked_down)
        health = (await api.http.get("/health")).json()
        assert health["status"] == "degraded"

        stale = await api.get(url)
        assert stale.status_code == 200
        assert stale.json()["name"] == "ACME-SELLER"
        assert stale.headers["x-cache"] == "stale"
        assert int(stale.headers["age"]) >= 0
        assert "stale" in stale.headers["warning"].lower()
        assert (await api.get("/api/v1/customers")).headers["x-cache"] == "stale"

        # Nothing cached for this one: no stale copy to give, so 503 with a message.
        uncached = await api.get("/api/v1/suppliers")
        assert uncached.status_code == 503

        started = time.monotonic()
        second_write = await api.post("/api/v1/customers", json={"code": "LOST2", "name": "never written"})
        assert second_write.status_code == 503
        assert time.monotonic() - started < 0.2, "once the database is known down, writes fail at once"

        own_postgres.start()

        async def writes_work():
            r = await api.post("/api/v1/customers", json={"code": f"BACK-{time.monotonic_ns()}", "name": "after recovery"})
            return r.status_code == 201

        assert await wait_for(writes_work)
        assert (await api.http.get("/health")).json()["status"] == "ok"
        fresh = await api.get("/api/v1/customers")
        assert fresh.headers["x-cache"] in ("miss", "hit")
        codes = {c["code"] for c in fresh.json()["items"]}
        assert "ACME-1" in codes and "LOST" not in codes and "LOST2" not in codes
