-- 0003_change_notifications.sql
-- One NOTIFY per changed row on channel `ygg_changes`, sent at commit (never for a rolled-back
-- change): the server relays them to WebSocket clients and uses them to invalidate its cache.
-- Payload: table:id:operation. Identical notifications in one transaction are folded by
-- PostgreSQL, which is what we want.

CREATE FUNCTION notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ygg_changes',
        TG_TABLE_NAME || ':' || coalesce(NEW.id, OLD.id)::text || ':' || TG_OP);
    RETURN NULL;
END $$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'suppliers', 'items', 'warehouses', 'stock_levels',
                             'crm_sales_orders', 'purchasing_orders'] LOOP
        EXECUTE format('CREATE TRIGGER notify_change AFTER INSERT OR UPDATE OR DELETE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION notify_change()', t);
    END LOOP;
END $$;
