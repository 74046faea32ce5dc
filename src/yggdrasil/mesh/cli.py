"""`ygg mesh ...`: run and administer the mesh server. The root `cli.py` registers the group:
`app.add_typer(mesh_app, name="mesh")`."""

from __future__ import annotations

import logging

import typer

from yggdrasil.settings import Settings

mesh_app = typer.Typer(
    help="The mesh server: registry of tenants and partnerships, tenant health monitoring, API proxy.",
    no_args_is_help=True,
)
admin_token_app = typer.Typer(help="Admin tokens for the mesh server's /api/v1 endpoints.", no_args_is_help=True)
mesh_app.add_typer(admin_token_app, name="admin-token")

DsnOption = typer.Option(None, "--dsn", help="ygg_central DSN (default: YGG_CENTRAL_DSN or ygg.toml)")


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _migrate_or_exit(dsn: str) -> list:
    import psycopg

    from yggdrasil.central import PACKAGE
    from yggdrasil.db import MigrationError, apply_migrations

    try:
        return apply_migrations(dsn, PACKAGE)
    except (psycopg.OperationalError, MigrationError) as exc:
        raise _fail(f"cannot migrate the central database: {str(exc).strip().splitlines()[0]}") from None


@mesh_app.command()
def serve(
    host: str = typer.Option(None, help="address to listen on (default: YGG_MESH_HOST, 127.0.0.1)"),
    port: int = typer.Option(None, help="port to listen on (default: YGG_MESH_PORT, 8100)"),
    dsn: str = DsnOption,
    migrate: bool = typer.Option(True, help="apply pending ygg_central migrations before serving"),
) -> None:
    """Serve the mesh server over HTTP.

    \b
    Public, no token:
      GET /health, GET /metrics                 liveness, Prometheus
      GET /registry/v1/tenants/{id}/partners    what sidecars sync (ETag)
    With an admin token (ygg mesh admin-token create):
      /api/v1/tenants        register, update, suspend, reactivate, depart
      /api/v1/partnerships   propose, accept, decline, suspend, resume, end
      /api/v1/health         current health, check history, transitions
    With the tenant's own API token (ygg_<tenant>.<secret>):
      /proxy/{tenant}/{path} forwarded; 502 if the tenant is down, 504 on timeout

    A background task polls every active tenant's /health every YGG_MESH_HEALTH_INTERVAL_SECONDS (10 s) with a timeout of YGG_MESH_HEALTH_TIMEOUT_SECONDS (5 s), keeps YGG_MESH_HEALTH_HISTORY_DAYS (7) of checks and records each up / degraded / down transition; YGG_MESH_HEALTH_ENABLED=false turns it off on extra copies of the server. The proxy waits YGG_MESH_PROXY_TIMEOUT_SECONDS (30 s) for a tenant.

    All state is in ygg_central (YGG_CENTRAL_DSN), so the server can be restarted or run as several copies at will.
    """
    import uvicorn

    from yggdrasil.logs import configure_logging
    from yggdrasil.mesh.api.app import create_app

    settings = _settings(mesh_host=host, mesh_port=port, central_dsn=dsn)
    configure_logging("mesh", settings.log_level, settings.log_json)
    # httpx logs every request at INFO: one line per health poll and proxied call, which the
    # transitions and our access log already say better.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if migrate:
        _migrate_or_exit(settings.central_dsn)
    uvicorn.run(create_app(settings), host=settings.mesh_host, port=settings.mesh_port, log_config=None,
                timeout_graceful_shutdown=5)


@mesh_app.command()
def migrate(dsn: str = DsnOption) -> None:
    """Apply pending migrations to the ygg_central database (the mesh server and the portal's)."""
    applied = _migrate_or_exit(_settings(central_dsn=dsn).central_dsn)
    for m in applied:
        typer.echo(f"applied {m.version:04d}_{m.name}")
    if not applied:
        typer.echo("schema is up to date")


@admin_token_app.command("create")
def admin_token_create(
    name: str = typer.Option(..., "--name", help="who or what holds the token, e.g. 'ops-laptop'"),
    dsn: str = DsnOption,
) -> None:
    """Create an admin token for the mesh server's /api/v1 and print it (shown only once)."""
    import psycopg

    from yggdrasil.mesh.adapters.admin_tokens import create_admin_token

    settings = _settings(central_dsn=dsn)
    _migrate_or_exit(settings.central_dsn)
    try:
        with psycopg.connect(settings.central_dsn) as conn:
            token = create_admin_token(conn, name)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except psycopg.OperationalError as exc:
        raise _fail(f"cannot reach the central database: {str(exc).strip().splitlines()[0]}") from None
    typer.echo(token)
