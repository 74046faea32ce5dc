"""`ygg demo`: the whole system on 127.0.0.1 with embedded PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import typer

# Kept in step with yggdrasil.devstack.demo.MAX_TENANTS; not imported from there, so that every
# `ygg` command does not pay for importing the demo's dependencies at start-up.
MAX_TENANTS = 10


def demo(
    state_dir: Path = typer.Option(
        Path(".state/demo"), "--state-dir",
        help="where the database cluster, logs, demo-state.json and stack.json live; "
        "reused by the next run",
    ),
    tenants: int = typer.Option(
        2, "--tenants", min=1, max=MAX_TENANTS,
        help="how many tenant servers: acme (ACME Seller), bravo (BRAVO Buyer), then charlie, delta, ...",
    ),
    seed: bool = typer.Option(
        True, "--seed/--no-seed",
        help="seed sample data into tenants that are new (existing tenants keep their data)",
    ),
    view: bool = typer.Option(
        True, "--view/--no-view",
        help="show a live table of events flowing between tenants (default); --no-view logs a line "
        "per tenant whenever its counts change instead (also what happens when output is not a terminal)",
    ),
) -> None:
    """Start the whole system on 127.0.0.1 and keep it running until Ctrl-C or SIGTERM.

    \b
    First run:
      - embedded PostgreSQL, data in STATE_DIR/postgres
      - one database per tenant, migrated, with an admin token
      - an Ed25519 signing key per tenant (STATE_DIR/keys), and
        each tenant registered as partner of the others, with
        approval `auto` (once the sidecars sync from the mesh,
        its partnerships govern these: change them there)
      - nats-server with JetStream (STATE_DIR/broker), one broker
        user per tenant, streams and consumers declared
      - the ygg_central database; every tenant registered at the
        mesh with an active partnership to each other one; per
        tenant a portal organization owning it, an owner login
        (owner@<id>.example, generated password), a subscription
        and a sample support ticket; a mesh admin token
      - one `ygg tenant serve` and one `ygg sidecar run` per
        tenant (the sidecars sync their partners from the mesh),
        then `ygg mesh serve` and `ygg portal serve`, on free ports
      - sample data through each tenant's API: warehouses, items
        with stock, customers, suppliers (every other tenant is
        linked as partner customer and supplier), sales and
        purchase orders in every state; buyers map sellers' SKUs
        to their items, and each tenant sends the others a few
        sales orders, which arrive there as purchase orders
    Later runs reuse the cluster, databases, keys, ports, tokens
    and logins.

    \b
    While it runs, a live table shows per tenant the outbox by
    status (pending, published, acknowledged, rejected), inbound
    events applied, held and quarantined, approvals waiting, and
    the latest events in both directions.

    \b
    STATE_DIR/stack.json exists while the stack runs (replaced
    atomically whenever a pid changes):
      {"postgres": {"dsn", "pid"},
       "broker": {"url", "pid", "store_dir", "monitor_url",
                  "admin_user", "admin_password"},
       "mesh": {"url", "pid", "admin_token", "dsn", ...},
       "portal": {"url", "pid", "dsn", ...,
                  "owners": [{"tenant", "organization",
                              "email", "password"}]},
       "tenants": [{"id", "name", "url", "dsn", "admin_token",
                    "broker_user", "broker_password",
                    "signing_key_path", "public_key"}],
       "processes": {"postgres": PID, "broker": PID,
                     "tenant:acme": PID, "sidecar:acme": PID, ...,
                     "mesh": PID, "portal": PID}}

    \b
    A process that dies is restarted after 1 s, 2 s, 4 s ... up
    to 30 s while it keeps dying; its new pid goes to stack.json.
    SIGINT/SIGTERM/SIGHUP stops every process (SIGTERM, SIGKILL
    after a timeout), PostgreSQL last, and removes stack.json;
    data and logs (STATE_DIR/logs) stay. Exit code 0 after a
    clean stop, 1 if the stack could not start.
    """
    from yggdrasil.devstack.demo import run_demo

    raise typer.Exit(run_demo(state_dir, tenants=tenants, seed=seed, view=view))
