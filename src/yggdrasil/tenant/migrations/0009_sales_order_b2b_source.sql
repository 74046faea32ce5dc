-- 0009_sales_order_b2b_source.sql
-- Federation from buyer to seller, and the record of divergences. What it guarantees:
--   * a sales order created from a buyer's purchase order (`purchasing.order.created`) carries
--     the buyer's tenant and order id, as a purchase order from a seller does (0001): both or
--     neither, one sales order per buyer's order, and `b2b_source_state` holds the buyer's
--     state as last applied (draft, confirmed, received, cancelled);
--   * an order we raised ourselves, whose partner keeps it as its own order (our purchase order
--     as the supplier's sales order, our sales order as the buyer's purchase order), records
--     the partner's order id and state as last applied (`b2b_counterpart_order_id`,
--     `b2b_counterpart_state`). `source` means the order came from the partner; `counterpart`
--     means it went to the partner. One order is never both;
--   * the partner's states are columns of the audited order tables, so the audit trail shows
--     the partner's steps in the order they were applied;
--   * a line created from a partner's document keeps the partner's SKU (`b2b_source_sku`); a
--     line written here (a local edit) has none. The state hash both sides compute names each
--     line by the SKU of the tenant that raised the order (docs/federation/design.md,
--     "Divergence"), which this column lets the receiving side know without a reverse lookup
--     through the item map, whose later edits would otherwise read as divergences;
--   * `b2b_divergences`: each applied event after which our view of the order does not hash to
--     the source's `state_hash`, or that we could not follow (a change to an order no longer
--     in draft). Audited: people look into and resolve them.

ALTER TABLE crm_sales_orders
    ADD COLUMN b2b_source_tenant text,
    ADD COLUMN b2b_source_order_id text,
    ADD COLUMN b2b_source_state text CHECK (b2b_source_state IN ('draft', 'confirmed', 'received', 'cancelled')),
    ADD COLUMN b2b_counterpart_order_id text CHECK (length(b2b_counterpart_order_id) BETWEEN 1 AND 100),
    ADD COLUMN b2b_counterpart_state text
        CHECK (b2b_counterpart_state IN ('draft', 'confirmed', 'received', 'cancelled')),
    ADD CONSTRAINT crm_sales_orders_b2b_source_linked
        CHECK ((b2b_source_tenant IS NULL) = (b2b_source_order_id IS NULL)),
    ADD CONSTRAINT crm_sales_orders_b2b_source_key UNIQUE (b2b_source_tenant, b2b_source_order_id),
    ADD CONSTRAINT crm_sales_orders_b2b_source_state_linked
        CHECK (b2b_source_state IS NULL OR b2b_source_tenant IS NOT NULL),
    ADD CONSTRAINT crm_sales_orders_b2b_source_or_counterpart
        CHECK (b2b_source_tenant IS NULL OR (b2b_counterpart_order_id IS NULL AND b2b_counterpart_state IS NULL));

ALTER TABLE purchasing_orders
    ADD COLUMN b2b_counterpart_order_id text CHECK (length(b2b_counterpart_order_id) BETWEEN 1 AND 100),
    ADD COLUMN b2b_counterpart_state text
        CHECK (b2b_counterpart_state IN ('draft', 'confirmed', 'shipped', 'cancelled')),
    ADD CONSTRAINT purchasing_orders_b2b_source_or_counterpart
        CHECK (b2b_source_tenant IS NULL OR (b2b_counterpart_order_id IS NULL AND b2b_counterpart_state IS NULL));

ALTER TABLE crm_sales_order_lines
    ADD COLUMN b2b_source_sku text CHECK (length(b2b_source_sku) BETWEEN 1 AND 100);
ALTER TABLE purchasing_order_lines
    ADD COLUMN b2b_source_sku text CHECK (length(b2b_source_sku) BETWEEN 1 AND 100);

CREATE TABLE b2b_divergences (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The event after which it was found: its source, aggregate (the source's order) and id.
    source_tenant     text NOT NULL,
    aggregate_type    text NOT NULL,
    aggregate_id      text NOT NULL,
    event_id          uuid NOT NULL,
    event_type        text NOT NULL,
    sequence          bigint NOT NULL,
    -- Our order: crm_sales_orders or purchasing_orders, by id.
    order_table       text NOT NULL CHECK (order_table IN ('crm_sales_orders', 'purchasing_orders')),
    order_id          bigint NOT NULL,
    -- The source's state hash (NULL if the event carried none) and the hash of our view.
    expected_hash     text CHECK (expected_hash ~ '^[0-9a-f]{64}$'),
    actual_hash       text NOT NULL CHECK (actual_hash ~ '^[0-9a-f]{64}$'),
    detail            text NOT NULL DEFAULT '',
    detected_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at       timestamptz
);
CREATE INDEX b2b_divergences_open_idx ON b2b_divergences (source_tenant, aggregate_type, aggregate_id)
    WHERE resolved_at IS NULL;
CREATE INDEX b2b_divergences_order_idx ON b2b_divergences (order_table, order_id);

SELECT audit_attach('b2b_divergences'::regclass);
