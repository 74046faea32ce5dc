"""`ygg portal org create` and `ygg portal user create`: bootstrap an organization and its owner;
mistakes are one readable line and a non-zero exit, and leave nothing half made."""

from __future__ import annotations

import os
import subprocess

import pytest
from argon2 import PasswordHasher
from portal_harness import YGG, query

pytestmark = pytest.mark.integration

CHEAP = {"YGG_PORTAL_ARGON2_TIME_COST": "1", "YGG_PORTAL_ARGON2_MEMORY_KIB": "1024",
         "YGG_PORTAL_ARGON2_PARALLELISM": "1"}


def ygg(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([YGG, "portal", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **CHEAP, **env})


def test_bootstrapping_an_owner_and_the_errors_on_the_way(central_dsn: str) -> None:
    made = ygg("org", "create", "--name", "BOOT-ORG", "--dsn", central_dsn)
    assert made.returncode == 0 and made.stdout == "boot-org\n"

    no_org = ygg("user", "create", "--email", "zed@boot.example", "--org", "nope", "--dsn", central_dsn)
    assert no_org.returncode == 1
    assert no_org.stderr == "error: no organization with the slug 'nope'\n"
    assert query(central_dsn, "SELECT count(*) AS n FROM portal_users")[0]["n"] == 0  # nothing half made

    owner = ygg("user", "create", "--email", "Zed@Boot.example", "--org", "boot-org", "--dsn", central_dsn,
                YGG_PORTAL_PASSWORD="from the environment")
    assert owner.returncode == 0, owner.stderr
    assert "owner of boot-org" in owner.stdout and "password:" not in owner.stdout
    row = query(central_dsn, "SELECT u.email, u.password_hash, m.role FROM portal_users u "
                             "JOIN portal_memberships m ON m.user_id = u.id")[0]
    assert row["email"] == "Zed@Boot.example" and row["role"] == "owner"
    assert PasswordHasher().verify(row["password_hash"], "from the environment")

    again = ygg("user", "create", "--email", "zed@BOOT.example", "--dsn", central_dsn)
    assert again.returncode == 1 and "exists already" in again.stderr

    unreachable = ygg("org", "create", "--name", "X", "--dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert unreachable.returncode == 2 and unreachable.stderr.startswith("error: cannot reach the central database")
