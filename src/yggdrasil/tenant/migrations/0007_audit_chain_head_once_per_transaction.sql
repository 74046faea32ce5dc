-- 0007_audit_chain_head_once_per_transaction.sql
-- The chain head was locked and rewritten for every audited row. In one transaction that
-- writes many rows, each rewrite leaves another version of the same head row for the next
-- lock to step over, so a bulk change slowed down quadratically (20,000 rows: 6 s).
-- Now a transaction locks the head once, at its first audited change, carries the chain's
-- tip in a transaction-local setting, and moves the head once, at commit, from a deferred
-- constraint trigger. The guarantees stay: the lock is held to commit, so chain order is
-- commit order and seq has no gaps; a rolled-back savepoint rolls back its rows and its
-- setting together.

CREATE OR REPLACE FUNCTION audit_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_old jsonb;
    v_new jsonb;
    v_actor text := coalesce(nullif(current_setting('ygg.actor', true), ''), 'system');
    v_request text := nullif(current_setting('ygg.request_id', true), '');
    v_tip text := nullif(current_setting('ygg.audit_tip', true), '');
    v_seq bigint;
    v_prev bytea;
    v_hash bytea;
BEGIN
    IF TG_OP <> 'INSERT' THEN v_old := to_jsonb(OLD); END IF;
    IF TG_OP <> 'DELETE' THEN v_new := to_jsonb(NEW); END IF;
    IF v_tip IS NULL THEN
        SELECT last_seq + 1, last_hash INTO v_seq, v_prev FROM audit_chain_head WHERE singleton FOR UPDATE;
    ELSE
        v_seq := split_part(v_tip, ':', 1)::bigint + 1;
        v_prev := decode(split_part(v_tip, ':', 2), 'hex');
    END IF;
    v_hash := audit_row_digest(v_prev, v_seq, TG_TABLE_NAME, (coalesce(v_new, v_old) ->> 'id')::bigint,
                               TG_OP, v_old, v_new, v_actor, v_request, now());
    INSERT INTO audit_change_log
        (seq, table_name, record_id, operation, old_values, new_values, actor, request_id, changed_at, prev_hash, row_hash)
    VALUES
        (v_seq, TG_TABLE_NAME, (coalesce(v_new, v_old) ->> 'id')::bigint, TG_OP, v_old, v_new,
         v_actor, v_request, now(), v_prev, v_hash);
    PERFORM set_config('ygg.audit_tip', v_seq::text || ':' || encode(v_hash, 'hex'), true);
    RETURN NULL;
END $$;

-- Runs at commit for every row appended; only the transaction's last row moves the head.
CREATE FUNCTION audit_move_chain_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq = split_part(current_setting('ygg.audit_tip', true), ':', 1)::bigint THEN
        UPDATE audit_chain_head SET last_seq = NEW.seq, last_hash = NEW.row_hash WHERE singleton;
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER audit_change_log_move_head AFTER INSERT ON audit_change_log
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_move_chain_head();
