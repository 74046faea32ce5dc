-- 0001_core.sql
-- The tenant's business schema: master data, stock, sales and purchase orders, users and
-- API tokens. Every table has a bigint `id` (the audit trail keys on it) and, where rows are
-- edited, a `version` for optimistic concurrency: a stale write is refused, not merged.

CREATE TABLE roles (
    name        text PRIMARY KEY,
    description text NOT NULL
);
INSERT INTO roles (name, description) VALUES
    ('admin',      'everything, including users and tokens'),
    ('sales',      'customers and sales orders'),
    ('purchasing', 'suppliers and purchase orders'),
    ('warehouse',  'items, warehouses, stock, shipping and receiving'),
    ('auditor',    'read-only access to everything, including the audit trail');

CREATE TABLE users (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username     text NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 100),
    display_name text NOT NULL DEFAULT '',
    role         text NOT NULL REFERENCES roles (name),
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    version      integer NOT NULL DEFAULT 1
);

-- Only a SHA-256 of each token is stored: a leaked table does not leak credentials.
CREATE TABLE api_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    token_hash  bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

CREATE TABLE customers (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code              text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 50),
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email             text,
    -- Set when the customer is itself a Yggdrasil tenant: its orders then federate.
    partner_tenant_id text,
    currency          char(3) NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    active            boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    version           integer NOT NULL DEFAULT 1
);
CREATE INDEX customers_partner_tenant_idx ON customers (partner_tenant_id) WHERE partner_tenant_id IS NOT NULL;

CREATE TABLE suppliers (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code              text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 50),
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email             text,
    partner_tenant_id text,
    currency          char(3) NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    active            boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    version           integer NOT NULL DEFAULT 1
);
CREATE INDEX suppliers_partner_tenant_idx ON suppliers (partner_tenant_id) WHERE partner_tenant_id IS NOT NULL;

CREATE TABLE items (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku           text NOT NULL UNIQUE CHECK (length(sku) BETWEEN 1 AND 64),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    unit          text NOT NULL DEFAULT 'pcs',
    list_price    numeric(14, 4) NOT NULL DEFAULT 0 CHECK (list_price >= 0),
    cost          numeric(14, 4) NOT NULL DEFAULT 0 CHECK (cost >= 0),
    reorder_point numeric(14, 3) NOT NULL DEFAULT 0 CHECK (reorder_point >= 0),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    version       integer NOT NULL DEFAULT 1
);

CREATE TABLE warehouses (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code       text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 50),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    address    text NOT NULL DEFAULT '',
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    version    integer NOT NULL DEFAULT 1
);

