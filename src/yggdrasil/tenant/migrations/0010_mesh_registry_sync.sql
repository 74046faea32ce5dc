-- 0010_mesh_registry_sync.sql
-- The partner registry becomes a synced copy of the mesh server's registry. What it guarantees:
--   * each partner row says where it came from: 'local' (`ygg partner add`, the only source of
--     a deployment without a mesh) or 'mesh' (written by the sidecar's registry sync). The sync
--     manages the rows the mesh lists, and suspends its own rows the mesh stops listing; it
--     never touches a local row the mesh does not list;
--   * the sync's own bookkeeping (the registry's last ETag, the last successful sync, the last
--     error) is durable, so a restarted sidecar asks "anything new since this ETag?" and an
--     operator can see how old the local copy is while the mesh is down.
-- b2b_registry_sync is not audited: it is transport state rewritten on every poll, like the
-- outbox (0004); the partner rows the sync writes are audited (actor 'mesh-sync').

ALTER TABLE b2b_partners ADD COLUMN source text NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'mesh'));

CREATE TABLE b2b_registry_sync (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- The ETag belongs to the registry it came from: another mesh URL starts afresh.
    mesh_url             text NOT NULL,
    etag                 text,
    -- How many partners the registry listed at the last successful sync.
    partners             integer CHECK (partners >= 0),
    last_attempt_at      timestamptz,
    last_success_at      timestamptz,
    last_error           text CHECK (length(last_error) <= 2000),
    last_error_at        timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0)
);
