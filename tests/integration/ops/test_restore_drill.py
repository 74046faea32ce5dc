"""The restore drill for host loss: a tenant database with business data and an audit trail is
backed up with `ygg backup run`, dropped, restored with `ygg restore`, and `ygg audit verify`
passes on the copy, every table identical to the moment of the backup. The drill measures what
the failure contract asks for: the RTO (from the loss to a verified restore) and the RPO (how
old the newest backup was when the database was lost)."""

import time
from datetime import datetime, timezone

import psycopg
import pytest

from backup_drill_helpers import fingerprint, manifest, only_run, run_ygg
from conftest import make_settings, open_api
from yggdrasil import db

pytestmark = pytest.mark.integration


async def make_business_with_an_audit_trail(dsn: str, signing_key_file) -> None:
    """Master data, stock, and a sales order taken through its life, all through the tenant API
    (so the audit rows carry the API users as actors), plus a change made over SQL as a named actor."""
    async with open_api(make_settings(dsn, signing_key_path=signing_key_file)) as api:
        customer = await api.post("/api/v1/customers", role="sales",
                                  json={"code": "BRAVO", "name": "BRAVO-BUYER GmbH, \"Zürich\" & Co"})
        item = await api.post("/api/v1/items", role="warehouse",
                              json={"sku": "RETRO-CLOCK", "name": "Retro alarm clock", "list_price": "24.90"})
        lamp = await api.post("/api/v1/items", role="warehouse",
                              json={"sku": "LAVA-LAMP", "name": "Lava lamp", "list_price": "12.50"})
        depot = await api.post("/api/v1/warehouses", role="warehouse", json={"code": "NORTH", "name": "North depot"})
        assert {r.status_code for r in (customer, item, lamp, depot)} == {201}, [customer.text, item.text, depot.text]
        for product in (item, lamp):
            stocked = await api.post("/api/v1/stock/adjustments", role="warehouse",
                                     json={"item_id": product.json()["id"], "warehouse_id": depot.json()["id"],
                                           "quantity": "10", "note": "opening stock"})
            assert stocked.status_code == 201, stocked.text
        order = await api.post("/api/v1/sales-orders", role="sales", json={
            "customer_id": customer.json()["id"], "warehouse_id": depot.json()["id"], "reference": "PO-BRAVO-1",
            "lines": [{"item_id": item.json()["id"], "quantity": 3}, {"item_id": lamp.json()["id"], "quantity": 2}]})
        assert order.status_code == 201, order.text
        order_id = order.json()["id"]
        for step in ("confirm", "ship"):
            moved = await api.post(f"/api/v1/sales-orders/{order_id}/{step}", role="warehouse" if step == "ship" else "sales")
            assert moved.status_code == 200, moved.text
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT set_config('ygg.actor', 'drill-operator', false)")
        conn.execute("UPDATE customers SET name = name || ' (key account)' WHERE code = 'BRAVO'")


def audit_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM audit_change_log").fetchone()[0]