-- The quantity on hand can never go negative: a shipment that would do so is refused.
CREATE TABLE stock_levels (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id      bigint NOT NULL REFERENCES items (id),
    warehouse_id bigint NOT NULL REFERENCES warehouses (id),
    quantity     numeric(14, 3) NOT NULL DEFAULT 0 CHECK (quantity >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (item_id, warehouse_id)
);

CREATE TABLE stock_moves (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id        bigint NOT NULL REFERENCES items (id),
    warehouse_id   bigint NOT NULL REFERENCES warehouses (id),
    quantity       numeric(14, 3) NOT NULL CHECK (quantity <> 0),
    reason         text NOT NULL CHECK (reason IN ('sales_shipment', 'purchase_receipt', 'adjustment')),
    reference_type text,
    reference_id   bigint,
    note           text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stock_moves_item_idx ON stock_moves (item_id, id);
CREATE INDEX stock_moves_reference_idx ON stock_moves (reference_type, reference_id);

CREATE TABLE crm_sales_orders (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers (id),
    warehouse_id bigint NOT NULL REFERENCES warehouses (id),
    state        text NOT NULL DEFAULT 'draft'
                 CHECK (state IN ('draft', 'confirmed', 'shipped', 'cancelled')),
    currency     char(3) NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    order_date   date NOT NULL DEFAULT current_date,
    reference    text NOT NULL DEFAULT '',
    notes        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    shipped_at   timestamptz,
    cancelled_at timestamptz,
    version      integer NOT NULL DEFAULT 1
);
CREATE INDEX crm_sales_orders_customer_idx ON crm_sales_orders (customer_id, order_date);
CREATE INDEX crm_sales_orders_open_idx ON crm_sales_orders (state) WHERE state IN ('draft', 'confirmed');

CREATE TABLE crm_sales_order_lines (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id   bigint NOT NULL REFERENCES crm_sales_orders (id) ON DELETE CASCADE,
    line_no    integer NOT NULL CHECK (line_no > 0),
    item_id    bigint NOT NULL REFERENCES items (id),
    quantity   numeric(14, 3) NOT NULL CHECK (quantity > 0),
    unit_price numeric(14, 4) NOT NULL CHECK (unit_price >= 0),
    UNIQUE (order_id, line_no)
);
CREATE INDEX crm_sales_order_lines_item_idx ON crm_sales_order_lines (item_id);

CREATE TABLE purchasing_orders (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    supplier_id         bigint NOT NULL REFERENCES suppliers (id),
    warehouse_id        bigint NOT NULL REFERENCES warehouses (id),
    state               text NOT NULL DEFAULT 'draft'
                        CHECK (state IN ('draft', 'confirmed', 'received', 'cancelled')),
    currency            char(3) NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    order_date          date NOT NULL DEFAULT current_date,
    expected_date       date,
    reference           text NOT NULL DEFAULT '',
    notes               text NOT NULL DEFAULT '',
    -- Linkage to the seller's sales order when this order arrived by federation.
    b2b_source_tenant   text,
    b2b_source_order_id text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    confirmed_at        timestamptz,
    received_at         timestamptz,
    cancelled_at        timestamptz,
    version             integer NOT NULL DEFAULT 1,
    CHECK ((b2b_source_tenant IS NULL) = (b2b_source_order_id IS NULL)),
    UNIQUE (b2b_source_tenant, b2b_source_order_id)
);
CREATE INDEX purchasing_orders_supplier_idx ON purchasing_orders (supplier_id, order_date);
CREATE INDEX purchasing_orders_open_idx ON purchasing_orders (state) WHERE state IN ('draft', 'confirmed');

CREATE TABLE purchasing_order_lines (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id   bigint NOT NULL REFERENCES purchasing_orders (id) ON DELETE CASCADE,
    line_no    integer NOT NULL CHECK (line_no > 0),
    item_id    bigint NOT NULL REFERENCES items (id),
    quantity   numeric(14, 3) NOT NULL CHECK (quantity > 0),
    unit_price numeric(14, 4) NOT NULL CHECK (unit_price >= 0),
    UNIQUE (order_id, line_no)
);
CREATE INDEX purchasing_order_lines_item_idx ON purchasing_order_lines (item_id);

-- Backstop for the domain's transition tables (tenant/domain/sales.py, purchasing.py): no code
-- path, not even a hand-written UPDATE, moves an order along a transition the domain forbids.
CREATE FUNCTION order_state_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state AND NOT (
        (TG_TABLE_NAME = 'crm_sales_orders' AND (OLD.state, NEW.state) IN (
            ('draft', 'confirmed'), ('confirmed', 'shipped'), ('draft', 'cancelled'), ('confirmed', 'cancelled')))
        OR (TG_TABLE_NAME = 'purchasing_orders' AND (OLD.state, NEW.state) IN (
            ('draft', 'confirmed'), ('confirmed', 'received'), ('draft', 'cancelled'), ('confirmed', 'cancelled')))
    ) THEN
        RAISE EXCEPTION 'order % cannot move from % to %', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER crm_sales_orders_state_guard BEFORE UPDATE OF state ON crm_sales_orders
    FOR EACH ROW EXECUTE FUNCTION order_state_guard();
CREATE TRIGGER purchasing_orders_state_guard BEFORE UPDATE OF state ON purchasing_orders
    FOR EACH ROW EXECUTE FUNCTION order_state_guard();
