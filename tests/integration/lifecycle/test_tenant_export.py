"""`ygg tenant export` against a real tenant database: every table as JSON and CSV with the right
row counts, a schema description of every table, values that survive the trip, and one
consistent snapshot while others write."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from yggdrasil.ops.export import export_tenant_database, verify_export

from lifecycle_harness import ygg

pytestmark = pytest.mark.integration

# Quotes, commas, line breaks (both kinds), unicode beyond the BMP, surrounding spaces, a tab.
TRICKY_NAMES = [
    'He said "hello", then left',
    "line one\nline two\r\nline three",
    "Ærøskøbing — 東京 ✓ 🚀",
    "  padded  ",
    "semi;colon\tand tab, and 'single' quotes",
]
RAW_BYTES = b"\x00\x01\xfe\xff\"',\n" + "é".encode()


def seed(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT set_config('ygg.actor', 'export-test', false)")
        for index, name in enumerate(TRICKY_NAMES):
            # An empty e-mail on one, NULL on the others: CSV must keep them apart.
            conn.execute("INSERT INTO customers (code, name, email) VALUES (%s, %s, %s)",
                         (f"C-{index}", name, "" if index == 0 else None))
        conn.execute("INSERT INTO items (sku, name, list_price) VALUES ('RETRO-CLOCK', 'Retro clock', 24.9)")
        conn.execute("INSERT INTO b2b_quarantine (subject, raw, reason, detail) VALUES (%s, %s, %s, %s)",
                      ("ygg.events.sales.acme.bravo", RAW_BYTES, "envelope.malformed", 'not JSON: "x"'))


def table_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename").fetchall()]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_json(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_export_writes_every_table_as_json_and_csv_with_schema_and_manifest(tenant_dsn: str, tmp_path: Path):
    seed(tenant_dsn)
    counts = table_counts(tenant_dsn)
    assert counts["audit_change_log"] >= len(TRICKY_NAMES) + 1  # the audit trail has rows to export
    out = tmp_path / "export"

    result = ygg("tenant", "export", "--dsn", tenant_dsn, "--out", str(out))

    assert result.returncode == 0, result.stderr
    assert f"exported {len(counts)} tables" in result.stdout
    for table in counts:  # progress, one line per table
        assert f"  {table}: {counts[table]} rows" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert {entry["table"]: entry["rows"] for entry in manifest["tables"]} == counts
    for table, rows in counts.items():
        assert len(read_json(out / f"{table}.json")) == rows, table
        assert len(read_csv(out / f"{table}.csv")) == rows, table
    for entry in [manifest["schema"], *(t[kind] for t in manifest["tables"] for kind in ("json", "csv"))]:
        data = (out / entry["path"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"])
    assert verify_export(out) == []

    schema = {t["table"]: t for t in json.loads((out / "schema.json").read_text())["tables"]}
    assert set(schema) == set(counts)
    items = schema["items"]
    assert items["primary_key"] == ["id"]
    assert ["sku"] in items["unique"]
    price = next(c for c in items["columns"] if c["name"] == "list_price")
    assert (price["type"], price["nullable"], price["export_encoding"]) == ("numeric(14,4)", False, "decimal string")
    email = next(c for c in schema["customers"]["columns"] if c["name"] == "email")
    assert (email["type"], email["nullable"]) == ("text", True)
    lines_fks = schema["crm_sales_order_lines"]["foreign_keys"]
    assert any(fk["columns"] == ["order_id"] and fk["references_table"] == "crm_sales_orders"
               and fk["references_columns"] == ["id"] for fk in lines_fks)
    assert schema["audit_change_log"]["columns"]

    # Tampering with a file is found.
    (out / "items.csv").write_text("sku\r\nforged\r\n")
    assert verify_export(out) == ["items.csv: differs from the manifest"]


def test_values_round_trip_through_json_and_csv(tenant_dsn: str, tmp_path: Path):
    seed(tenant_dsn)
    result = export_tenant_database(tenant_dsn, tmp_path / "export")
    out = result.folder

    with psycopg.connect(tenant_dsn) as conn:
        customers = conn.execute("SELECT code, name, email, created_at FROM customers ORDER BY id").fetchall()
        (price,) = conn.execute("SELECT list_price::text FROM items").fetchone()
    json_customers = read_json(out / "customers.json")
    csv_customers = read_csv(out / "customers.csv")
    assert [c["name"] for c in json_customers] == TRICKY_NAMES
    assert [c["name"] for c in csv_customers] == TRICKY_NAMES
    assert [c["code"] for c in csv_customers] == [row[0] for row in customers]
    for db_row, json_row in zip(customers, json_customers, strict=True):
        assert json_row["email"] == db_row[2]
        assert datetime.fromisoformat(json_row["created_at"]) == db_row[3]
    # NULL is an empty unquoted field, the empty string a quoted one.
    raw_csv = (out / "customers.csv").read_bytes().decode("utf-8")
    assert [c["email"] for c in json_customers] == ["", None, None, None, None]
    assert '\r\n1,C-0,"He said ""hello"", then left","",' in raw_csv
    assert '\r\n2,C-1,"line one\nline two\r\nline three",,' in raw_csv

    # Decimals as strings, exactly as stored; bytea as base64; in both formats.
    assert read_json(out / "items.json")[0]["list_price"] == price == "24.9000"
    assert read_csv(out / "items.csv")[0]["list_price"] == price
    quarantined_json = read_json(out / "b2b_quarantine.json")[0]
    quarantined_csv = read_csv(out / "b2b_quarantine.csv")[0]
    assert base64.b64decode(quarantined_json["raw"], validate=True) == RAW_BYTES
    assert base64.b64decode(quarantined_csv["raw"], validate=True) == RAW_BYTES
    assert quarantined_json["detail"] == quarantined_csv["detail"] == 'not JSON: "x"'

    # The CSV loads back into PostgreSQL as the same rows.
    with psycopg.connect(tenant_dsn) as conn:
        conn.execute("CREATE TEMP TABLE customers_back (LIKE customers)")
        with conn.cursor().copy("COPY customers_back FROM STDIN WITH (FORMAT csv, HEADER)") as copy:
            copy.write((out / "customers.csv").read_bytes())
        difference = conn.execute(
            "SELECT count(*) FROM ((TABLE customers EXCEPT TABLE customers_back) "
            "UNION ALL (TABLE customers_back EXCEPT TABLE customers)) d").fetchone()[0]
    assert difference == 0


def test_export_is_one_snapshot_while_others_write(tenant_dsn: str, tmp_path: Path):
    seed(tenant_dsn)
    before = table_counts(tenant_dsn)
    written = []

    def write_meanwhile(table: str, rows: int, finished: bool) -> None:
        # After the first table, another session commits rows in tables exported later
        # (and in the audit trail): the export must not see them.
        if not written:
            with psycopg.connect(tenant_dsn) as conn:
                conn.execute("SELECT set_config('ygg.actor', 'meanwhile', false)")
                conn.execute("INSERT INTO warehouses (code, name) VALUES ('LATE', 'Written during the export')")
                conn.execute("UPDATE customers SET name = 'renamed meanwhile' WHERE code = 'C-2'")
            written.append(table)

    result = export_tenant_database(tenant_dsn, tmp_path / "export", progress=write_meanwhile)

    assert written == ["api_tokens"]
    assert table_counts(tenant_dsn)["warehouses"] == before["warehouses"] + 1
    assert {t.table: t.rows for t in result.tables} == before
    assert "LATE" not in (result.folder / "warehouses.csv").read_text()
    assert [c["name"] for c in read_json(result.folder / "customers.json")] == TRICKY_NAMES
    assert "meanwhile" not in (result.folder / "audit_change_log.json").read_text()


def test_export_refuses_a_folder_that_holds_something(tenant_dsn: str, tmp_path: Path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("someone's file")

    result = ygg("tenant", "export", "--dsn", tenant_dsn, "--out", str(out))

    assert result.returncode != 0
    assert "not an empty folder" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left behind
