"""The audit trail: one row per change on every business table, written in the change's own
transaction; an append-only log; a hash chain that names any row edited or removed around the
triggers, through the library, the API and `ygg audit verify`."""

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from yggdrasil.ops.audit import verify_audit_chain

pytestmark = pytest.mark.integration

# Tables that deliberately have no audit capture, with the reason. Any other table in the
# public schema must have the `audit_capture_<table>_insert|update|delete` triggers.
NOT_AUDITED = {
    "schema_migrations": "the migration runner's own bookkeeping",
    "audit_change_log": "the log itself",
    "audit_chain_head": "the log's head pointer, moved by every append",
    "roles": "fixed reference data seeded by 0001_core.sql, keyed by name (no id); no code path writes it",
    # 0004_b2b_federation.sql: transport logs written once or more per event, keyed without an id.
    "b2b_events": "the outbox: a log of the transport",
    "b2b_inbox": "the inbox: a log of the transport",
    "b2b_held_events": "events held for their predecessors: transport state",
    "b2b_order_sequences": "outbound sequence counters: transport state",
    "b2b_inbound_sequences": "inbound sequence counters: transport state",
    "b2b_registry_sync": "0010: the registry sync's bookkeeping (ETag, last sync), rewritten on every poll",
}

# One valid INSERT per audited table. `%(n)s` makes unique values unique; the other named
# parameters are ids of parent rows (keyed by table name). A new audited table needs a line here.
SAMPLE_INSERTS = {
    "users": "INSERT INTO users (username, role) VALUES ('probe-' || %(n)s, 'sales')",
    "api_tokens": "INSERT INTO api_tokens (user_id, token_hash) VALUES (%(users)s, sha256(convert_to(%(n)s, 'UTF8')))",
    "customers": "INSERT INTO customers (code, name) VALUES ('C-' || %(n)s, 'ACME probe customer')",
    "suppliers": "INSERT INTO suppliers (code, name) VALUES ('S-' || %(n)s, 'GAMMA probe supplier')",
    "items": "INSERT INTO items (sku, name) VALUES ('RETRO-CLOCK-' || %(n)s, 'Retro clock')",
    "warehouses": "INSERT INTO warehouses (code, name) VALUES ('W-' || %(n)s, 'North depot')",
    "stock_levels": "INSERT INTO stock_levels (item_id, warehouse_id, quantity) VALUES (%(items)s, %(warehouses)s, 5)",
    "stock_moves": "INSERT INTO stock_moves (item_id, warehouse_id, quantity, reason) "
                   "VALUES (%(items)s, %(warehouses)s, 5, 'adjustment')",
    "crm_sales_orders": "INSERT INTO crm_sales_orders (customer_id, warehouse_id) VALUES (%(customers)s, %(warehouses)s)",
    "crm_sales_order_lines": "INSERT INTO crm_sales_order_lines (order_id, line_no, item_id, quantity, unit_price) "
                             "VALUES (%(crm_sales_orders)s, 1, %(items)s, 2, 9.5)",
    "purchasing_orders": "INSERT INTO purchasing_orders (supplier_id, warehouse_id) VALUES (%(suppliers)s, %(warehouses)s)",
    "purchasing_order_lines": "INSERT INTO purchasing_order_lines (order_id, line_no, item_id, quantity, unit_price) "
                              "VALUES (%(purchasing_orders)s, 1, %(items)s, 2, 9.5)",
    "b2b_partners": "INSERT INTO b2b_partners (tenant_id, public_key, key_id) "
                    "VALUES ('bravo-' || %(n)s, repeat('A', 43) || '=', '0123456789abcdef')",
    "b2b_partner_items": "INSERT INTO b2b_partner_items (partner_tenant_id, partner_sku, item_id) "
                         "SELECT tenant_id, 'BRAVO-' || %(n)s, %(items)s FROM b2b_partners WHERE id = %(b2b_partners)s",
    "b2b_quarantine": "INSERT INTO b2b_quarantine (subject, raw, reason) "
                      "VALUES ('ygg.events.sales.acme.' || %(n)s, '\\x00', 'signature.invalid')",
    "b2b_approvals": "INSERT INTO b2b_approvals (source_tenant, event_id, event_type, aggregate_type, aggregate_id, "
                     "sequence, payload, waiting_reason) VALUES ('bravo', gen_random_uuid(), 'sales.order.created', "
                     "'sales_order', %(n)s, 1, '{}', 'partner.approval_required')",
    "b2b_divergences": "INSERT INTO b2b_divergences (source_tenant, aggregate_type, aggregate_id, event_id, event_type, "
                       "sequence, order_table, order_id, expected_hash, actual_hash) VALUES ('bravo', 'sales_order', "
                       "%(n)s, gen_random_uuid(), 'sales.order.confirmed', 2, 'purchasing_orders', "
                       "%(purchasing_orders)s, repeat('a', 64), repeat('b', 64))",
}
PARENTS = ("users", "customers", "suppliers", "items", "warehouses", "crm_sales_orders", "purchasing_orders",
           "b2b_partners")

