"""`ygg tenant ...`: run and administer one tenant server."""

from __future__ import annotations

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
        with psycopg.connect(_settings(dsn).tenant_dsn) as conn:
            token = create_token(conn, user or role, role, name)
    except psycopg.OperationalError as exc:
        typer.echo(f"error: cannot reach the tenant database: {str(exc).strip().splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    typer.echo(token)
