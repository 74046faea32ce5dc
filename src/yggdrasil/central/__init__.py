"""The `ygg_central` database of the coordination plane.

The mesh server (tenant and partner registry, health) and the customer portal (organizations,
users, subscriptions, tickets) share this one database and its one numbered migration series
in `migrations/`. Nothing here is on a tenant's data path: tenants keep a synced copy of what
they need from it.
"""

PACKAGE = "yggdrasil.central"