AUDIT_ROWS_AFTER = """
    SELECT table_name, record_id, operation, actor, request_id, old_values IS NOT NULL, new_values IS NOT NULL
      FROM audit_change_log WHERE seq > %s ORDER BY seq
"""


def audited_tables(conn) -> set[str]:
    """Tables with all three capture triggers (one per operation, see audit_attach)."""
    return {name for (name,) in conn.execute(
        r"""
        SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE t.tgname IN ('audit_capture_' || c.relname || '_insert', 'audit_capture_' || c.relname || '_update',
                            'audit_capture_' || c.relname || '_delete')
           AND t.tgenabled <> 'D' AND NOT t.tgisinternal AND c.relnamespace = 'public'::regnamespace
         GROUP BY c.relname HAVING count(*) = 3
        """).fetchall()}


def head_seq(conn) -> int:
    """The newest seq this transaction sees (the chain head itself moves only at commit)."""
    return conn.execute("SELECT coalesce(max(seq), 0) FROM audit_change_log").fetchone()[0]


def act_as(conn, actor: str, request_id: str = "") -> None:
    conn.execute("SELECT set_config('ygg.actor', %s, true), set_config('ygg.request_id', %s, true)",
                 (actor, request_id))


def first_updatable_column(conn, table: str) -> str:
    return conn.execute(
        """
        SELECT column_name FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = %s AND is_identity = 'NO' AND is_generated = 'NEVER'
         ORDER BY ordinal_position LIMIT 1
        """, (table,)).fetchone()[0]


def add_customers(dsn: str, count: int, actor: str = "seed") -> list[int]:
    """Write `count` customers, one transaction each; return the seq of each one's audit row."""
    seqs = []
    with psycopg.connect(dsn) as conn:
        for n in range(count):
            with conn.transaction():
                act_as(conn, actor)
                conn.execute("INSERT INTO customers (code, name) VALUES (%s, %s)", (f"CHAIN-{n}", f"Chain customer {n}"))
                seqs.append(head_seq(conn))
    return seqs


