"""`ygg sidecar ...`, `ygg partner ...` and `ygg keys ...`: the federation's command groups.

The root `cli.py` registers them: `app.add_typer(sidecar_app, name="sidecar")`,
`app.add_typer(partner_app, name="partner")`, `app.add_typer(keys_app, name="keys")`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from yggdrasil.settings import Settings

sidecar_app = typer.Typer(help="The federation sidecar: publishes the outbox, applies inbound events.",
                          no_args_is_help=True)
partner_app = typer.Typer(help="The partner registry: tenants we trade with, and their keys.", no_args_is_help=True)
keys_app = typer.Typer(help="This tenant's Ed25519 signing key.", no_args_is_help=True)

DsnOption = typer.Option(None, "--dsn", help="tenant database DSN (default: YGG_TENANT_DSN or ygg.toml)")


# A callback makes each app a command group even while it has one command, so that
# `ygg sidecar run` keeps its name (typer would otherwise collapse a one-command app).
@sidecar_app.callback()
def _sidecar() -> None:
    """The federation sidecar."""


@partner_app.callback()
def _partner() -> None:
    """The partner registry."""


@keys_app.callback()
def _keys() -> None:
    """The signing key."""


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@sidecar_app.command("run")
def sidecar_run(
    dsn: str = DsnOption,
    broker_url: str = typer.Option(None, "--broker-url", help="NATS URL (default: YGG_BROKER_URL)"),
    signing_key: Path = typer.Option(None, "--signing-key", help="private key file (default: YGG_SIGNING_KEY_PATH)"),
) -> None:
    """Run the sidecar until SIGTERM: publish pending outbox events, apply inbound ones."""
    import uvloop

    from yggdrasil.federation.keys import SigningKeyError, load_signing_key
    from yggdrasil.federation.sidecar import run_sidecar
    from yggdrasil.logs import configure_logging

    settings = _settings(tenant_dsn=dsn, broker_url=broker_url, signing_key_path=signing_key)
    configure_logging(f"sidecar:{settings.tenant_id}", settings.log_level, settings.log_json)
    try:
        key = load_signing_key(settings.signing_key_path)
    except SigningKeyError as exc:
        raise _fail(str(exc)) from None
    # libuv's loop: each event wakes the loop several times (fetch, database round trips, ack),
    # and uvloop spends less CPU per wake-up than asyncio's own (bench/RESULTS.md, session 6).
    uvloop.run(run_sidecar(settings, signing_key=key))


@partner_app.command("add")
def partner_add(
    tenant: str = typer.Option(..., "--tenant", help="the partner's tenant id"),
    public_key: str = typer.Option(..., "--public-key", help="the partner's Ed25519 public key, base64"),
    approval: str = typer.Option("approve", "--approval",
                                 help="auto: inbound orders create records at once; approve: they wait for a person"),
    name: str = typer.Option("", "--name", help="display name"),
    dsn: str = DsnOption,
) -> None:
    """Register a partner tenant (or replace its key and policy, and reactivate it)."""
    from yggdrasil.federation.partners import add_partner

    async def add() -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(_settings(tenant_dsn=dsn).tenant_dsn) as conn:
            partner = await add_partner(conn, tenant_id=tenant, public_key=public_key, name=name,
                                        approval_policy=approval)
        typer.echo(f"partner {partner.tenant_id}: key {partner.key_id}, approval {partner.approval_policy}")

    try:
        asyncio.run(add())
    except ValueError as exc:
        raise _fail(str(exc)) from None


@partner_app.command("map-item")
def partner_map_item(
    tenant: str = typer.Option(..., "--tenant", help="the partner's tenant id"),
    partner_sku: str = typer.Option(..., "--partner-sku", help="the SKU in the partner's events"),
    item_sku: str = typer.Option(..., "--item-sku", help="our item's SKU"),
    dsn: str = DsnOption,
) -> None:
    """Map a partner's SKU to one of our items, so its order lines apply without approval."""
    from yggdrasil.federation.partners import map_partner_item

    async def mapping() -> int:
        import psycopg

        async with await psycopg.AsyncConnection.connect(_settings(tenant_dsn=dsn).tenant_dsn) as conn:
            return await map_partner_item(conn, tenant_id=tenant, partner_sku=partner_sku, item_sku=item_sku)

    try:
        item_id = asyncio.run(mapping())
    except LookupError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{tenant} {partner_sku} -> item {item_id} ({item_sku})")


@keys_app.command("generate")
def keys_generate(
    out: Path = typer.Option(None, "--out", help="where to write the private key (default: YGG_SIGNING_KEY_PATH)"),
    force: bool = typer.Option(False, "--force", help="replace an existing key file"),
) -> None:
    """Write a new Ed25519 private key (mode 0600) and print its public key for partners."""
    from yggdrasil.events.signing import encode_public_key, generate_keypair, key_id
    from yggdrasil.federation.keys import SigningKeyError, write_signing_key

    path = out or _settings().signing_key_path
    if path is None:
        raise _fail("give --out or set YGG_SIGNING_KEY_PATH")
    private_key, public_key = generate_keypair()
    try:
        write_signing_key(path, private_key, overwrite=force)
    except SigningKeyError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"private key written to {path}", err=True)
    typer.echo(f"key id {key_id(public_key)}", err=True)
    typer.echo(encode_public_key(public_key))


@keys_app.command("show")
def keys_show(
    path: Path = typer.Option(None, "--path", help="the private key file (default: YGG_SIGNING_KEY_PATH)"),
) -> None:
    """Print the public key of this tenant's signing key, for partners to register."""
    from yggdrasil.events.signing import encode_public_key
    from yggdrasil.federation.keys import SigningKeyError, load_signing_key

    try:
        key = load_signing_key(path or _settings().signing_key_path)
    except SigningKeyError as exc:
        raise _fail(str(exc)) from None
    typer.echo(encode_public_key(key.public_key()))
