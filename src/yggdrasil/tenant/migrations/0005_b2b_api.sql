-- 0005_b2b_api.sql
-- What the tenant server's HTTP API needs from the federation tables (migration 0004):
--   * a row id on `b2b_inbox` and `b2b_held_events`, so their listings page by keyset on an
--     index like every other list (`?after=<id>`); the inbox grows forever, and a page must not
--     scan it;
--   * change notifications on `ygg_changes` when the sidecar, another process, changes what an
--     order's `federation` status is read from: the outbox row's status and receipt, events
--     held for an order, approvals. The server drops its cached order responses on them.
--
-- The notifications are per statement, not per row, with an empty id (`b2b_events::UPDATE`):
-- the publisher marks a whole batch published in one statement, and a row-level trigger would
-- send one notification per event on the hot path. PostgreSQL folds identical notifications
-- of one transaction, so a relay batch sends one per table. New outbox rows are not notified
-- here: they are written in the transaction of the order change, which notifies already.

ALTER TABLE b2b_inbox ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX b2b_inbox_id_idx ON b2b_inbox (id);

ALTER TABLE b2b_held_events ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX b2b_held_events_id_idx ON b2b_held_events (id);

CREATE FUNCTION notify_change_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ygg_changes', TG_TABLE_NAME || '::' || TG_OP);
    RETURN NULL;
END $$;

CREATE TRIGGER notify_change AFTER UPDATE ON b2b_events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_change_statement();
CREATE TRIGGER notify_change AFTER INSERT OR DELETE ON b2b_held_events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_change_statement();
CREATE TRIGGER notify_change AFTER INSERT OR UPDATE OR DELETE ON b2b_approvals
    FOR EACH STATEMENT EXECUTE FUNCTION notify_change_statement();