def around_the_triggers(dsn: str, statement: str, params: tuple = ()) -> None:
    """What a superuser can do: switch triggers (and so the log's refusals) off for a session."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(statement, params)


def verify(dsn: str):
    with psycopg.connect(dsn) as conn:
        return verify_audit_chain(conn, batch_size=2)  # small batches: the walk crosses batch edges


# -- capture -----------------------------------------------------------------------------------

def test_every_table_but_the_logs_own_has_audit_capture(tenant_dsn):
    with psycopg.connect(tenant_dsn) as conn:
        tables = {name for (name,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}
        missing = tables - audited_tables(conn) - set(NOT_AUDITED)
    assert not missing, f"tables without an audit_capture trigger (call audit_attach in their migration): {missing}"


def test_every_insert_update_and_delete_on_every_audited_table_yields_one_audit_row_with_the_actor(tenant_dsn):
    with psycopg.connect(tenant_dsn) as conn:
        tables = sorted(audited_tables(conn))
        assert len(tables) >= 12
        assert not set(tables) - set(SAMPLE_INSERTS), "add a sample INSERT for each new audited table"

        parents: dict[str, object] = {"n": "parent"}
        with conn.transaction():
            act_as(conn, "setup")
            for table in PARENTS:
                parents[table] = conn.execute(SAMPLE_INSERTS[table] + " RETURNING id", parents).fetchone()[0]

        for table in tables:
            column = first_updatable_column(conn, table)
            steps = (
                ("INSERT", SAMPLE_INSERTS[table] + " RETURNING id", {**parents, "n": "probe"}),
                ("UPDATE", f"UPDATE {table} SET {column} = {column} WHERE id = %(id)s RETURNING id", None),
                ("DELETE", f"DELETE FROM {table} WHERE id = %(id)s RETURNING id", None),
            )
            row_id = None
            for operation, statement, params in steps:
                actor = f"{operation.lower()}-probe"
                with conn.transaction():
                    act_as(conn, actor, request_id=f"req-{table}")
                    before = head_seq(conn)
                    row_id = conn.execute(statement, params or {"id": row_id}).fetchone()[0]
                    written = conn.execute(AUDIT_ROWS_AFTER, (before,)).fetchall()
                assert written == [(table, row_id, operation, actor, f"req-{table}",
                                    operation != "INSERT", operation != "DELETE")], (table, operation)


def test_a_change_without_an_actor_is_recorded_as_system(tenant_dsn):
    with psycopg.connect(tenant_dsn) as conn:
        conn.execute("INSERT INTO warehouses (code, name) VALUES ('NORTH', 'North depot')")
        conn.commit()
        assert conn.execute("SELECT actor, request_id FROM audit_change_log").fetchall() == [("system", None)]


def test_a_rolled_back_change_leaves_no_audit_row(tenant_dsn):
    with psycopg.connect(tenant_dsn) as conn:
        before = conn.execute("SELECT count(*) FROM audit_change_log").fetchone()[0]
        with pytest.raises(psycopg.errors.CheckViolation):
            with conn.transaction():
                act_as(conn, "rollback-probe")
                conn.execute("INSERT INTO items (sku, name) VALUES ('LAVA-LAMP', 'Lava lamp')")
                conn.execute("INSERT INTO items (sku, name, cost) VALUES ('BROKEN', 'Broken', -1)")
        assert conn.execute("SELECT count(*) FROM audit_change_log").fetchone()[0] == before
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 0


# -- immutability ------------------------------------------------------------------------------

@pytest.mark.parametrize("statement", [
    "UPDATE audit_change_log SET actor = 'mallory'",
    "DELETE FROM audit_change_log",
    "TRUNCATE audit_change_log",
])
def test_the_audit_log_refuses_update_delete_and_truncate(tenant_dsn, statement):
    add_customers(tenant_dsn, 1)
    with psycopg.connect(tenant_dsn) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
        conn.rollback()
        assert conn.execute("SELECT count(*), min(actor) FROM audit_change_log").fetchone() == (1, "seed")
    assert verify(tenant_dsn).ok


# -- verification ------------------------------------------------------------------------------

def test_an_intact_chain_verifies_across_batches(tenant_dsn):
    seqs = add_customers(tenant_dsn, 5)
    result = verify(tenant_dsn)
    assert result.ok and result.problems == []
    assert result.rows_checked == 5 and result.head_seq == seqs[-1]


def test_an_empty_log_verifies(tenant_dsn):
    result = verify(tenant_dsn)
    assert result.ok and result.rows_checked == 0


def test_a_row_edited_around_the_triggers_is_named_by_verify(tenant_dsn):
    seqs = add_customers(tenant_dsn, 5)
    around_the_triggers(tenant_dsn, "UPDATE audit_change_log SET actor = 'mallory' WHERE seq = %s", (seqs[2],))
    result = verify(tenant_dsn)
    assert not result.ok
    assert [(p.seq, p.kind) for p in result.problems] == [(seqs[2], "edited")]
    assert f"row {seqs[2]} (customers " in result.problems[0].problem


def test_an_edit_with_a_recomputed_hash_breaks_the_chain_at_the_next_row(tenant_dsn):
    seqs = add_customers(tenant_dsn, 5)
    around_the_triggers(
        tenant_dsn,
        """
        UPDATE audit_change_log
           SET new_values = new_values || '{"name": "forged"}',
               row_hash = audit_row_digest(prev_hash, seq, table_name, record_id, operation, old_values,
                                           new_values || '{"name": "forged"}', actor, request_id, changed_at)
         WHERE seq = %s
        """,
        (seqs[1],),
    )
    result = verify(tenant_dsn)
    assert [(p.seq, p.kind) for p in result.problems] == [(seqs[2], "chain_broken")]
    assert f"hash of row {seqs[1]}" in result.problems[0].problem


def test_a_row_removed_around_the_triggers_is_named_by_verify(tenant_dsn):
    seqs = add_customers(tenant_dsn, 5)
    around_the_triggers(tenant_dsn, "DELETE FROM audit_change_log WHERE seq = %s", (seqs[3],))
    result = verify(tenant_dsn)
    assert [(p.seq, p.kind) for p in result.problems] == [(seqs[3], "removed")]
    assert result.problems[0].problem == f"row {seqs[3]} is missing: it was removed from the log"
    assert result.rows_checked == 4


def test_the_last_rows_removed_are_found_through_the_chain_head(tenant_dsn):
    seqs = add_customers(tenant_dsn, 5)
    around_the_triggers(tenant_dsn, "DELETE FROM audit_change_log WHERE seq >= %s", (seqs[3],))
    result = verify(tenant_dsn)
    assert [(p.seq, p.kind) for p in result.problems] == [(seqs[3], "removed")]
    assert f"rows {seqs[3]} to {seqs[4]} are missing" in result.problems[0].problem


FORGE_ROW = """
    INSERT INTO audit_change_log (seq, table_name, record_id, operation, new_values, actor, changed_at,
                                  prev_hash, row_hash)
    SELECT seq + 1, table_name, record_id, 'DELETE', NULL, 'mallory', changed_at, row_hash,
           audit_row_digest(row_hash, seq + 1, table_name, record_id, 'DELETE', NULL, NULL,
                            'mallory', NULL, changed_at)
      FROM audit_change_log WHERE seq = %s
