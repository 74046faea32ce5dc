"""`ygg tenant create` as an operator runs it: a migrated database, a signing key, a broker user
that a real nats-server accepts (and confines), a registry entry, a first admin token; a second
run for the same tenant changes nothing, and a step that fails undoes the ones before it."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import nats
import psycopg
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from yggdrasil import db
from yggdrasil.broker.permissions import ADMIN_USER, inbox_prefix
from yggdrasil.broker.streams import ensure_streams
from yggdrasil.broker.subjects import event_subject
from yggdrasil.devstack.nats import EmbeddedNats
from yggdrasil.events.signing import encode_public_key, key_id
from yggdrasil.federation.keys import load_signing_key
from yggdrasil.ops.tenant_lifecycle import (
    OnboardingPlan,
    StepFailed,
    include_directive,
    onboard_tenant,
    tenant_database_name,
)
from yggdrasil.tenant.auth import principal_for_token, token_tenant

from lifecycle_harness import dropping_databases, unique_tenant_id, ygg  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-secret-for-the-test"


def registry(central_dsn: str) -> list[tuple]:
    with psycopg.connect(central_dsn) as conn:
        return conn.execute("SELECT id, name, api_url, public_key, key_id, broker_credentials_ref, status "
                            "FROM tenants ORDER BY id").fetchall()


async def connect_as(url: str, user: str, password: str, errors: list[Exception]) -> nats.NATS:
    async def collect(error: Exception) -> None:
        errors.append(error)

    return await nats.connect(url, user=user, password=password, inbox_prefix=inbox_prefix(user),
                              error_cb=collect, allow_reconnect=False)


async def test_tenant_create_onboards_a_tenant_the_broker_accepts_and_a_second_run_changes_nothing(
    pg_admin_dsn: str, central_dsn: str, tmp_path: Path, dropping_databases: list[str]  # noqa: F811
):
    alpha, bravo = unique_tenant_id("lc-alpha"), unique_tenant_id("lc-bravo")
    dropping_databases += [tenant_database_name(alpha), tenant_database_name(bravo)]
    keys, broker_dir = tmp_path / "keys", tmp_path / "broker"
    users_file = broker_dir / "users.conf"
    options = ["--admin-dsn", pg_admin_dsn, "--central-dsn", central_dsn, "--keys-dir", str(keys),
               "--broker-users-file", str(users_file)]
    env = {"YGG_BROKER_ADMIN_PASSWORD": ADMIN_PASSWORD}

    # The first tenant: the users file does not exist yet, so it is created (admin user included).
    first = ygg("tenant", "create", alpha, "--name", 'Alpha & Söhne "GmbH"', "--api-url", "http://127.0.0.1:18001",
                *options, env=env)
    assert first.returncode == 0, first.stderr
    assert "reload" in first.stdout  # no broker pid given: told how

    broker_config = broker_dir / "nats" / "nats.conf"  # where EmbeddedNats writes its main config
    broker = EmbeddedNats(broker_config.parent, auth_config=include_directive(users_file, broker_config))
    broker.start()
    try:
        admin = await nats.connect(broker.url, user=ADMIN_USER, password=ADMIN_PASSWORD)
        await ensure_streams(admin.jetstream())
        await admin.close()

        # The second tenant, with the running broker told to reload.
        second = ygg("tenant", "create", bravo, "--name", "Bravo Buyer", "--api-url", "https://bravo.example/erp",
                     *options, "--broker-pid", str(broker.pid), "--broker-url", broker.url, env=env)
        assert second.returncode == 0, second.stderr
        assert f"nats-server pid {broker.pid} reloaded; {broker.url} accepts {bravo}" in second.stdout

        password = (keys / f"{bravo}.broker-password").read_text().strip()
        errors: list[Exception] = []
        client = await connect_as(broker.url, bravo, password, errors)
        try:
            js = client.jetstream()
            ack = await js.publish(event_subject("sales", alpha, bravo), b"as itself", headers={"Nats-Msg-Id": "own-1"})
            assert ack.stream == "YGG_SALES"
            with pytest.raises(NatsTimeoutError):
                await js.publish(event_subject("sales", bravo, alpha), b"as alpha", headers={"Nats-Msg-Id": "forged-1"},
                                 timeout=1)
        finally:
            await client.close()
        assert any("permissions violation" in str(error).lower() for error in errors)
        # The first tenant's user survived the rewrite of the users file and the reload.
        alpha_client = await connect_as(broker.url, alpha, (keys / f"{alpha}.broker-password").read_text().strip(), [])
        await alpha_client.close()

        # Running it again: refused, exit 1, nothing touched.
        files_before = {path: path.read_bytes() for path in [users_file, *keys.iterdir()]}
        registry_before = registry(central_dsn)
        again = ygg("tenant", "create", bravo, "--name", "Bravo Buyer", "--api-url", "https://bravo.example/erp",
                    *options, "--broker-pid", str(broker.pid), "--broker-url", broker.url, env=env)
        assert again.returncode == 1
        assert f"tenant {bravo} already exists" in again.stderr and "nothing was changed" in again.stderr
        assert {path: path.read_bytes() for path in [users_file, *keys.iterdir()]} == files_before
        assert registry(central_dsn) == registry_before
    finally:
        broker.stop()

    # The registry entry: the public key of the key file, a reference to the password file.
    key_path = keys / f"{bravo}.key"
    public_key = load_signing_key(key_path).public_key()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((keys / f"{bravo}.broker-password").stat().st_mode) == 0o600
    rows = {row[0]: row for row in registry(central_dsn)}
    assert rows[bravo] == (bravo, "Bravo Buyer", "https://bravo.example/erp", encode_public_key(public_key),
                           key_id(public_key), str(keys / f"{bravo}.broker-password"), "active")
    assert rows[alpha][1] == 'Alpha & Söhne "GmbH"'
    assert password not in json.dumps([list(map(str, row)) for row in rows.values()])

    # The database: every tenant migration applied, and the admin token valid on it.
    tenant_dsn = db.dsn_with_database(pg_admin_dsn, tenant_database_name(bravo))
    with psycopg.connect(tenant_dsn) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in db.load_migrations("yggdrasil.tenant")]
    token = next(line.split()[-1] for line in second.stdout.splitlines() if line.strip().startswith("admin token"))
    assert token_tenant(token) == bravo
    async with await psycopg.AsyncConnection.connect(tenant_dsn) as conn:
        principal = await principal_for_token(conn, token)
    assert principal is not None and principal.role == "admin"

    # The settings for the tenant's server and sidecar, as TOML.
    snippet = tomllib.loads(second.stdout[second.stdout.index("# ygg.toml"):])
    assert snippet["tenant_id"] == bravo and snippet["tenant_dsn"] == tenant_dsn
    assert snippet["signing_key_path"] == str(key_path) and snippet["broker_user"] == bravo
    assert snippet["broker_url"] == broker.url


def test_tenant_create_refuses_a_database_that_holds_something(
    pg_admin_dsn: str, central_dsn: str, tmp_path: Path, dropping_databases: list[str]  # noqa: F811
):
    charlie = unique_tenant_id("lc-charlie")
    database = tenant_database_name(charlie)
    dropping_databases.append(database)
    db.create_database(pg_admin_dsn, database)
    with psycopg.connect(db.dsn_with_database(pg_admin_dsn, database)) as conn:
        conn.execute("CREATE TABLE someone_elses (id int)")

    result = ygg("tenant", "create", charlie, "--name", "Charlie", "--api-url", "http://127.0.0.1:18003",
                 "--admin-dsn", pg_admin_dsn, "--central-dsn", central_dsn, "--keys-dir", str(tmp_path / "keys"))

    assert result.returncode == 1
    assert f"database {database} exists and is not empty" in result.stderr
    assert registry(central_dsn) == []
    assert not (tmp_path / "keys").exists()


def test_a_step_that_fails_undoes_the_steps_before_it(
    pg_admin_dsn: str, central_dsn: str, tmp_path: Path, dropping_databases: list[str]  # noqa: F811
):
    delta = unique_tenant_id("lc-delta")
    dropping_databases.append(tenant_database_name(delta))
    not_a_folder = tmp_path / "not-a-folder"
    not_a_folder.write_text("a file where the broker's folder should be")
    plan = OnboardingPlan(tenant_id=delta, name="Delta", api_url="http://127.0.0.1:18004", admin_dsn=pg_admin_dsn,
                          central_dsn=central_dsn, keys_dir=tmp_path / "keys", broker_url="nats://127.0.0.1:4222",
                          broker_users_file=not_a_folder / "users.conf", broker_admin_password=ADMIN_PASSWORD)

    with pytest.raises(StepFailed) as failure:
        onboard_tenant(plan)

    message = str(failure.value)
    assert "failed while adding the broker user" in message
    assert f"registry entry {delta} deleted" in message and f"database {tenant_database_name(delta)} dropped" in message
    assert "left behind" not in message
    assert registry(central_dsn) == []
    assert not db.database_exists(pg_admin_dsn, tenant_database_name(delta))
    assert list((tmp_path / "keys").iterdir()) == []
