"""`ygg`: the one command. Each component contributes its own command group."""

from __future__ import annotations

import typer

from yggdrasil import __version__
from yggdrasil.broker.cli import broker_app
from yggdrasil.devstack.cli import demo
from yggdrasil.federation.cli import keys_app, partner_app, sidecar_app
from yggdrasil.mesh.cli import mesh_app
from yggdrasil.ops.cli import audit_app, backup_app, replay, restore
from yggdrasil.portal.cli import app as portal_app
from yggdrasil.tenant.cli import app as tenant_app

app = typer.Typer(
    help="Yggdrasil: a federated ERP. Each company runs its own tenant server and PostgreSQL; "
    "orders cross companies as signed events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(tenant_app, name="tenant")
app.add_typer(audit_app, name="audit")
app.add_typer(backup_app, name="backup")
app.command("restore")(restore)
app.command("replay")(replay)
app.add_typer(sidecar_app, name="sidecar")
app.add_typer(partner_app, name="partner")
app.add_typer(keys_app, name="keys")
app.add_typer(broker_app, name="broker")
app.add_typer(portal_app, name="portal")
app.add_typer(mesh_app, name="mesh")
app.command()(demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version")) -> None:
    """Yggdrasil command line."""


def main() -> None:
    app()
