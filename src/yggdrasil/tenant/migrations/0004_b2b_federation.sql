-- 0004_b2b_federation.sql
-- The tenant's side of the federation: partner registry, outbox, inbox, held events,
-- quarantine and approvals. What it guarantees:
--   * an outbound event is a `b2b_events` row written in the transaction of the change that
--     caused it, with its signed envelope exactly as it will be published, and a per-order
--     sequence number taken from `b2b_order_sequences` in that same transaction (no gaps: a
--     rolled-back change takes its number with it);
--   * an inbound event has at most one effect: `b2b_inbox` is keyed by (source, event id) and
--     never expires;
--   * an inbound event is applied in its source's per-order sequence; one that arrives early is
--     kept in `b2b_held_events` (raw bytes) until its predecessors are applied, and if they do
--     not come in time, the source is asked to replay them from its outbox;
--   * an inbound event that fails a check is kept in `b2b_quarantine` with its raw bytes and a
--     reason code: never applied, never dropped;
--   * the publisher is woken by NOTIFY `ygg_outbox` when events are committed.

CREATE TABLE b2b_partners (
    tenant_id       text PRIMARY KEY CHECK (tenant_id ~ '^[a-z][a-z0-9-]{1,62}$'),
    -- The audit trail keys on a bigint id (migration 0002).
    id              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    name            text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    -- Base64 of the 32 raw bytes of the partner's Ed25519 public key.
    public_key      text NOT NULL CHECK (public_key ~ '^[A-Za-z0-9+/]{43}=$'),
    key_id          text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    -- 'approve': inbound documents wait for a person before they create records.
    approval_policy text NOT NULL DEFAULT 'approve' CHECK (approval_policy IN ('auto', 'approve')),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'departed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The partner's SKU -> our item. Inbound lines without a mapping send the document to approvals.
CREATE TABLE b2b_partner_items (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_tenant_id text NOT NULL REFERENCES b2b_partners (tenant_id),
    partner_sku       text NOT NULL CHECK (length(partner_sku) BETWEEN 1 AND 100),
    item_id           bigint NOT NULL REFERENCES items (id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partner_tenant_id, partner_sku)
);

-- The next outbound sequence number per aggregate and destination: 1, 2, 3 ... The row lock
-- taken by the upsert orders concurrent changes of one order, so numbers follow commit order.
CREATE TABLE b2b_order_sequences (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    dest_tenant    text NOT NULL,
    last_sequence  bigint NOT NULL CHECK (last_sequence >= 1),
    PRIMARY KEY (aggregate_type, aggregate_id, dest_tenant)
);

-- The outbox: the system of record for what we sent. Kept, not deleted, once published:
-- a destination that missed events (past broker retention) is answered from here.
CREATE TABLE b2b_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         uuid NOT NULL UNIQUE,
    event_type       text NOT NULL,
    module           text NOT NULL,
    source_tenant    text NOT NULL,
    dest_tenant      text NOT NULL,
    aggregate_type   text NOT NULL,
    aggregate_id     text NOT NULL,
    sequence         bigint NOT NULL CHECK (sequence >= 1),
    subject          text NOT NULL,
    -- The signed, encoded envelope, byte for byte what is published.
    envelope         bytea NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'published', 'acknowledged', 'rejected')),
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,
    acknowledged_at  timestamptz,
    -- What the destination recorded (its b2b.receipt); receipt_sequence orders the receipts of
    -- one event (held, then applied), so an older receipt never overwrites a newer one.
    receipt_outcome  text,
    receipt_reason   text,
    receipt_sequence bigint,
    -- Set when the destination asked for this event again (b2b.resync.request): the publisher
    -- republishes it whatever its status, under a new message id (`<event id>:replay:<n>`),
    -- since the broker would drop a copy of the original id within its de-duplication window.
    replay_requested_at timestamptz,
    replays          integer NOT NULL DEFAULT 0,
    UNIQUE (source_tenant, dest_tenant, aggregate_type, aggregate_id, sequence)
);
CREATE INDEX b2b_events_pending_idx ON b2b_events (id) WHERE status = 'pending';
CREATE INDEX b2b_events_replay_idx ON b2b_events (id) WHERE replay_requested_at IS NOT NULL;
CREATE INDEX b2b_events_aggregate_idx ON b2b_events (aggregate_type, aggregate_id, sequence);

