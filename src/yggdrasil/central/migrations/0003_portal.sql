-- 0003_portal.sql
-- The customer portal keeps all of its state here, nothing in process memory: organizations,
-- users and memberships, sessions (with their CSRF secrets), login-throttling counters,
-- subscriptions and support tickets. A portal process can be killed at any moment, and several
-- copies can serve at once. Text is stored exactly as entered; escaping is the renderer's job.

CREATE TABLE organizations (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A tenant (one company's ERP installation) is run for exactly one customer, so ownership is a
-- column on `tenants` rather than a link table; NULL means the tenant is not (yet) attached to an
-- organization. RESTRICT: an organization that still owns tenants cannot be deleted by accident,
-- the mesh registry entry must be moved or departed first.
ALTER TABLE tenants ADD COLUMN organization_id bigint REFERENCES organizations (id) ON DELETE RESTRICT;
CREATE INDEX tenants_organization_idx ON tenants (organization_id) WHERE organization_id IS NOT NULL;

CREATE TABLE portal_users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Kept as entered; uniqueness and look-ups ignore case (the index below).
    email         text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254),
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    -- An argon2 PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash); never the password.
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2%'),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX portal_users_email_key ON portal_users (lower(email));

CREATE TABLE portal_memberships (
    organization_id bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES portal_users (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX portal_memberships_user_idx ON portal_memberships (user_id);

-- The cookie (or bearer) carries a random token; only its SHA-256 is stored, so a copy of this
-- table (a backup, say) does not let anyone sign in. The CSRF token is stored as is: it is useless
-- without the session token, and the pages must be able to render it.
CREATE TABLE portal_sessions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash     bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    csrf_token     text NOT NULL CHECK (length(csrf_token) >= 32),
    user_id        bigint NOT NULL REFERENCES portal_users (id) ON DELETE CASCADE,
    client_address text NOT NULL DEFAULT '',
    user_agent     text NOT NULL DEFAULT '' CHECK (length(user_agent) <= 500),
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz
);
CREATE INDEX portal_sessions_user_idx ON portal_sessions (user_id) WHERE revoked_at IS NULL;

-- Failed sign-ins, counted per subject: 'email:<lower-cased address>' and 'address:<client ip>'.
-- Counted per email whether or not an account has it, so a lock says nothing about which
-- addresses are registered. Updated with one atomic upsert, so copies of the portal share it.
CREATE TABLE portal_login_throttle (
    subject           text PRIMARY KEY CHECK (subject ~ '^(email|address):'),
    failures          integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    window_started_at timestamptz NOT NULL DEFAULT now(),
    last_failure_at   timestamptz NOT NULL DEFAULT now(),
    locked_until      timestamptz
);

-- One subscription per organization; the plan names come from the catalogue in code
-- (yggdrasil/portal/domain/plans.py) and the CHECK keeps the two in step.
CREATE TABLE portal_subscriptions (
    organization_id      bigint PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    plan                 text NOT NULL CHECK (plan IN ('starter', 'business', 'enterprise')),
    seats                integer NOT NULL CHECK (seats BETWEEN 1 AND 100000),
    status               text NOT NULL CHECK (status IN ('trialing', 'active', 'past_due', 'cancelled')),
    current_period_start timestamptz NOT NULL,
    current_period_end   timestamptz NOT NULL,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    cancelled_at         timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (current_period_end >= current_period_start),
    CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL))
);

CREATE TABLE portal_tickets (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    subject         text NOT NULL CHECK (length(subject) BETWEEN 1 AND 300),
    body            text NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    opened_by       bigint REFERENCES portal_users (id) ON DELETE SET NULL,
    -- An admin or owner of the ticket's organization (checked by the portal on assignment;
    -- cleared when that person leaves the organization).
    assignee_id     bigint REFERENCES portal_users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);
CREATE INDEX portal_tickets_org_status_idx ON portal_tickets (organization_id, status, id);

CREATE TABLE portal_ticket_comments (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id  bigint NOT NULL REFERENCES portal_tickets (id) ON DELETE CASCADE,
    author_id  bigint REFERENCES portal_users (id) ON DELETE SET NULL,
    body       text NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX portal_ticket_comments_ticket_idx ON portal_ticket_comments (ticket_id, id);

-- Who did what, for support and disputes ("who cancelled our subscription?"). Written by the
-- portal in the same transaction as the change. organization_id is not a foreign key: the trail
-- of a deleted organization is kept.
CREATE TABLE portal_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    organization_id bigint,
    user_id         bigint,
    action          text NOT NULL CHECK (action ~ '^[a-z_]+(\.[a-z_]+)+$'),
    detail          jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX portal_events_org_idx ON portal_events (organization_id, id);
