"""The mesh server (`ygg mesh serve`): the registry of tenants and of who trades with whom, the
health of every tenant server, and an API proxy to them. It owns the `ygg_central` database
(shared with the portal) and is never on a tenant's data path: sidecars keep a synced copy of
the registry and trade on it while the mesh is down. See docs/mesh/design.md.
"""
