"""`ygg backup run|list|verify|prune` and `ygg restore` as an operator runs them, against the
real PostgreSQL: what is written, what is refused, what is caught, what is pruned."""

import hashlib
import json
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from backup_drill_helpers import fingerprint, manifest, run_ygg
from yggdrasil import db

pytestmark = pytest.mark.integration


def add_customers(dsn: str, count: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT set_config('ygg.actor', 'backup-test', false)")
        for n in range(count):
            conn.execute("INSERT INTO customers (code, name) VALUES (%s, 'ACME-SELLER customer')", (f"C{n}",))


def backup(dsn: str, folder: Path, name: str = "tenant-acme") -> Path:
    taken = run_ygg("backup", "run", "--database", f"{name}={dsn}", "--dir", str(folder))
    assert taken.returncode == 0, taken.stdout + taken.stderr
    return max(p for p in folder.iterdir() if p.is_dir() and p.name[0].isdigit())


def test_a_run_writes_a_dump_its_checksum_and_a_manifest_saying_what_and_where_from(tenant_dsn, tmp_path):
    add_customers(tenant_dsn, 3)
    run_dir = backup(tenant_dsn, tmp_path)
    record = manifest(run_dir)
    assert record["status"] == "ok" and record["run_id"] == run_dir.name
    datetime.strptime(run_dir.name, "%Y%m%dT%H%M%SZ")
    [entry] = record["databases"]
    dump = run_dir / "tenant-acme.dump"
    assert entry["file"] == dump.name and entry["bytes"] == dump.stat().st_size > 0
    assert dump.read_bytes()[:5] == b"PGDMP"   # pg_dump's custom format
    assert entry["sha256"] == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert (run_dir / "tenant-acme.dump.sha256").read_text() == f"{entry['sha256']}  tenant-acme.dump\n"
    assert entry["server_version"].startswith("16") and entry["pg_dump_version"].startswith("16")
    assert entry["database"] == psycopg.conninfo.conninfo_to_dict(tenant_dsn)["dbname"]
    assert "password" not in entry["source"] and entry["database"] in entry["source"]
    assert entry["duration_seconds"] >= 0 and entry["started_at"] <= entry["finished_at"]
    assert not list(run_dir.glob(".*")), "no temporary file is left behind"

    listed = run_ygg("backup", "list", "--dir", str(tmp_path))
    assert listed.returncode == 0
    assert run_dir.name in listed.stdout and "ok" in listed.stdout and "tenant-acme" in listed.stdout


def test_a_database_that_cannot_be_dumped_fails_alone_with_one_line_and_nothing_is_pruned(central_dsn, tmp_path):
    old = tmp_path / "20000101T030000Z"
    old.mkdir()
    missing = db.dsn_with_database(central_dsn, "ygg_no_such_database")
    result = run_ygg("backup", "run", "--database", f"tenant-gone={missing}", "--database", f"central={central_dsn}",
                     "--dir", str(tmp_path))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert errors[0].startswith("error: tenant-gone: cannot connect to ") and "does not exist" in errors[0]
    run_dir = max(p for p in tmp_path.iterdir() if p != old)
    record = manifest(run_dir)
    assert record["status"] == "partial"
    assert [(d["name"], d["status"]) for d in record["databases"]] == [("tenant-gone", "failed"), ("central", "ok")]
    assert (run_dir / "central.dump").is_file() and not (run_dir / "tenant-gone.dump").exists()
    assert old.is_dir(), "a run with a failure prunes nothing"


def test_verify_names_a_corrupted_dump_and_restore_refuses_it(tenant_dsn, pg_admin_dsn, tmp_path):
    add_customers(tenant_dsn, 3)
    run_dir = backup(tenant_dsn, tmp_path)
    unfinished = tmp_path / "20000101T000000Z"   # no manifest: killed, or still running
    unfinished.mkdir()
    good = run_ygg("backup", "verify", "--dir", str(tmp_path))
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"ok {run_dir.name}/tenant-acme.dump" in good.stdout
    assert f"skipped {unfinished.name}: no manifest.json" in good.stdout
    asked_for = run_ygg("backup", "verify", unfinished.name, "--dir", str(tmp_path))
    assert asked_for.returncode == 1
    assert f"BAD {unfinished.name}/manifest.json: no manifest.json: the run did not finish" in asked_for.stderr

    dump = run_dir / "tenant-acme.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF   # one flipped bit pattern in the middle: bit rot
    dump.write_bytes(bytes(data))
    bad = run_ygg("backup", "verify", run_dir.name, "--dir", str(tmp_path))
    assert bad.returncode == 1
    assert f"BAD {run_dir.name}/tenant-acme.dump: sha256" in bad.stderr and "does not match" in bad.stderr

    target = "ygg_restore_refused_corrupt"
    refused = run_ygg("restore", "--from", run_dir.name, "--database", "tenant-acme",
                      "--dsn", db.dsn_with_database(pg_admin_dsn, target), "--dir", str(tmp_path))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ") and "corrupted" in refused.stderr and "nothing was restored" in refused.stderr
    assert not db.database_exists(pg_admin_dsn, target)

    # A file whose checksum was "fixed" to match but which is not an archive: pg_restore --list says so.
    garbage = b"PGDMP" + bytes(200)
    dump.write_bytes(garbage)
    record = manifest(run_dir)
    record["databases"][0].update(bytes=len(garbage), sha256=hashlib.sha256(garbage).hexdigest())
    (run_dir / "manifest.json").write_text(json.dumps(record))
    unreadable = run_ygg("backup", "verify", "--dir", str(tmp_path))
    assert unreadable.returncode == 1
    assert f"BAD {run_dir.name}/tenant-acme.dump: pg_restore --list fails" in unreadable.stderr

    unknown = run_ygg("backup", "verify", "19990101T000000Z", "--dir", str(tmp_path))
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no backup run")


def test_restore_into_a_database_that_has_tables_is_refused_and_changes_nothing(tenant_dsn, tmp_path):
    add_customers(tenant_dsn, 2)
    backup(tenant_dsn, tmp_path)
    with psycopg.connect(tenant_dsn) as conn:
        conn.execute("INSERT INTO customers (code, name) VALUES ('LIVE', 'Written after the backup')")
    before = fingerprint(tenant_dsn)
    # The classic accident: the live database's DSN where a new one was meant.
    refused = run_ygg("restore", "--from", "latest", "--database", "tenant-acme", "--dsn", tenant_dsn,
                      "--dir", str(tmp_path))
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert re.match(r"error: the target database '\w+' is not empty: it has \d+ tables", line), line
    assert "public.audit_chain_head" in line
    assert fingerprint(tenant_dsn) == before and before["customers"][0] == 3


def test_the_central_database_backs_up_and_restores(central_dsn, pg_admin_dsn, tmp_path):
    with psycopg.connect(central_dsn) as conn:
        for tenant in ("acme", "bravo", "gamma"):
            conn.execute("INSERT INTO tenants (id, name, api_url, public_key, key_id) VALUES (%s, %s, %s, %s, %s)",
                         (tenant, f"{tenant.upper()} AG 'quoted' <b>", f"http://127.0.0.1:80/{tenant}",
                          "A" * 43 + "=", "0123456789abcdef"))
        conn.execute("INSERT INTO mesh_partners (tenant_low, tenant_high, proposed_by, status) "
                     "VALUES ('acme', 'bravo', 'acme', 'active')")
    before = fingerprint(central_dsn)
    assert before["tenants"][0] == 3 and before["mesh_partners"][0] == 1
    backup(central_dsn, tmp_path, name="central")

    name = psycopg.conninfo.conninfo_to_dict(central_dsn)["dbname"]
    db.drop_database(pg_admin_dsn, name)
    restored = run_ygg("restore", "--from", "latest", "--database", "central", "--dsn", central_dsn, "--dir", str(tmp_path))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restored central" in restored.stdout and "audit trail" not in restored.stdout
    assert fingerprint(central_dsn) == before


# -- pruning -------------------------------------------------------------------------------------

def copy_run_as(run_dir: Path, started: datetime, status: str = "ok") -> Path:
    """A copy of a real run, as it would be had it been taken at `started` (with this status)."""
    run_id = started.strftime("%Y%m%dT%H%M%SZ")
    copy = run_dir.parent / run_id
    shutil.copytree(run_dir, copy)
    record = manifest(copy)
    record.update(run_id=run_id, started_at=started.isoformat().replace("+00:00", "Z"), status=status)
    if status != "ok":
        for entry in record["databases"]:
            entry.update(status="failed", file=None, error="connection refused")
    (copy / "manifest.json").write_text(json.dumps(record))
    return copy


def test_a_successful_run_prunes_runs_older_than_the_retention_and_nothing_else(tenant_dsn, tmp_path):
    first = backup(tenant_dsn, tmp_path)
    now = datetime.now(timezone.utc)
    expired = [copy_run_as(first, now - timedelta(days=days)) for days in (20, 15)]
    expired.append(copy_run_as(first, now - timedelta(days=16), status="failed"))
    recent = copy_run_as(first, now - timedelta(days=13))
    foreign = tmp_path / "notes-not-a-run"
    foreign.mkdir()
    (tmp_path / "20000101T000000Z.txt").write_text("a file, not a run")

    second = backup(tenant_dsn, tmp_path)   # retention: the default 14 days
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {first.name, recent.name, second.name, foreign.name, "20000101T000000Z.txt"}
    assert not any(p.exists() for p in expired)


def test_prune_keeps_the_newest_successful_run_however_old(tenant_dsn, tmp_path):
    real = backup(tenant_dsn, tmp_path)
    now = datetime.now(timezone.utc)
    oldest = copy_run_as(real, now - timedelta(days=30))
    newest_good = copy_run_as(real, now - timedelta(days=20))
    newer_failed = copy_run_as(real, now - timedelta(days=18), status="failed")
    shutil.rmtree(real)

    pruned = run_ygg("backup", "prune", "--dir", str(tmp_path), "--retention-days", "14")
    assert pruned.returncode == 0, pruned.stderr
    assert {p.name for p in tmp_path.iterdir()} == {newest_good.name}
    assert f"deleted {oldest.name}" in pruned.stdout and f"deleted {newer_failed.name}" in pruned.stdout
    assert "pruned 2 run(s)" in pruned.stdout
