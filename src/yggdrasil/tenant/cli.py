"""`ygg tenant ...`: run and administer one tenant server."""

from __future__ import annotations

from pathlib import Path

import typer

from yggdrasil.settings import Settings

app = typer.Typer(help="Run and administer a tenant server (one company's ERP).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for the tenant server.", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _settings(dsn: str | None) -> Settings:
    return Settings(**({"tenant_dsn": dsn} if dsn else {}))


DsnOption = typer.Option(None, "--dsn", help="tenant database DSN (default: YGG_TENANT_DSN or ygg.toml)")


@app.command()
def serve(
    host: str = typer.Option(None, help="address to listen on (default 127.0.0.1)"),
    port: int = typer.Option(None, help="port to listen on (default 8000)"),
    dsn: str = DsnOption,
    migrate: bool = typer.Option(True, help="apply pending migrations before serving"),
) -> None:
    """Serve the tenant's HTTP API, WebSocket and metrics."""
    import uvicorn

    from yggdrasil.logs import configure_logging
    from yggdrasil.tenant.api.app import create_app

    overrides = {k: v for k, v in {"host": host, "port": port, "tenant_dsn": dsn}.items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(f"tenant:{settings.tenant_id}", settings.log_level, settings.log_json)
    if migrate:
        _migrate_or_exit(settings.tenant_dsn)
    from yggdrasil.federation.keys import SigningKeyError

    try:
        app = create_app(settings)
    except SigningKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=5)


def _migrate_or_exit(dsn: str) -> list:
    import psycopg

    from yggdrasil.db import MigrationError, apply_migrations

    try:
        return apply_migrations(dsn, "yggdrasil.tenant")
    except (psycopg.OperationalError, MigrationError) as exc:
        typer.echo(f"error: cannot migrate the tenant database: {str(exc).strip().splitlines()[0]}", err=True)
        raise typer.Exit(2) from None


@app.command()
def migrate(dsn: str = DsnOption) -> None:
    """Apply pending schema migrations to the tenant database."""
    applied = _migrate_or_exit(_settings(dsn).tenant_dsn)
    if applied:
        for m in applied:
            typer.echo(f"applied {m.version:04d}_{m.name}")
    else:
        typer.echo("schema is up to date")


@token_app.command("create")
def token_create(
    role: str = typer.Option(..., "--role", help="admin, sales, purchasing, warehouse or auditor"),
    user: str = typer.Option(None, "--user", help="user name (default: the role's name)"),
    name: str = typer.Option("", "--name", help="a label for the token, e.g. the machine it is for"),
    dsn: str = DsnOption,
) -> None:
    """Create a user if needed and print a new bearer token for it (shown only once)."""
    import psycopg

    from yggdrasil.tenant.auth import ROLES, create_token

    if role not in ROLES:
        typer.echo(f"error: unknown role {role!r}; roles are: {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    try:
        settings = _settings(dsn)
        with psycopg.connect(settings.tenant_dsn) as conn:
            token = create_token(conn, user or role, role, name, tenant_id=settings.tenant_id)
    except psycopg.OperationalError as exc:
        typer.echo(f"error: cannot reach the tenant database: {str(exc).strip().splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    typer.echo(token)


# -- a tenant's arrival and departure (ops/tenant_lifecycle.py, ops/export.py) -----------------------


def _lifecycle_failed(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(getattr(error, "exit_code", 2))


@app.command()
def create(
    tenant_id: str = typer.Argument(..., metavar="ID", help="the new tenant's id (lowercase letters, digits, -)"),
    name: str = typer.Option(..., "--name", help="the company's display name"),
    api_url: str = typer.Option(..., "--api-url", help="where the mesh reaches the tenant server, http(s)://..."),
    admin_dsn: str = typer.Option(None, "--admin-dsn",
                                  help="a DSN on the server to hold the tenant database, with the right to create "
                                       "databases (default: the central DSN's server, database postgres)"),
    central_dsn: str = typer.Option(None, "--central-dsn", help="ygg_central DSN (default: YGG_CENTRAL_DSN)"),
    keys_dir: Path = typer.Option(Path("keys"), "--keys-dir",
                                  help="folder for the signing key and broker password files"),
    broker_users_file: Path = typer.Option(None, "--broker-users-file",
                                           help="the nats-server users file (an `accounts` block) to add the "
                                                "tenant's user to; created if absent. Without it, the block to "
                                                "add by hand is printed"),
    broker_pid: int = typer.Option(None, "--broker-pid", help="pid of the nats-server to reload (SIGHUP)"),
    broker_url: str = typer.Option(None, "--broker-url",
                                   help="the broker's URL for the settings; given with --broker-pid, the new "
                                        "user's login is tried after the reload (default: YGG_BROKER_URL)"),
) -> None:
    """Onboard a new tenant end to end.

    Creates and migrates its database, its signing key, its broker user (with permissions),
    its registry entry in ygg_central and a first admin token; prints what it made and the
    settings of the tenant's server and sidecar. A tenant that exists anywhere is refused."""
    from yggdrasil import db
    from yggdrasil.ops.tenant_lifecycle import LifecycleError, OnboardingPlan, onboard_tenant

    settings = Settings()
    central = central_dsn or settings.central_dsn
    plan = OnboardingPlan(
        tenant_id=tenant_id, name=name, api_url=api_url,
        admin_dsn=admin_dsn or db.dsn_with_database(central, "postgres"), central_dsn=central,
        keys_dir=keys_dir, broker_url=broker_url or settings.broker_url, broker_users_file=broker_users_file,
        broker_pid=broker_pid, verify_broker_url=broker_url if broker_pid else None,
        broker_admin_password=settings.broker_admin_password, mesh_url=settings.mesh_url,
    )
    try:
        result = onboard_tenant(plan)
    except LifecycleError as error:
        raise _lifecycle_failed(error) from None
    typer.echo(f"tenant {result.tenant_id} onboarded:")
    for line in result.made:
        typer.echo(f"  {line}")
    typer.echo(f"  admin token   {result.admin_token}")
    for line in result.instructions:
        typer.echo(line)
    typer.echo("")
    typer.echo(result.settings_toml, nl=False)


@app.command("export")
def export_command(
    out: Path = typer.Option(..., "--out", help="a new (or empty) folder for the export"),
    dsn: str = DsnOption,
) -> None:
    """Export the whole tenant database as JSON and CSV.

    One JSON and one CSV file per table (the audit trail too), schema.json, and a manifest
    with row counts and sha256, all read from one consistent snapshot."""
    import psycopg

    from yggdrasil.ops.export import ExportError, export_tenant_database

    def progress(table: str, rows: int, finished: bool) -> None:
        typer.echo(f"  {table}: {rows} rows" + ("" if finished else " ..."), err=True)

    try:
        result = export_tenant_database(_settings(dsn).tenant_dsn, out, progress=progress)
    except ExportError as error:
        raise _lifecycle_failed(error) from None
    except psycopg.Error as error:
        typer.echo(f"error: the export failed: {str(error).strip().splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"exported {len(result.tables)} tables, {result.total_rows} rows to {result.folder}")
    typer.echo(f"manifest {result.folder / 'manifest.json'} sha256 {result.manifest.sha256}")


@app.command()
def depart(
    tenant_id: str = typer.Argument(..., metavar="ID", help="the departing tenant's id"),
    export_dir: Path = typer.Option(..., "--export-dir", help="a new (or empty) folder for the full export"),
    dsn: str = DsnOption,
    central_dsn: str = typer.Option(None, "--central-dsn", help="ygg_central DSN (default: YGG_CENTRAL_DSN)"),
    signing_key: Path = typer.Option(None, "--signing-key",
                                     help="the tenant's private key file (default: YGG_SIGNING_KEY_PATH)"),
    wait: float = typer.Option(60.0, "--wait", min=0,
                               help="seconds to wait for the partners' receipts before marking the registry"),
    force: bool = typer.Option(False, "--force", help="depart although order events are still unanswered"),
    note: str = typer.Option("", "--note", help="a message to the partners, carried by the departure event"),
) -> None:
    """Depart: export the tenant, tell its partners, mark it departed.

    A full export, then a signed departure event to every partner (the tenant's sidecar must
    still run to send it), a wait for their receipts, then status departed in ygg_central.
    Partners keep their records and linkage fields."""
    import psycopg

    from yggdrasil.ops.tenant_lifecycle import DeparturePlan, LifecycleError, depart_tenant

    settings = _settings(dsn)
    plan = DeparturePlan(
        tenant_id=tenant_id, tenant_dsn=settings.tenant_dsn, central_dsn=central_dsn or settings.central_dsn,
        export_dir=export_dir, signing_key_path=signing_key or settings.signing_key_path, wait_seconds=wait,
        force=force, note=note,
    )
    try:
        result = depart_tenant(plan, say=typer.echo)
    except LifecycleError as error:
        raise _lifecycle_failed(error) from None
    except psycopg.Error as error:
        typer.echo(f"error: {str(error).strip().splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    if all(notice.status == "acknowledged" for notice in result.notices):
        typer.echo(f"next: every partner recorded the departure; stop the sidecar and the tenant server of "
                   f"{tenant_id}, then remove its broker user")
    else:
        typer.echo(f"next: keep the sidecar of {tenant_id} running until every departure event is acknowledged "
                   "(GET /api/v1/b2b/events, or the b2b_events table), then stop it and the tenant server, "
                   "and remove its broker user; partners' registry syncs mark it departed meanwhile")
