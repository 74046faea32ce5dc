-- The mesh registry: which tenants exist and which of them trade with each other.

CREATE TABLE tenants (
    id                     text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9-]{1,62}$'),
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Where the mesh reaches the tenant server (health polls, API proxy).
    api_url                text NOT NULL CHECK (api_url ~ '^https?://[^\s]+$'),
    -- Base64 of the 32 raw bytes of the tenant's Ed25519 public key, and its key id.
    public_key             text NOT NULL CHECK (public_key ~ '^[A-Za-z0-9+/]{43}=$'),
    key_id                 text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    -- Where the tenant's broker password is kept (a file path or a secret's name), never the
    -- secret itself: the central database is backed up and read by more people than the broker.
    broker_credentials_ref text NOT NULL DEFAULT '' CHECK (length(broker_credentials_ref) <= 500),
    status                 text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'departed')),
    status_changed_at      timestamptz NOT NULL DEFAULT now(),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- A partnership between two tenants, proposed by one and accepted by the other. Stored once per
-- pair with the ids in order (tenant_low < tenant_high), so A-B and B-A cannot both exist.
CREATE TABLE mesh_partners (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_low      text NOT NULL REFERENCES tenants (id),
    tenant_high     text NOT NULL REFERENCES tenants (id),
    proposed_by     text NOT NULL REFERENCES tenants (id),
    modules         text[] NOT NULL DEFAULT ARRAY['sales', 'purchasing', 'b2b']
                    CHECK (modules <@ ARRAY['sales', 'purchasing', 'b2b'] AND cardinality(modules) > 0),
    -- The policy each side applies to documents from the other (see the tenant's b2b_partners).
    approval_policy text NOT NULL DEFAULT 'approve' CHECK (approval_policy IN ('auto', 'approve')),
    status          text NOT NULL DEFAULT 'proposed'
                    CHECK (status IN ('proposed', 'active', 'suspended', 'ended', 'declined')),
    accepted_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (tenant_low < tenant_high),
    CHECK (proposed_by IN (tenant_low, tenant_high)),
    UNIQUE (tenant_low, tenant_high)
);
