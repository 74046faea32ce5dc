"""Two tenants trading through a real nats-server: ACME-SELLER sells, BRAVO-BUYER buys.

Each tenant gets a fresh, migrated database (a copy of the session's template, as
`tenant_dsn` does) and its own Ed25519 key; each registers the other as a partner. The buyer
has a warehouse and an item, and maps the seller's SKU `RETRO-CLOCK` to it. The broker is one
`nats-server -js` per test, on a free port, with its store in the test's tmp dir; only the tests
that ask for `broker` start one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import psycopg
import pytest

from yggdrasil.broker.streams import ensure_streams
from yggdrasil.devstack.nats import EmbeddedNats
from yggdrasil.events.signing import generate_keypair
from yggdrasil.federation.partners import add_partner, map_partner_item

from .b2b_harness import BUYER, BUYER_SKU, SELLER, SELLER_SKU, Tenant, fresh_tenant_database


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A running nats-server with the declared streams."""
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    try:
        nc = await nats.connect(server.url)
        try:
            await ensure_streams(nc.jetstream())
        finally:
            await nc.close()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def tenants(pg_admin_dsn: str, tenant_template: str) -> AsyncIterator[tuple[Tenant, Tenant]]:
    with fresh_tenant_database(pg_admin_dsn, tenant_template) as seller_dsn, \
            fresh_tenant_database(pg_admin_dsn, tenant_template) as buyer_dsn:
        seller = Tenant(SELLER, seller_dsn, generate_keypair()[0])
        buyer = Tenant(BUYER, buyer_dsn, generate_keypair()[0])
        async with await psycopg.AsyncConnection.connect(seller.dsn) as conn:
            await add_partner(conn, tenant_id=BUYER, public_key=buyer.public_key, name="Bravo Buyer")
        async with await psycopg.AsyncConnection.connect(buyer.dsn) as conn:
            await add_partner(conn, tenant_id=SELLER, public_key=seller.public_key, name="ACME Seller",
                              approval_policy="auto")
            await conn.execute("INSERT INTO warehouses (code, name) VALUES ('MAIN', 'Bravo main warehouse')")
            await conn.execute("INSERT INTO items (sku, name) VALUES (%s, 'Retro clock, as Bravo calls it')",
                               (BUYER_SKU,))
            await map_partner_item(conn, tenant_id=SELLER, partner_sku=SELLER_SKU, item_sku=BUYER_SKU)
        yield seller, buyer


@pytest.fixture
def seller(tenants: tuple[Tenant, Tenant]) -> Tenant:
    return tenants[0]


@pytest.fixture
def buyer(tenants: tuple[Tenant, Tenant]) -> Tenant:
    return tenants[1]


@pytest.fixture
def federation(seller: Tenant, buyer: Tenant, broker: EmbeddedNats) -> tuple[Tenant, Tenant]:
    """Both tenants pointed at the broker."""
    seller.broker_url = buyer.broker_url = broker.url
    return seller, buyer
