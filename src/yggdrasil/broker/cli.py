"""`ygg broker check|ensure`: the running broker against the declaration in broker/streams.py.

Both connect as the broker's admin user (`YGG_BROKER_ADMIN_USER` / `YGG_BROKER_ADMIN_PASSWORD`;
tenants' credentials cannot read or change streams). The declaration is `declared_streams` with
this deployment's settings (max age, de-duplication window, replicas) and one durable consumer
per module for every tenant named with `--tenant`, plus every tenant whose consumers the broker
already has (a sidecar creates its own on first start): a consumer named like ours is checked
against our declaration for its tenant, whoever created it.

The root `cli.py` registers the group: `app.add_typer(broker_app, name="broker")`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import typer

from yggdrasil.settings import Settings

if TYPE_CHECKING:  # nats is imported when a command runs, not when `ygg` starts
    from nats.aio.client import Client as NatsClient
    from nats.js.client import JetStreamContext

    from yggdrasil.broker.streams import Drift

broker_app = typer.Typer(
    help="The NATS JetStream broker: compare or bring its streams and consumers to the declaration.",
    no_args_is_help=True,
)

# Exit codes, for scripts and monitoring.
EXIT_MATCHES, EXIT_DRIFT, EXIT_UNREACHABLE = 0, 1, 2
# How long a JetStream API request may take before the broker counts as unreachable.
REQUEST_TIMEOUT = 5.0


class BrokerUnreachable(Exception):
    """No connection, refused credentials, or no JetStream answering; the message says which."""


async def connect_admin(settings: Settings, *, timeout: float = 2.0) -> NatsClient:
    """One connection attempt per server, no reconnects: a check answers now or says why not.
    Raises BrokerUnreachable."""
    import nats
    from nats.errors import Error as NatsError

    async def quiet(error: Exception) -> None:
        # nats-py logs every connection error with a traceback by default; the caller reports
        # the one that matters in a single line.
        pass

    credentials = {}
    if settings.broker_admin_password:
        credentials = {"user": settings.broker_admin_user, "password": settings.broker_admin_password}
    servers = [url.strip() for url in settings.broker_url.split(",") if url.strip()]
    try:
        return await nats.connect(
            servers=servers, name="ygg-broker-admin", connect_timeout=timeout,
            allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0,
            error_cb=quiet, **credentials,
        )
    except (OSError, TimeoutError, NatsError) as exc:
        raise BrokerUnreachable(_reason(exc)) from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().strip("'\"")
    if "authorization" in text.lower():
        return "refused the admin credentials (check YGG_BROKER_ADMIN_USER / YGG_BROKER_ADMIN_PASSWORD)"
    if text.lower().startswith("nats: no servers"):
        return "unreachable (connection refused or timed out)"
    return f"unreachable ({text or type(exc).__name__})"


async def _survey(js: JetStreamContext) -> tuple[set[str], list[Drift]]:
    """The tenants that have consumers on our streams, and the consumers there that are not ours."""
    from nats.js.errors import NotFoundError

    from yggdrasil.broker.streams import Drift, durable_tenant, stream_name
    from yggdrasil.broker.subjects import MODULES

    tenants: set[str] = set()
    foreign: list[Drift] = []
    for module in MODULES:
        stream = stream_name(module)
        try:
            infos = await js.consumers_info(stream)
        except NotFoundError:
            continue  # reported as a missing stream
        for info in infos:
            tenant = durable_tenant(info.name, module)
            if tenant is None:
                # Someone else's consumer on our stream: it may read every tenant's events.
                foreign.append(Drift("consumer", f"{stream}/{info.name}", "exists", False, True))
            else:
                tenants.add(tenant)
    return tenants, foreign


async def find_drift(
    js: JetStreamContext, settings: Settings, tenants: Sequence[str] = ()
) -> tuple[list[Drift], list[str]]:
    """Every difference between the running broker and the declaration (see the module doc),
    and the tenants whose consumers were checked. Raises BrokerUnreachable when JetStream does
    not answer."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.errors import ServiceUnavailableError

    from yggdrasil.broker.streams import check_streams, declared_consumers, declared_streams_for

    try:
        found, foreign = await _survey(js)
        checked = sorted(set(tenants) | found)
        drifts = await check_streams(js, declared_streams_for(settings), declared_consumers(checked))
    except (NatsTimeoutError, TimeoutError, NoRespondersError, ServiceUnavailableError) as exc:
        raise BrokerUnreachable(
            f"JetStream did not answer ({type(exc).__name__}): is JetStream enabled, "
            "and are these the admin credentials?"
        ) from None
    return drifts + foreign, checked


