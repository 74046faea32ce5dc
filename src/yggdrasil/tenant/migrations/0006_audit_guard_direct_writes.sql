-- 0006_audit_guard_direct_writes.sql
-- Only the audit trigger writes the audit trail. A direct INSERT into audit_change_log (a
-- forged row) and any direct change to audit_chain_head (moving the head to hide forged or
-- removed rows) are refused. pg_trigger_depth() tells the two apart: statements run by
-- audit_capture() are at depth 1, so a guard trigger on them fires at depth 2; a client's own
-- statement fires it at depth 1. Someone who switches triggers off can still write, and the
-- hash chain is what finds that (`ygg audit verify`).

CREATE FUNCTION audit_refuse_direct_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION '% on % refused: only the audit trigger writes the audit trail', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER audit_change_log_refuse_direct_insert BEFORE INSERT ON audit_change_log
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_direct_write();
CREATE TRIGGER audit_chain_head_refuse_direct_write BEFORE INSERT OR UPDATE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_direct_write();
CREATE TRIGGER audit_chain_head_refuse_delete BEFORE DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_chain_head_refuse_truncate BEFORE TRUNCATE ON audit_chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
