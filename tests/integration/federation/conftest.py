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

import pytest

from yggdrasil.devstack.nats import EmbeddedNats

from .b2b_harness import Tenant, broker_with_streams, trading_pair


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A running nats-server with the declared streams."""
    async with broker_with_streams(tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def tenants(pg_admin_dsn: str, tenant_template: str) -> AsyncIterator[tuple[Tenant, Tenant]]:
    async with trading_pair(pg_admin_dsn, tenant_template) as pair:
        yield pair


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
