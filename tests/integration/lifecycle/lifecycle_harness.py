"""Helpers and fixtures for the tenant lifecycle tests (imported by the test modules: this
folder has no conftest.py). The two trading tenants and their sidecar processes come from the
federation tests' harness, tests/integration/federation/b2b_harness.py."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

# pytest imports the federation tests as the package `federation` with tests/integration on
# sys.path; do the same, so that this is the very module they use.
_INTEGRATION = str(Path(__file__).resolve().parent.parent)
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)

from federation.b2b_harness import (  # noqa: E402
    BUYER,
    SELLER,
    SidecarProcess,
    Tenant,
    broker_with_streams,
    deliver,
    eventually,
    outbox_message,
    purchase_orders,
    sell,
    trading_pair,
)

from yggdrasil import db  # noqa: E402
from yggdrasil.devstack.nats import EmbeddedNats  # noqa: E402

__all__ = ["BUYER", "SELLER", "SidecarProcess", "Tenant", "deliver", "eventually", "outbox_message",
           "purchase_orders", "sell",
           "ygg", "unique_tenant_id", "dropping_databases", "open_broker", "trading_tenants", "register"]

YGG = str(Path(sys.executable).parent / "ygg")


def ygg(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `ygg` command line; no ygg.toml of the working directory leaks in."""
    full_env = {**os.environ, "YGG_CONFIG": "/nonexistent/ygg.toml", "YGG_LOG_JSON": "false", **(env or {})}
    return subprocess.run([YGG, *args], env=full_env, capture_output=True, text=True, timeout=timeout)


def unique_tenant_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def dropping_databases(pg_admin_dsn: str) -> Iterator[list[str]]:
    """Names appended here are dropped after the test (databases `ygg tenant create` made)."""
    names: list[str] = []
    yield names
    for name in names:
        db.drop_database(pg_admin_dsn, name)


@pytest.fixture
async def open_broker(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server without authentication, with the declared streams."""
    async with broker_with_streams(tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def trading_tenants(pg_admin_dsn: str, tenant_template: str) -> AsyncIterator[tuple[Tenant, Tenant]]:
    """ACME-SELLER and BRAVO-BUYER, each the other's partner; the buyer applies the seller's
    orders without approval and maps the seller's SKU to its own item."""
    async with trading_pair(pg_admin_dsn, tenant_template) as pair:
        yield pair


def register(central_dsn: str, tenant: Tenant, api_url: str = "http://127.0.0.1:9") -> None:
    """The tenant's entry in ygg_central, as `ygg tenant create` would have made it."""
    from yggdrasil.events.signing import key_id

    with psycopg.connect(central_dsn) as conn:
        conn.execute(
            "INSERT INTO tenants (id, name, api_url, public_key, key_id) VALUES (%s, %s, %s, %s, %s)",
            (tenant.id, tenant.id.upper(), api_url, tenant.public_key, key_id(tenant.key.public_key())))
