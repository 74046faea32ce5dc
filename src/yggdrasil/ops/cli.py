"""`ygg audit ...` (and later backup, restore, replay, reconcile, export)."""

from __future__ import annotations

import sys

import typer

audit_app = typer.Typer(help="Inspect and verify the tenant's audit trail.", no_args_is_help=True)

# Exit codes of `ygg audit verify`, for scripts and monitoring.
EXIT_INTACT, EXIT_TAMPERED, EXIT_UNREACHABLE = 0, 1, 2


@audit_app.command("verify")
def verify(
    dsn: str = typer.Option(None, "--dsn", help="tenant database DSN (default: YGG_TENANT_DSN or ygg.toml)"),
    progress: bool = typer.Option(None, "--progress/--no-progress",
                                  help="show a progress bar (default: when stderr is a terminal)"),
) -> None:
    """Recompute the audit trail's hash chain and report every row that was edited or removed.
    Exit code 0: intact; 1: tampered; 2: the database could not be read."""
    import psycopg

    from yggdrasil.ops.audit import verify_audit_chain
    from yggdrasil.settings import Settings

    dsn = dsn or Settings().tenant_dsn
    show_progress = sys.stderr.isatty() if progress is None else progress
    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True,
                             application_name="ygg-audit-verify") as conn:
            if show_progress:
                result = _verify_with_progress(conn)
            else:
                result = verify_audit_chain(conn)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        typer.echo(f"error: cannot verify the audit trail: {reason}", err=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None
    typer.echo(result.summary())
    for problem in result.problems:
        typer.echo(f"  seq {problem.seq} [{problem.kind}]: {problem.problem}")
    if result.problem_count > len(result.problems):
        typer.echo(f"  ... and {result.problem_count - len(result.problems)} more")
    raise typer.Exit(EXIT_INTACT if result.ok else EXIT_TAMPERED)


def _verify_with_progress(conn):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from yggdrasil.ops.audit import verify_audit_chain

    columns = (TextColumn("verifying audit trail"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("verify", total=None)

        def advance(checked: int, expected: int) -> None:
            bar.update(task, completed=checked, total=max(expected, checked))

        return verify_audit_chain(conn, on_progress=advance)
