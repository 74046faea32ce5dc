"""`ygg audit ...` (and later backup, restore, replay, reconcile, export)."""

from __future__ import annotations

import typer

audit_app = typer.Typer(help="Inspect and verify the tenant's audit trail.", no_args_is_help=True)