"""


def test_only_the_audit_trigger_may_append_rows_or_move_the_head(tenant_dsn):
    seqs = add_customers(tenant_dsn, 1)
    for statement, params in ((FORGE_ROW, (seqs[-1],)),
                              ("UPDATE audit_chain_head SET last_seq = last_seq + 1", ()),
                              ("DELETE FROM audit_chain_head", ())):
        with psycopg.connect(tenant_dsn) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="refused"):
                conn.execute(statement, params)
    assert verify(tenant_dsn).ok


def test_a_forged_row_appended_around_the_triggers_without_moving_the_head_is_found(tenant_dsn):
    seqs = add_customers(tenant_dsn, 2)
    around_the_triggers(tenant_dsn, FORGE_ROW, (seqs[-1],))
    result = verify(tenant_dsn)
    assert [(p.seq, p.kind) for p in result.problems] == [(seqs[-1] + 1, "head")]


def test_verify_reports_every_problem_not_just_the_first(tenant_dsn):
    seqs = add_customers(tenant_dsn, 6)
    around_the_triggers(tenant_dsn, "UPDATE audit_change_log SET actor = 'mallory' WHERE seq IN (%s, %s)",
                        (seqs[0], seqs[4]))
    around_the_triggers(tenant_dsn, "DELETE FROM audit_change_log WHERE seq = %s", (seqs[2],))
    result = verify(tenant_dsn)
    assert [(p.seq, p.kind) for p in result.problems] == [
        (seqs[0], "edited"), (seqs[2], "removed"), (seqs[4], "edited")]


# -- through the API ---------------------------------------------------------------------------

async def test_a_customer_created_by_the_sales_user_is_in_the_trail_under_its_name(api):
    created = await api.post("/api/v1/customers", role="sales", json={"code": "ACME", "name": "ACME Retail"})
    assert created.status_code == 201
    customer_id = created.json()["id"]
    renamed = await api.patch(f"/api/v1/customers/{customer_id}", role="admin", json={"version": 1, "name": "ACME Ltd"})
    assert renamed.status_code == 200

    trail = await api.get(f"/api/v1/audit?table=customers&record_id={customer_id}", role="auditor")
    assert trail.status_code == 200, trail.text
    rows = trail.json()["items"]
    assert [(r["operation"], r["actor"]) for r in rows] == [("INSERT", "sales-user"), ("UPDATE", "admin-user")]
    assert rows[0]["new_values"]["name"] == "ACME Retail" and rows[0]["old_values"] is None
    assert rows[1]["old_values"]["name"] == "ACME Retail" and rows[1]["new_values"]["name"] == "ACME Ltd"
    assert rows[0]["request_id"] and len(rows[0]["row_hash"]) == 64

    by_actor = (await api.get("/api/v1/audit?actor=sales-user")).json()["items"]
    assert [(r["table_name"], r["record_id"]) for r in by_actor] == [("customers", customer_id)]
    since = rows[0]["changed_at"]
    in_window = (await api.get("/api/v1/audit", params={"table": "customers", "since": since})).json()["items"]
    assert len(in_window) == 2
    assert (await api.get("/api/v1/audit", params={"table": "customers", "until": since})).json()["items"] == []


async def test_the_audit_list_pages_by_seq(api):
    for n in range(3):
        await api.post("/api/v1/warehouses", role="warehouse", json={"code": f"W{n}", "name": f"Depot {n}"})
    first = (await api.get("/api/v1/audit?table=warehouses&limit=2")).json()
    second = (await api.get(f"/api/v1/audit?table=warehouses&limit=2&after={first['next_after']}")).json()
    codes = [r["new_values"]["code"] for r in first["items"] + second["items"]]
    assert codes == ["W0", "W1", "W2"] and second["next_after"] is None


async def test_audit_endpoints_are_for_admins_and_auditors_only(api):
    for url in ("/api/v1/audit", "/api/v1/audit/verify"):
        for role in ("sales", "purchasing", "warehouse"):
            r = await api.get(url, role=role)
            assert r.status_code == 403
            assert "read the audit trail" in r.json()["error"]["message"]
        assert (await api.get(url, role="auditor")).status_code == 200
        assert (await api.get(url, role="admin")).status_code == 200
        assert (await api.http.get(url)).status_code == 401


async def test_audit_list_refuses_malformed_filters(api):
    for query in ("table=customers;drop", "record_id=0", "record_id=99999999999999999999", "since=yesterday",
                  "after=-1", "limit=501", "actor=a%00b"):
        r = await api.get(f"/api/v1/audit?{query}")
        assert r.status_code == 422, query


async def test_verify_over_the_api_says_ok_then_names_the_tampered_row(api):
    created = await api.post("/api/v1/customers", role="sales", json={"code": "BRAVO", "name": "BRAVO-BUYER"})
    assert created.status_code == 201
    intact = (await api.get("/api/v1/audit/verify", role="auditor")).json()
    assert intact["ok"] is True and intact["problems"] == [] and intact["rows_checked"] >= 1

    seq = (await api.get("/api/v1/audit?table=customers", role="auditor")).json()["items"][0]["seq"]
    around_the_triggers(api.dsn, "UPDATE audit_change_log SET actor = 'mallory' WHERE seq = %s", (seq,))
    tampered = (await api.get("/api/v1/audit/verify", role="auditor")).json()
    assert tampered["ok"] is False
    assert [(p["seq"], p["kind"]) for p in tampered["problems"]] == [(seq, "edited")]


# -- the command line --------------------------------------------------------------------------

def run_ygg(*args: str) -> subprocess.CompletedProcess:
    ygg = Path(sys.executable).parent / "ygg"
    return subprocess.run([str(ygg), *args], capture_output=True, text=True, timeout=60)


def test_ygg_audit_verify_exits_0_when_intact_and_1_after_tampering(tenant_dsn):
    seqs = add_customers(tenant_dsn, 3)
    intact = run_ygg("audit", "verify", "--dsn", tenant_dsn)
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.strip() == f"audit trail intact: 3 rows checked, chain head at seq {seqs[-1]}"

    around_the_triggers(tenant_dsn, "DELETE FROM audit_change_log WHERE seq = %s", (seqs[1],))
    tampered = run_ygg("audit", "verify", "--dsn", tenant_dsn)
    assert tampered.returncode == 1, tampered.stderr
    lines = tampered.stdout.strip().splitlines()
    assert lines[0].startswith("audit trail TAMPERED: 1 problem(s) found in 2 rows checked")
    assert lines[1:] == [f"  seq {seqs[1]} [removed]: row {seqs[1]} is missing: it was removed from the log"]


def test_ygg_audit_verify_exits_2_with_one_line_when_the_database_is_unreachable():
    result = run_ygg("audit", "verify", "--dsn", "postgresql://postgres@127.0.0.1:1/ygg_nowhere?connect_timeout=2")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: cannot verify the audit trail:")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_bulk_transaction_with_a_rolled_back_savepoint_keeps_the_chain_whole(tenant_dsn):
    with psycopg.connect(tenant_dsn) as conn:
        with conn.transaction():
            act_as(conn, "bulk-import")
            for n in range(300):
                conn.execute("INSERT INTO customers (code, name) VALUES (%s, 'Bulk')", (f"BULK-{n}",))
            with pytest.raises(psycopg.errors.UniqueViolation):
                with conn.transaction():  # a savepoint whose rows and chain tip roll back together
                    conn.execute("INSERT INTO customers (code, name) VALUES ('SAVEPOINT-1', 'Gone')")
                    conn.execute("INSERT INTO customers (code, name) VALUES ('BULK-0', 'Duplicate')")
            conn.execute("INSERT INTO customers (code, name) VALUES ('AFTER-SAVEPOINT', 'Kept')")
        head = conn.execute("SELECT last_seq FROM audit_chain_head").fetchone()[0]
        seqs = [s for (s,) in conn.execute("SELECT seq FROM audit_change_log ORDER BY seq").fetchall()]
    assert seqs == list(range(1, 302)) and head == 301
    result = verify(tenant_dsn)
    assert result.ok and result.rows_checked == 301


# -- capture per statement (0012) ----------------------------------------------------------------

def test_one_statement_changing_many_rows_writes_one_audit_row_each_chained_in_id_order(tenant_dsn):
    with psycopg.connect(tenant_dsn) as conn:
        with conn.transaction():
            act_as(conn, "bulk", request_id="req-bulk")
            ids = [i for (i,) in conn.execute(
                "INSERT INTO customers (code, name) SELECT 'MANY-' || g, 'Many ' || g FROM generate_series(1, 50) g "
                "RETURNING id").fetchall()]
        with conn.transaction():
            act_as(conn, "bulk-rename")
            conn.execute("UPDATE customers SET name = name || ' (renamed)' WHERE code LIKE 'MANY-%'")
        with conn.transaction():
            act_as(conn, "bulk-remove")
            conn.execute("DELETE FROM customers WHERE code LIKE 'MANY-%' AND id % 2 = 0")
        rows = conn.execute("SELECT operation, record_id, actor, old_values ->> 'name', new_values ->> 'name' "
                            "FROM audit_change_log ORDER BY seq").fetchall()
        head = conn.execute("SELECT last_seq FROM audit_chain_head").fetchone()[0]
    ids.sort()
    evens = [i for i in ids if i % 2 == 0]
    assert [(op, record) for op, record, *_ in rows] == (
        [("INSERT", i) for i in ids] + [("UPDATE", i) for i in ids] + [("DELETE", i) for i in evens])
    assert {actor for op, _, actor, *_ in rows if op == "INSERT"} == {"bulk"}
    updates = [(old, new) for op, _, _, old, new in rows if op == "UPDATE"]
    assert all(new == f"{old} (renamed)" for old, new in updates) and len(updates) == 50
    assert head == len(rows) == 125
    result = verify(tenant_dsn)
    assert result.ok and result.rows_checked == 125


def test_a_statement_that_changes_no_row_writes_nothing_and_leaves_the_head_unlocked(tenant_dsn):
    add_customers(tenant_dsn, 1)
    with psycopg.connect(tenant_dsn) as conn, psycopg.connect(tenant_dsn) as other:
        conn.execute("UPDATE customers SET name = 'nobody' WHERE code = 'NO-SUCH-CODE'")
        conn.execute("DELETE FROM customers WHERE code = 'NO-SUCH-CODE'")
        # Still inside conn's transaction: had capture locked the head, this would wait.
        other.execute("SET lock_timeout = '2s'")
        assert other.execute("SELECT last_seq FROM audit_chain_head FOR UPDATE NOWAIT").fetchone() == (1,)
        other.rollback()
        assert conn.execute("SELECT count(*) FROM audit_change_log").fetchone() == (1,)
        assert conn.execute("SELECT current_setting('ygg.audit_tip', true)").fetchone()[0] in (None, "")
        conn.commit()


def test_a_savepoint_rolled_back_after_a_many_row_statement_keeps_the_head_on_that_statement(tenant_dsn):
    with psycopg.connect(tenant_dsn) as conn:
        with conn.transaction():
            conn.execute("INSERT INTO customers (code, name) SELECT 'KEPT-' || g, 'Kept' FROM generate_series(1, 20) g")
            with pytest.raises(psycopg.errors.CheckViolation):
                with conn.transaction():
                    conn.execute("INSERT INTO customers (code, name) SELECT 'GONE-' || g, 'Gone' "
                                 "FROM generate_series(1, 5) g")
                    conn.execute("INSERT INTO items (sku, name, cost) VALUES ('BROKEN', 'Broken', -1)")
        head = conn.execute("SELECT last_seq FROM audit_chain_head").fetchone()[0]
        seqs = [s for (s,) in conn.execute("SELECT seq FROM audit_change_log ORDER BY seq").fetchall()]
    assert seqs == list(range(1, 21)) and head == 20
    assert verify(tenant_dsn).ok


def test_rows_deleted_by_a_cascade_are_audited(tenant_dsn):
    with psycopg.connect(tenant_dsn) as conn:
        with conn.transaction():
            supplier = conn.execute("INSERT INTO suppliers (code, name) VALUES ('S', 'S') RETURNING id").fetchone()[0]
            warehouse = conn.execute("INSERT INTO warehouses (code, name) VALUES ('W', 'W') RETURNING id").fetchone()[0]
            item = conn.execute("INSERT INTO items (sku, name) VALUES ('I', 'I') RETURNING id").fetchone()[0]
            order = conn.execute("INSERT INTO purchasing_orders (supplier_id, warehouse_id) VALUES (%s, %s) RETURNING id",
                                 (supplier, warehouse)).fetchone()[0]
            conn.execute("INSERT INTO purchasing_order_lines (order_id, line_no, item_id, quantity, unit_price) "
                         "SELECT %s, g, %s, 1, 1 FROM generate_series(1, 3) g", (order, item))
        with conn.transaction():
            before = head_seq(conn)
            conn.execute("DELETE FROM purchasing_orders WHERE id = %s", (order,))
            deleted = conn.execute("SELECT table_name, operation FROM audit_change_log WHERE seq > %s ORDER BY seq",
                                   (before,)).fetchall()
    assert sorted(deleted) == [("purchasing_order_lines", "DELETE")] * 3 + [("purchasing_orders", "DELETE")]
    assert verify(tenant_dsn).ok


def test_an_update_that_changes_a_row_id_is_refused_rather_than_left_unaudited(tenant_dsn):
    add_customers(tenant_dsn, 1)
    with psycopg.connect(tenant_dsn) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="an UPDATE changed a row id"):
            conn.execute("UPDATE customers SET id = DEFAULT")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM audit_change_log").fetchone() == (1,)
    assert verify(tenant_dsn).ok
