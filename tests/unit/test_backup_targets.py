"""What `ygg backup run` dumps by default, how `--database NAME=DSN` is read, and that a
password never reaches a command line or a manifest."""

import pytest

from yggdrasil.ops.backup import BackupError, BackupTarget, default_targets, parse_target
from yggdrasil.ops.pgtools import client_dsn, dsn_without_password
from yggdrasil.settings import Settings

pytestmark = pytest.mark.unit


def test_the_defaults_are_the_central_database_and_this_tenants():
    settings = Settings(tenant_id="acme", tenant_dsn="postgresql://t@db1/ygg_acme",
                        central_dsn="postgresql://c@db2/ygg_central", backup_databases={})
    assert default_targets(settings) == [BackupTarget("central", "postgresql://c@db2/ygg_central"),
                                         BackupTarget("tenant-acme", "postgresql://t@db1/ygg_acme")]


def test_configured_databases_replace_the_defaults():
    settings = Settings(backup_databases={"tenant-bravo": "postgresql://b@db3/ygg_bravo"})
    assert default_targets(settings) == [BackupTarget("tenant-bravo", "postgresql://b@db3/ygg_bravo")]


def test_database_option_is_name_equals_dsn_and_the_dsn_may_contain_equals_signs():
    assert parse_target("central=host=db2 dbname=ygg_central") == BackupTarget("central", "host=db2 dbname=ygg_central")


@pytest.mark.parametrize("option", ["central", "=postgresql://x/y", "central=", "../etc=postgresql://x/y",
                                    "a b=postgresql://x/y", ".hidden=postgresql://x/y"])
def test_a_malformed_database_option_or_a_name_unsafe_as_a_file_name_is_refused(option):
    with pytest.raises(BackupError):
        parse_target(option)


@pytest.mark.parametrize("dsn", ["postgresql://ops:s3cr%21t@db1:5433/ygg_acme",
                                 "host=db1 port=5433 user=ops password=s3cr!t dbname=ygg_acme"])
def test_the_password_travels_in_the_environment_never_in_the_dsn_shown_or_passed(dsn):
    client = client_dsn(dsn)
    assert "s3cr" not in client.conninfo and "s3cr" not in dsn_without_password(dsn)
    assert client.env["PGPASSWORD"] == "s3cr!t"
    assert "dbname=ygg_acme" in client.conninfo and "port=5433" in client.conninfo and "user=ops" in client.conninfo