-- One row per inbound event ever seen, whatever became of it. Never expires: the broker's
-- de-duplication window is an optimisation, this is the guarantee.
CREATE TABLE b2b_inbox (
    source_tenant  text NOT NULL,
    event_id       uuid NOT NULL,
    event_type     text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint NOT NULL,
    outcome        text NOT NULL
                   CHECK (outcome IN ('applied', 'duplicate', 'held', 'awaiting_approval', 'rejected')),
    received_at    timestamptz NOT NULL DEFAULT now(),
    applied_at     timestamptz,
    PRIMARY KEY (source_tenant, event_id)
);

-- The last inbound sequence applied per source and aggregate.
CREATE TABLE b2b_inbound_sequences (
    source_tenant  text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    last_sequence  bigint NOT NULL CHECK (last_sequence >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_tenant, aggregate_type, aggregate_id)
);

-- Verified events that arrived ahead of their predecessors, kept as received.
CREATE TABLE b2b_held_events (
    source_tenant       text NOT NULL,
    aggregate_type      text NOT NULL,
    aggregate_id        text NOT NULL,
    sequence            bigint NOT NULL,
    event_id            uuid NOT NULL,
    subject             text NOT NULL,
    raw                 bytea NOT NULL,
    held_at             timestamptz NOT NULL DEFAULT now(),
    resync_requested_at timestamptz,
    PRIMARY KEY (source_tenant, aggregate_type, aggregate_id, sequence)
);
CREATE INDEX b2b_held_events_age_idx ON b2b_held_events (held_at);

-- Inbound messages that failed a check. source_tenant is what the subject claimed (the
-- envelope may be unreadable or lie); NULL when even the subject was not ours.
CREATE TABLE b2b_quarantine (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    source_tenant text,
    event_id      uuid,
    subject       text NOT NULL,
    raw           bytea NOT NULL,
    reason        text NOT NULL,
    detail        text NOT NULL DEFAULT ''
);
CREATE INDEX b2b_quarantine_source_idx ON b2b_quarantine (source_tenant, id);

-- Inbound documents waiting for a person: the partner's policy is 'approve', or lines name
-- SKUs without a mapping. One pending row per order: later events of the same order update it
-- (their payload is the whole order), so the decision applies the order as it now stands.
CREATE TABLE b2b_approvals (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_tenant  text NOT NULL,
    event_id       uuid NOT NULL,
    event_type     text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint NOT NULL,
    payload        jsonb NOT NULL,
    -- Why it waits: 'partner.approval_required', 'items.unmapped', ...
    waiting_reason text NOT NULL,
    waiting_detail text NOT NULL DEFAULT '',
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'approved', 'rejected')),
    decided_by     text,
    decided_at     timestamptz,
    reason         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'pending') = (decided_at IS NULL))
);
CREATE UNIQUE INDEX b2b_approvals_one_pending_idx ON b2b_approvals (source_tenant, aggregate_type, aggregate_id)
    WHERE state = 'pending';

-- The seller's state of a federated purchase order as last applied (draft, confirmed, shipped,
-- cancelled). Our purchase order has no 'shipped': the goods are on their way while it stays
-- confirmed until we receive them. This column, audited with the order, shows the seller's
-- transitions in the order they were applied.
ALTER TABLE purchasing_orders ADD COLUMN b2b_source_state text
    CHECK (b2b_source_state IN ('draft', 'confirmed', 'shipped', 'cancelled'));
ALTER TABLE purchasing_orders ADD CONSTRAINT purchasing_orders_b2b_source_state_linked
    CHECK (b2b_source_state IS NULL OR b2b_source_tenant IS NOT NULL);

-- Audited: the tables people decide things in. Not audited, deliberately: b2b_events,
-- b2b_inbox, b2b_held_events and the two sequence tables are themselves append-mostly logs of
-- the transport, written once or more per event; auditing them would double every event's
-- writes and hold the audit chain's head lock longer, for no question anyone asks of them.
-- (Their composite keys also have no bigint id for the audit trail to key on.)
SELECT audit_attach(t::regclass) FROM unnest(ARRAY[
    'b2b_partners', 'b2b_partner_items', 'b2b_quarantine', 'b2b_approvals'
]) AS t;

-- One notification per inserting statement, sent at commit: the publisher wakes and claims.
CREATE FUNCTION b2b_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ygg_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER b2b_events_notify AFTER INSERT ON b2b_events
    FOR EACH STATEMENT EXECUTE FUNCTION b2b_outbox_notify();
