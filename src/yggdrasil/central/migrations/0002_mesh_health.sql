-- 0002_mesh_health.sql
-- The mesh server's own state: who may administer it, and what it has seen of each tenant's
-- health. What it guarantees:
--   * admin tokens are kept as SHA-256 hashes only (the central database is backed up and read
--     by more people than should hold a token), and a revoked token stays revoked;
--   * health rows go with their tenant's registry entry (tenants are departed, not deleted; only
--     an onboarding that failed half-way deletes its entry again);
--   * every health check is kept with its status, latency and detail (pruned by age by the
--     server), every change of a tenant's status is kept as a transition (never pruned), and
--     `mesh_health_current` holds one row per tenant: the status, since when, and the last check.

CREATE TABLE mesh_admin_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE mesh_health_checks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    status      text NOT NULL CHECK (status IN ('up', 'degraded', 'down')),
    -- NULL when no answer came (connection refused, timeout).
    latency_ms  double precision CHECK (latency_ms >= 0),
    detail      text NOT NULL DEFAULT '' CHECK (length(detail) <= 1000)
);
-- History of one tenant, newest first; pruning by age.
CREATE INDEX mesh_health_checks_tenant ON mesh_health_checks (tenant_id, id DESC);
CREATE INDEX mesh_health_checks_age ON mesh_health_checks (checked_at);

CREATE TABLE mesh_health_transitions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- NULL for the first status the mesh ever saw for the tenant.
    from_status text CHECK (from_status IN ('up', 'degraded', 'down')),
    to_status   text NOT NULL CHECK (to_status IN ('up', 'degraded', 'down')),
    at          timestamptz NOT NULL DEFAULT now(),
    detail      text NOT NULL DEFAULT '' CHECK (length(detail) <= 1000),
    CHECK (from_status IS DISTINCT FROM to_status)
);
CREATE INDEX mesh_health_transitions_tenant ON mesh_health_transitions (tenant_id, id DESC);

-- The row the recorder locks: two mesh servers checking the same tenant at once still record
-- each transition exactly once, in order.
CREATE TABLE mesh_health_current (
    tenant_id       text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    status          text NOT NULL CHECK (status IN ('up', 'degraded', 'down')),
    since           timestamptz NOT NULL,
    last_checked_at timestamptz NOT NULL,
    latency_ms      double precision CHECK (latency_ms >= 0),
    detail          text NOT NULL DEFAULT '' CHECK (length(detail) <= 1000)
);
