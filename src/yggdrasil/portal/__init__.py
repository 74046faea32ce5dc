"""The customer portal (`ygg portal serve`): organizations, users and their roles, sessions,
subscriptions and support tickets, as web pages and a JSON API.

Every bit of state lives in the `ygg_central` database (migration 0003_portal.sql): sessions,
CSRF tokens and login-throttling counters included. A portal process holds nothing that a
restart could lose, so it can be killed at any time and several copies can serve at once.

Layout: `domain/` (rules, no I/O), `adapters/` (SQL), `services.py` (one function per use case,
one transaction each), `api/` (HTTP: JSON under /api/v1 and server-rendered pages), `cli.py`.
"""
