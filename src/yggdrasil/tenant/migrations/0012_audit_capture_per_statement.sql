-- 0012_audit_capture_per_statement.sql
-- The capture trigger ran once per changed row: each audited row paid a PL/pgSQL call, an
-- INSERT of its own and a deferred trigger event at commit, about 24 µs on top of writing the
-- row itself. A federated order is four audited rows (the order and three lines), so that was
-- most of what PostgreSQL spent applying one. Capture now runs once per statement, over the
-- statement's transition tables: the changed rows are hashed into the chain in one loop and
-- appended with one INSERT, and only the statement's last audit row queues the deferred move
-- of the chain head.
--
-- What is written does not change: one audit row per changed row with the same columns and
-- the same digest (audit_row_digest), in the chain order the head lock gives, so chains
-- written before this migration verify as before. Within one statement the rows are chained
-- in id order. A statement that changes no row takes no lock and writes nothing.

CREATE FUNCTION audit_capture_statement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_actor text := coalesce(nullif(current_setting('ygg.actor', true), ''), 'system');
    v_request text := nullif(current_setting('ygg.request_id', true), '');
    v_now timestamptz := now();
    v_tip text;
    v_seq bigint;
    v_prev bytea;
    v_hash bytea;
    v_changed refcursor;
    v_row record;
    v_seqs bigint[] := '{}';
    v_ids bigint[] := '{}';
    v_olds jsonb[] := '{}';
    v_news jsonb[] := '{}';
    v_prevs bytea[] := '{}';
    v_hashes bytea[] := '{}';
BEGIN
    -- The changed rows as (id, old, new). Each operation has its own transition tables, so
    -- each has its own query; the loop below is shared.
    IF TG_OP = 'INSERT' THEN
        OPEN v_changed FOR SELECT n.id, NULL::jsonb AS old_values, to_jsonb(n) AS new_values
                             FROM new_rows n ORDER BY n.id;
    ELSIF TG_OP = 'UPDATE' THEN
        OPEN v_changed FOR SELECT n.id, to_jsonb(o) AS old_values, to_jsonb(n) AS new_values
                             FROM old_rows o JOIN new_rows n ON n.id = o.id ORDER BY n.id;
    ELSE
        OPEN v_changed FOR SELECT o.id, to_jsonb(o) AS old_values, NULL::jsonb AS new_values
                             FROM old_rows o ORDER BY o.id;
    END IF;

    LOOP
        FETCH v_changed INTO v_row;
        EXIT WHEN NOT FOUND;
        IF v_seq IS NULL THEN
            -- The transaction's first audited change locks the head until commit (0007).
            v_tip := nullif(current_setting('ygg.audit_tip', true), '');
            IF v_tip IS NULL THEN
                SELECT last_seq, last_hash INTO v_seq, v_prev FROM audit_chain_head WHERE singleton FOR UPDATE;
            ELSE
                v_seq := split_part(v_tip, ':', 1)::bigint;
                v_prev := decode(split_part(v_tip, ':', 2), 'hex');
            END IF;
        END IF;
        v_seq := v_seq + 1;
        v_hash := audit_row_digest(v_prev, v_seq, TG_TABLE_NAME, v_row.id, TG_OP, v_row.old_values,
                                   v_row.new_values, v_actor, v_request, v_now);
        v_seqs := v_seqs || v_seq;
        v_ids := v_ids || v_row.id;
        v_olds := v_olds || v_row.old_values;
        v_news := v_news || v_row.new_values;
        v_prevs := v_prevs || v_prev;
        v_hashes := v_hashes || v_hash;
        v_prev := v_hash;
    END LOOP;
    CLOSE v_changed;
    -- Business rows keep their ids (identity columns); an UPDATE that changed one would leave
    -- a row unpaired above, and an unpaired row must not go unaudited.
    -- (Nested: the inner condition names new_rows, which exists only for UPDATE and INSERT.)
    IF TG_OP = 'UPDATE' THEN
        IF cardinality(v_ids) <> (SELECT count(*) FROM new_rows) THEN
            RAISE EXCEPTION 'audit capture on %: an UPDATE changed a row id', TG_TABLE_NAME;
        END IF;
    END IF;
    IF v_seq IS NULL THEN
        RETURN NULL;
    END IF;

    -- The tip first: the head mover below is queued only for the row that reaches it.
    PERFORM set_config('ygg.audit_tip', v_seq::text || ':' || encode(v_prev, 'hex'), true);
    INSERT INTO audit_change_log
        (seq, table_name, record_id, operation, old_values, new_values, actor, request_id, changed_at, prev_hash, row_hash)
    SELECT u.seq, TG_TABLE_NAME, u.record_id, TG_OP, u.old_values, u.new_values, v_actor, v_request, v_now,
           u.prev_hash, u.row_hash
      FROM unnest(v_seqs, v_ids, v_olds, v_news, v_prevs, v_hashes)
           AS u(seq, record_id, old_values, new_values, prev_hash, row_hash);
    RETURN NULL;
END $$;

-- Three triggers per table: a trigger with transition tables serves one operation.
CREATE OR REPLACE FUNCTION audit_attach(target regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION audit_capture_statement()',
                   'audit_capture_' || (target::text) || '_insert', target);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION audit_capture_statement()',
                   'audit_capture_' || (target::text) || '_update', target);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION audit_capture_statement()',
                   'audit_capture_' || (target::text) || '_delete', target);
END $$;

DO $$
DECLARE
    attached record;
BEGIN
    FOR attached IN
        SELECT tgrelid::regclass AS target, tgname FROM pg_trigger
         WHERE tgfoid = 'audit_capture()'::regprocedure AND NOT tgisinternal
         ORDER BY tgrelid
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', attached.tgname, attached.target);
        PERFORM audit_attach(attached.target);
    END LOOP;
END $$;
DROP FUNCTION audit_capture();

-- At commit, one event per audited statement instead of one per audit row: the condition is
-- evaluated as each row is appended (constraint triggers do not defer it), and only a
-- statement's last row reaches the tip set above. audit_move_chain_head() (0007) still moves
-- the head only for the transaction's last row.
DROP TRIGGER audit_change_log_move_head ON audit_change_log;
CREATE CONSTRAINT TRIGGER audit_change_log_move_head AFTER INSERT ON audit_change_log
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.seq = nullif(split_part(current_setting('ygg.audit_tip', true), ':', 1), '')::bigint)
    EXECUTE FUNCTION audit_move_chain_head();
