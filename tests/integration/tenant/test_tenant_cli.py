"""`ygg tenant migrate` and `ygg tenant token create` as an operator runs them."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_settings, open_api

pytestmark = pytest.mark.integration

YGG = str(Path(sys.executable).parent / "ygg")


def ygg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([YGG, *args], capture_output=True, text=True, timeout=60)


async def test_a_created_token_authenticates_with_its_role(tenant_dsn):
    created = ygg("tenant", "token", "create", "--role", "warehouse", "--user", "dock-7", "--dsn", tenant_dsn)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("ygg_") and len(token) > 40
    async with open_api(make_settings(tenant_dsn)) as api:
        headers = {"Authorization": f"Bearer {token}"}
        assert (await api.http.get("/api/v1/items", headers=headers)).status_code == 200
        refused = await api.http.post("/api/v1/customers", headers=headers, json={"code": "X", "name": "X"})
        assert refused.status_code == 403


def test_bad_role_and_unreachable_database_exit_2_with_one_readable_line(tenant_dsn):
    bad_role = ygg("tenant", "token", "create", "--role", "janitor", "--dsn", tenant_dsn)
    assert bad_role.returncode == 2
    assert bad_role.stderr.strip().splitlines() == [
        "error: unknown role 'janitor'; roles are: admin, sales, purchasing, warehouse, auditor"]
    unreachable = ygg("tenant", "token", "create", "--role", "admin",
                      "--dsn", "postgresql://postgres@127.0.0.1:1/nowhere")
    assert unreachable.returncode == 2
    assert len(unreachable.stderr.strip().splitlines()) == 1
    assert unreachable.stderr.startswith("error: cannot reach the tenant database")


def test_migrate_reports_an_up_to_date_schema(tenant_dsn):
    result = ygg("tenant", "migrate", "--dsn", tenant_dsn)
    assert result.returncode == 0 and result.stdout.strip() == "schema is up to date"
