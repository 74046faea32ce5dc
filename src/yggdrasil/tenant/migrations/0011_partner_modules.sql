-- 0011_partner_modules.sql
-- Which modules a partner may send us events of, as the mesh's partnership says (`modules` in
-- the registry; 0010 synced everything else of it). A partner added locally (`ygg partner add`)
-- trades in every module, as before. The relay refuses an order event of a module the
-- partnership does not cover; `b2b` (receipts, resync requests, departures) is the protocol's own
-- channel and always accepted, whatever the list says.

ALTER TABLE b2b_partners
    ADD COLUMN modules text[] NOT NULL DEFAULT ARRAY['sales', 'purchasing', 'b2b']
        CHECK (modules <@ ARRAY['sales', 'purchasing', 'b2b'] AND cardinality(modules) > 0);
