"""`ygg portal ...`: run the customer portal and bootstrap its first organizations and users."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

from yggdrasil.settings import Settings

T = TypeVar("T")

app = typer.Typer(help="The customer portal: organizations, users, subscriptions and support tickets.",
                  no_args_is_help=True)
org_app = typer.Typer(help="Organizations (operator commands; members manage the rest in the portal).",
                      no_args_is_help=True)
user_app = typer.Typer(help="Portal users (operator commands, e.g. the first owner of an organization).",
                       no_args_is_help=True)
app.add_typer(org_app, name="org")
app.add_typer(user_app, name="user")

PASSWORD_ENV = "YGG_PORTAL_PASSWORD"
DsnOption = typer.Option(None, "--dsn", help="ygg_central DSN (default: YGG_CENTRAL_DSN or ygg.toml)")


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _run(dsn: str, work: Callable[..., Awaitable[T]]) -> T:
    """Run `work(conn)` on one connection to ygg_central; errors become one readable line."""
    import psycopg

    from yggdrasil.portal.adapters import connect
    from yggdrasil.portal.errors import PortalError

    async def main() -> T:
        async with await connect(dsn) as conn:
            return await work(conn)

    try:
        return asyncio.run(main())
    except PortalError as exc:
        raise _fail(exc.message) from None
    except psycopg.OperationalError as exc:
        raise _fail(f"cannot reach the central database: {str(exc).strip().splitlines()[0]}", 2) from None


def _migrate_or_exit(dsn: str) -> None:
    import psycopg

    from yggdrasil.central import PACKAGE
    from yggdrasil.db import MigrationError, apply_migrations

    try:
        apply_migrations(dsn, PACKAGE)
    except (psycopg.OperationalError, MigrationError) as exc:
        raise _fail(f"cannot migrate the central database: {str(exc).strip().splitlines()[0]}", 2) from None


@app.command()
def serve(
    host: str = typer.Option(None, help="address to listen on (default: portal_host, 127.0.0.1)"),
    port: int = typer.Option(None, help="port to listen on (default: portal_port, 8300)"),
    dsn: str = DsnOption,
    migrate: bool = typer.Option(True, help="apply pending ygg_central migrations before serving"),
) -> None:
    """Serve the portal's web pages, JSON API (/api/v1, OpenAPI at /docs), /health and /metrics."""
    import uvicorn

    from yggdrasil.logs import configure_logging
    from yggdrasil.portal.api.app import create_app

    settings = _settings(portal_host=host, portal_port=port, central_dsn=dsn)
    configure_logging("portal", settings.log_level, settings.log_json)
    if migrate:
        _migrate_or_exit(settings.central_dsn)
    uvicorn.run(create_app(settings), host=settings.portal_host, port=settings.portal_port, log_config=None,
                timeout_graceful_shutdown=5)


@org_app.command("create")
def org_create(
    name: str = typer.Option(..., "--name", help="the organization's name, as people will see it"),
    slug: str = typer.Option(None, "--slug", help="short name for URLs (default: derived from the name)"),
    plan: str = typer.Option("starter", "--plan",
                             help="plan of the trial subscription: starter, business or enterprise"),
    dsn: str = DsnOption,
) -> None:
    """Create an organization with a trial subscription and print its slug."""
    from yggdrasil.portal import services

    org = _run(_settings(central_dsn=dsn).central_dsn,
               lambda conn: services.create_organization(conn, name, slug, plan=plan))
    typer.echo(org["slug"])


@org_app.command("attach-tenant")
def org_attach_tenant(
    org: str = typer.Option(..., "--org", help="the organization's slug"),
    tenant: str = typer.Option(..., "--tenant", help="a tenant id from the mesh registry"),
    dsn: str = DsnOption,
) -> None:
    """Record that an organization owns a registered tenant (shown on its dashboard)."""
    from yggdrasil.portal import services

    _run(_settings(central_dsn=dsn).central_dsn, lambda conn: services.attach_tenant(conn, org, tenant))
    typer.echo(f"tenant {tenant} now belongs to {org}")


@user_app.command("create")
def user_create(
    email: str = typer.Option(..., "--email", help="the user's email (unique, case does not matter)"),
    name: str = typer.Option(None, "--name", help="display name (default: the email's local part)"),
    org: str = typer.Option(None, "--org", help="also make the user a member of this organization (slug)"),
    role: str = typer.Option("owner", "--role", help="role in --org: owner, admin or member"),
    prompt_password: bool = typer.Option(False, "--prompt-password",
                                         help=f"ask for the password (else {PASSWORD_ENV}, else a generated one)"),
    dsn: str = DsnOption,
) -> None:
    """Create a portal user, optionally as a member of an organization. Without a password given
    (prompt or YGG_PORTAL_PASSWORD) one is generated and printed once."""
    from yggdrasil.portal import services
    from yggdrasil.portal.domain.accounts import Passwords, generate_password

    settings = _settings(central_dsn=dsn)
    generated = False
    if prompt_password:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    else:
        password, generated = generate_password(), True
    passwords = Passwords(settings.portal_argon2_time_cost, settings.portal_argon2_memory_kib,
                          settings.portal_argon2_parallelism)

    async def work(conn) -> dict:  # noqa: ANN001
        async with conn.transaction():  # a user without the asked-for membership would be half done
            user = await services.create_user(conn, passwords, email, name or email.split("@", 1)[0], password)
            if org:
                await services.add_member_as_operator(conn, org, user["id"], role)
        return user

    user = _run(settings.central_dsn, work)
    typer.echo(f"created user {user['id']} <{user['email']}>" + (f", {role} of {org}" if org else ""))
    if generated:
        typer.echo(f"password: {password}")