async def _check(settings: Settings, tenants: Sequence[str]) -> int:
    nc = await connect_admin(settings)
    try:
        drifts, checked = await find_drift(nc.jetstream(timeout=REQUEST_TIMEOUT), settings, tenants)
    finally:
        await nc.close()
    for drift in drifts:
        typer.echo(str(drift))
    if drifts:
        typer.echo(f"{len(drifts)} difference(s) from the declaration", err=True)
        return EXIT_DRIFT
    typer.echo(_matches(settings, checked))
    return EXIT_MATCHES


def _matches(settings: Settings, tenants: Sequence[str]) -> str:
    of = f" (consumers of {', '.join(tenants)})" if tenants else ""
    return f"broker {settings.broker_url}: streams and consumers as declared{of}"


async def _ensure(settings: Settings, tenants: Sequence[str]) -> int:
    from nats.js.errors import APIError

    from yggdrasil.broker.streams import declared_consumers, declared_streams_for, ensure_consumers, ensure_streams

    nc = await connect_admin(settings)
    try:
        js = nc.jetstream(timeout=REQUEST_TIMEOUT)
        before, checked = await find_drift(js, settings, tenants)
        try:
            await ensure_streams(js, declared_streams_for(settings))
            # Named tenants, and those whose consumers exist already (brought back to the
            # declaration if they drifted).
            await ensure_consumers(js, declared_consumers(checked))
        except APIError as exc:
            typer.echo(f"error: the broker refused a change: {exc.description or exc}", err=True)
            return EXIT_DRIFT
        after, checked = await find_drift(js, settings, tenants)
    finally:
        await nc.close()
    remaining = {str(d) for d in after}
    for drift in before:
        if str(drift) not in remaining:
            typer.echo(f"fixed: {drift}")
    for drift in after:
        typer.echo(f"not fixed: {drift}")
    if after:
        return EXIT_DRIFT
    typer.echo(_matches(settings, checked))
    return EXIT_MATCHES


def _run(
    command: Callable[[Settings, Sequence[str]], Awaitable[int]],
    url: str | None, user: str | None, password: str | None, tenants: list[str],
) -> int:
    from yggdrasil.broker.subjects import InvalidSubject, validate_tenant_id

    overrides = {"broker_url": url, "broker_admin_user": user, "broker_admin_password": password}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    try:
        for tenant in tenants:
            validate_tenant_id(tenant)
    except InvalidSubject as exc:
        typer.echo(f"error: {exc}", err=True)
        return EXIT_UNREACHABLE
    try:
        return asyncio.run(command(settings, tenants))
    except BrokerUnreachable as exc:
        typer.echo(f"error: broker {settings.broker_url}: {exc}", err=True)
        return EXIT_UNREACHABLE


UrlOption = typer.Option(None, "--url", help="NATS URL(s), comma-separated (default: YGG_BROKER_URL)")
UserOption = typer.Option(None, "--user", help="admin user (default: YGG_BROKER_ADMIN_USER, ygg_admin)")
PasswordOption = typer.Option(None, "--password", help="admin password (default: YGG_BROKER_ADMIN_PASSWORD)")
TenantOption = typer.Option(
    [], "--tenant",
    help="a tenant whose consumers must exist (repeat for several); consumers that exist are checked anyway",
)


@broker_app.command("check")
def check(url: str = UrlOption, user: str = UserOption, password: str = PasswordOption,
          tenant: list[str] = TenantOption) -> None:
    """Compare the running broker's streams and consumers with the declaration.

    Prints one line per difference.
    Exit code 0: as declared; 1: drift; 2: broker unreachable, credentials refused or no JetStream."""
    raise typer.Exit(_run(_check, url, user, password, tenant))


@broker_app.command("ensure")
def ensure(url: str = UrlOption, user: str = UserOption, password: str = PasswordOption,
           tenant: list[str] = TenantOption) -> None:
    """Create missing streams and consumers and bring drifted ones back to the declaration.

    Prints what it fixed and what it could not (consumers that are not ours are left alone).
    Exit code 0: as declared now; 1: drift remains; 2: broker unreachable."""
    raise typer.Exit(_run(_ensure, url, user, password, tenant))