async def test_restore_drill_a_dropped_tenant_database_comes_back_whole_with_a_verified_audit_trail(
        tenant_dsn, pg_admin_dsn, signing_key_file, tmp_path):
    await make_business_with_an_audit_trail(tenant_dsn, signing_key_file)
    at_backup = fingerprint(tenant_dsn)
    assert at_backup["audit_change_log"][0] >= 12 and at_backup["crm_sales_orders"][0] == 1
    backups = tmp_path / "backups"

    taken = run_ygg("backup", "run", "--database", f"tenant-acme={tenant_dsn}", "--dir", str(backups))
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert "ok tenant-acme" in taken.stdout
    run_dir = only_run(backups)
    backup_record = manifest(run_dir)["databases"][0]
    assert backup_record["status"] == "ok" and backup_record["file"] == "tenant-acme.dump"

    # Work done after the backup is what the RPO loses: it must not come back.
    with psycopg.connect(tenant_dsn) as conn:
        conn.execute("INSERT INTO customers (code, name) VALUES ('LOST', 'Created after the last backup')")

    # Host loss: the database is gone.
    name = psycopg.conninfo.conninfo_to_dict(tenant_dsn)["dbname"]
    lost_at = datetime.now(timezone.utc)
    rpo = lost_at - datetime.fromisoformat(backup_record["started_at"].replace("Z", "+00:00"))
    clock = time.monotonic()
    db.drop_database(pg_admin_dsn, name)
    assert not db.database_exists(pg_admin_dsn, name)

    restored = run_ygg("restore", "--from", run_dir.name, "--database", "tenant-acme", "--dsn", tenant_dsn,
                       "--dir", str(backups))
    verified = run_ygg("audit", "verify", "--dsn", tenant_dsn)
    rto = time.monotonic() - clock

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "(created)" in restored.stdout and "audit trail intact" in restored.stdout
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"audit trail intact: {at_backup['audit_change_log'][0]} rows checked")
    after = fingerprint(tenant_dsn)
    assert {t: c for t, (c, _) in after.items()} == {t: c for t, (c, _) in at_backup.items()}
    assert after == at_backup   # not only the counts: every row's content
    with psycopg.connect(tenant_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM customers WHERE code = 'LOST'").fetchone()[0] == 0

    report = (f"restore drill: RTO {rto:.2f} s (drop to verified restore, {after['audit_change_log'][0]} audit rows, "
              f"{len(after)} tables); RPO {rpo.total_seconds():.2f} s (age of the newest backup at the loss)")
    print(f"\n{report}")
    assert rto > 0 and rpo.total_seconds() > 0


async def test_the_restored_audit_trail_is_guarded_and_its_chain_goes_on(tenant_dsn, pg_admin_dsn, tmp_path):
    with psycopg.connect(tenant_dsn) as conn:
        conn.execute("SELECT set_config('ygg.actor', 'drill-operator', false)")
        for n in range(5):
            conn.execute("INSERT INTO customers (code, name) VALUES (%s, 'GAMMA supplier')", (f"G{n}",))
    taken = run_ygg("backup", "run", "--database", f"tenant-acme={tenant_dsn}", "--dir", str(tmp_path))
    assert taken.returncode == 0, taken.stderr
    copy = f"ygg_restored_{tmp_path.name[-12:].replace('-', '_')}"
    copy_dsn = db.dsn_with_database(tenant_dsn, copy)
    try:
        restored = run_ygg("restore", "--from", "latest", "--database", "tenant-acme", "--dsn", copy_dsn,
                           "--dir", str(tmp_path))
        assert restored.returncode == 0, restored.stdout + restored.stderr
        with psycopg.connect(copy_dsn, autocommit=True) as conn:
            for statement in ("UPDATE audit_change_log SET actor = 'mallory'", "DELETE FROM audit_change_log",
                              "TRUNCATE audit_change_log",
                              "INSERT INTO audit_change_log SELECT seq + 100, table_name, record_id, operation, "
                              "old_values, new_values, actor, request_id, changed_at, prev_hash, row_hash "
                              "FROM audit_change_log WHERE seq = 1",
                              "UPDATE audit_chain_head SET last_seq = 1"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
            # The capture triggers are back too: a new change appends to the restored chain.
            conn.execute("SELECT set_config('ygg.actor', 'after-restore', false)")
            conn.execute("INSERT INTO customers (code, name) VALUES ('NEW', 'After the restore')")
            assert conn.execute("SELECT max(seq), count(*) FROM audit_change_log").fetchone() == (6, 6)
        verified = run_ygg("audit", "verify", "--dsn", copy_dsn)
        assert verified.returncode == 0 and "6 rows checked" in verified.stdout, verified.stdout
    finally:
        db.drop_database(pg_admin_dsn, copy)
