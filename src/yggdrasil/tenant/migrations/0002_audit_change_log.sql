-- 0002_audit_change_log.sql
-- Audit rows are written by triggers on every business table, so no code path can change a
-- business row without its audit row, in the same transaction: a rollback takes both.
-- The log is append-only: UPDATE, DELETE and TRUNCATE are refused by triggers.
-- Each row is hash-chained to its predecessor (row_hash = sha256(prev_hash || row)), so an edit
-- or deletion made by someone who disabled the triggers breaks the chain at that row and
-- `ygg audit verify` names it.

CREATE TABLE audit_change_log (
    seq        bigint PRIMARY KEY,          -- position in the chain: 1, 2, 3 ... without gaps
    table_name text NOT NULL,
    record_id  bigint NOT NULL,
    operation  text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    old_values jsonb,
    new_values jsonb,
    actor      text NOT NULL,
    request_id text,
    changed_at timestamptz NOT NULL,
    prev_hash  bytea NOT NULL,
    row_hash   bytea NOT NULL
);
CREATE INDEX audit_change_log_record_idx ON audit_change_log (table_name, record_id, seq);
CREATE INDEX audit_change_log_actor_idx ON audit_change_log (actor, seq);
CREATE INDEX audit_change_log_time_idx ON audit_change_log (changed_at);

-- The chain's head. Its row lock is what orders appends: a writing transaction holds it from
-- its first audited change to commit, so chain order is commit order and seq has no gaps.
CREATE TABLE audit_chain_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq  bigint NOT NULL,
    last_hash bytea NOT NULL
);
INSERT INTO audit_chain_head (last_seq, last_hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- The one definition of what a row's hash covers; verification calls the same function.
-- Timestamps enter as microseconds since the epoch so the session's TimeZone cannot matter,
-- and jsonb's text form is canonical (keys sorted), so the digest is reproducible.
CREATE FUNCTION audit_row_digest(
    prev_hash bytea, seq bigint, table_name text, record_id bigint, operation text,
    old_values jsonb, new_values jsonb, actor text, request_id text, changed_at timestamptz
) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(prev_hash || convert_to(concat_ws(chr(31),
        seq::text, table_name, record_id::text, operation,
        coalesce(old_values::text, ''), coalesce(new_values::text, ''),
        actor, coalesce(request_id, ''),
        (extract(epoch FROM changed_at) * 1000000)::bigint::text), 'UTF8'))
$$;

CREATE FUNCTION audit_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_old jsonb;
    v_new jsonb;
    v_actor text := coalesce(nullif(current_setting('ygg.actor', true), ''), 'system');
    v_request text := nullif(current_setting('ygg.request_id', true), '');
    v_seq bigint;
    v_prev bytea;
    v_hash bytea;
BEGIN
    IF TG_OP <> 'INSERT' THEN v_old := to_jsonb(OLD); END IF;
    IF TG_OP <> 'DELETE' THEN v_new := to_jsonb(NEW); END IF;
    SELECT last_seq + 1, last_hash INTO v_seq, v_prev FROM audit_chain_head WHERE singleton FOR UPDATE;
    v_hash := audit_row_digest(v_prev, v_seq, TG_TABLE_NAME, (coalesce(v_new, v_old) ->> 'id')::bigint,
                               TG_OP, v_old, v_new, v_actor, v_request, now());
    INSERT INTO audit_change_log
        (seq, table_name, record_id, operation, old_values, new_values, actor, request_id, changed_at, prev_hash, row_hash)
    VALUES
        (v_seq, TG_TABLE_NAME, (coalesce(v_new, v_old) ->> 'id')::bigint, TG_OP, v_old, v_new,
         v_actor, v_request, now(), v_prev, v_hash);
    UPDATE audit_chain_head SET last_seq = v_seq, last_hash = v_hash WHERE singleton;
    RETURN NULL;
END $$;

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_change_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_change_log_refuse_update_delete BEFORE UPDATE OR DELETE ON audit_change_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_change_log_refuse_truncate BEFORE TRUNCATE ON audit_change_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

-- Attach capture to every business table. A later migration that adds a business table
-- calls audit_attach() for it; a conformance test checks that none is missed.
CREATE FUNCTION audit_attach(target regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION audit_capture()',
                   'audit_capture_' || (target::text), target);
END $$;

SELECT audit_attach(t::regclass) FROM unnest(ARRAY[
    'users', 'api_tokens', 'customers', 'suppliers', 'items', 'warehouses', 'stock_levels',
    'stock_moves', 'crm_sales_orders', 'crm_sales_order_lines', 'purchasing_orders',
    'purchasing_order_lines'
]) AS t;
