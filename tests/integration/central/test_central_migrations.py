"""The ygg_central schema: migrations apply, and the registry's constraints hold."""

from __future__ import annotations

import psycopg
import pytest

from yggdrasil import db
from yggdrasil.central import PACKAGE

KEY = "A" * 43 + "="


def test_central_migrations_are_recorded_in_order(central_dsn: str) -> None:
    with psycopg.connect(central_dsn) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in db.load_migrations(PACKAGE)]
    assert db.apply_migrations(central_dsn, PACKAGE) == []


def test_a_partnership_is_stored_once_per_pair(central_dsn: str) -> None:
    with psycopg.connect(central_dsn) as conn:
        for tenant in ("acme", "globex"):
            conn.execute(
                "INSERT INTO tenants (id, name, api_url, public_key, key_id) VALUES (%s, %s, %s, %s, %s)",
                (tenant, tenant.title(), f"http://127.0.0.1/{tenant}", KEY, "0" * 16),
            )
        conn.execute(
            "INSERT INTO mesh_partners (tenant_low, tenant_high, proposed_by) VALUES ('acme', 'globex', 'acme')"
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO mesh_partners (tenant_low, tenant_high, proposed_by) VALUES ('globex', 'acme', 'globex')"
            )
