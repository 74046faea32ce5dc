"""`ygg audit ...`, `ygg backup ...`, `ygg restore` and `ygg replay` (and later reconcile, export)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

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


# -- backups ---------------------------------------------------------------------------------------

backup_app = typer.Typer(
    help="Back up the central and tenant databases (pg_dump), and list, verify, prune and schedule backups.",
    no_args_is_help=True,
)

# Exit codes of `ygg backup ...` and `ygg restore`: 0 all good; 1 a backup failed or is bad, or
# the restore failed or was refused; 2 usage or environment (no pg_dump, no such run).
EXIT_OK, EXIT_BAD, EXIT_USAGE = 0, 1, 2

DirOption = typer.Option(None, "--dir", help="the backup folder (default: backup_dir, YGG_BACKUP_DIR)")
DatabaseOption = typer.Option(
    None, "--database",
    help="NAME=DSN of a database to back up; repeat for several (default: backup_databases, or "
         "central=central_dsn and tenant-<tenant_id>=tenant_dsn)")


def _consoles():
    from rich.console import Console

    # soft_wrap: a long DSN or error stays one line in a log file instead of being folded at 80.
    return Console(soft_wrap=True, highlight=False), Console(stderr=True, soft_wrap=True, highlight=False)


def _fail(message: str, code: int) -> typer.Exit:
    _, err = _consoles()
    err.print(f"error: {message}", markup=False, style="red")
    return typer.Exit(code)


def _targets(settings, databases: list[str] | None):
    from yggdrasil.ops.backup import BackupError, default_targets, parse_target

    try:
        targets = [parse_target(option) for option in databases] if databases else default_targets(settings)
    except BackupError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(f"backup name(s) given twice: {', '.join(duplicates)}", EXIT_USAGE)
    return targets


def _stop_on_signals():
    """An event set by SIGTERM or SIGINT: a run in progress then ends its dump, removes the
    partial file and records the run as cancelled, instead of dying with a traceback."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stop.set())
    return stop


def _backup_dir(settings, folder: Path | None) -> Path:
    return Path(folder) if folder is not None else Path(settings.backup_dir)


@backup_app.command("run")
def backup_run(databases: list[str] = DatabaseOption, folder: Path = DirOption) -> None:
    """Back up each database now: pg_dump, sha256 checksums, a manifest, then pruning.

    Each database is dumped (custom format) into a new run folder named by its UTC start time.
    When every dump succeeded, runs older than backup_retention_days are pruned.
    Exit code 0: all dumped; 1: a database failed (the others still ran); 2: usage or environment."""
    from yggdrasil.ops.backup import BackupError, human_bytes, run_backup
    from yggdrasil.ops.pgtools import PgToolNotFound
    from yggdrasil.settings import Settings

    settings = Settings()
    targets = _targets(settings, databases)
    out, err = _consoles()

    def started(target) -> None:
        from yggdrasil.ops.pgtools import dsn_without_password

        out.print(f"backing up {target.name} ({dsn_without_password(target.dsn)}) ...", markup=False)

    def finished(db) -> None:
        if db.ok:
            out.print(f"  ok {db.name}: {human_bytes(db.bytes)} in {db.duration_seconds:.1f} s, "
                      f"sha256 {db.sha256[:16]}...", markup=False, style="green")
        else:
            err.print(f"error: {db.name}: {db.error}", markup=False, style="red")

    stop = _stop_on_signals()
    try:
        run = run_backup(targets, _backup_dir(settings, folder), pg_bin_dir=settings.pg_bin_dir,
                         retention_days=settings.backup_retention_days, stop=stop,
                         on_started=started, on_finished=finished)
    except (BackupError, PgToolNotFound) as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    failed = [db.name for db in run.databases if not db.ok]
    summary = f"run {run.run_id} {run.status}: {len(run.databases) - len(failed)} of {len(run.databases)} " \
              f"databases backed up in {run.duration_seconds:.1f} s -> {run.path}"
    if failed:
        err.print(summary + f" (failed: {', '.join(failed)})", markup=False, style="red")
        raise typer.Exit(EXIT_BAD)
    out.print(summary, markup=False)


@backup_app.command("list")
def backup_list(folder: Path = DirOption) -> None:
    """List the backup runs, oldest first: age, size, status and databases of each."""
    from rich.table import Table

    from yggdrasil.ops.backup import human_age, human_bytes, list_runs, utc_now
    from yggdrasil.settings import Settings

    backup_dir = _backup_dir(Settings(), folder)
    runs = list_runs(backup_dir)
    out, _ = _consoles()
    if not runs:
        out.print(f"no backup runs in {backup_dir}", markup=False)
        return
    table = Table("run", "age", "size", "status", "databases", box=None, pad_edge=False)
    now = utc_now()
    for run in runs:
        dbs = ", ".join(f"{db.name}{'' if db.ok else ' (' + db.status + ')'}" for db in run.databases) or (run.problem or "")
        style = "green" if run.ok else "red"
        table.add_row(run.run_id, human_age(now - run.started_at), human_bytes(run.bytes), f"[{style}]{run.status}[/]",
                      _escape(dbs))
    out.print(table)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@backup_app.command("verify")
def backup_verify(
    run: str = typer.Argument(None, help="a run id, run folder or `latest` (default: every finished run)"),
    folder: Path = DirOption,
) -> None:
    """Check backups: each dump's size and sha256 against the manifest, and `pg_restore --list`.

    Exit code 0: all good; 1: a backup is bad (named, with the reason); 2: usage or environment."""
    from yggdrasil.ops.backup import BackupError, VerifyResult, find_run, list_runs, verify_run
    from yggdrasil.ops.pgtools import PgToolNotFound
    from yggdrasil.settings import Settings

    settings = Settings()
    backup_dir = _backup_dir(settings, folder)
    out, err = _consoles()
    try:
        run_dirs = [find_run(backup_dir, run)] if run else [r.path for r in list_runs(backup_dir)]
        if not run_dirs:
            raise BackupError(f"no backup runs in {backup_dir}")
        result = VerifyResult()
        for run_dir in run_dirs:
            verify_run(run_dir, pg_bin_dir=settings.pg_bin_dir, named=run is not None, result=result)
    except (BackupError, PgToolNotFound) as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    for line in result.checked:
        out.print(f"ok {line}", markup=False, style="green")
    for line in result.skipped:
        out.print(f"skipped {line}", markup=False, style="yellow")
    for problem in result.problems:
        err.print(f"BAD {problem}", markup=False, style="red")
    if not result.ok:
        err.print(f"{len(result.problems)} bad backup(s), {len(result.checked)} good", markup=False, style="red")
        raise typer.Exit(EXIT_BAD)
    if not result.checked:
        err.print(f"BAD {backup_dir}: not one successful backup to verify", markup=False, style="red")
        raise typer.Exit(EXIT_BAD)
    out.print(f"all {len(result.checked)} backup file(s) verified", markup=False)


@backup_app.command("prune")
def backup_prune(
    folder: Path = DirOption,
    retention_days: float = typer.Option(None, "--retention-days", min=0.0,
                                         help="keep runs younger than this (default: backup_retention_days, 14)"),
) -> None:
    """Delete backup runs older than the retention; the newest successful run is always kept."""
    from yggdrasil.ops.backup import prune_runs
    from yggdrasil.settings import Settings

    settings = Settings()
    backup_dir = _backup_dir(settings, folder)
    days = settings.backup_retention_days if retention_days is None else retention_days
    deleted = prune_runs(backup_dir, days)
    out, _ = _consoles()
    for run in deleted:
        out.print(f"deleted {run.run_id} ({run.status})", markup=False)
    out.print(f"pruned {len(deleted)} run(s) older than {days:g} days from {backup_dir}", markup=False)


@backup_app.command("schedule")
def backup_schedule(
    databases: list[str] = DatabaseOption,
    folder: Path = DirOption,
    at: str = typer.Option(None, "--at", help="daily run time, HH:MM[:SS] UTC (default: backup_time_utc, 03:00)"),
) -> None:
    """Run forever: a backup and pruning every day at the configured UTC time.

    A failed run is retried with backoff (backup_retry_attempts), then left to the next day.
    SIGTERM or SIGINT stops it cleanly (a dump in progress is abandoned, its file removed)."""
    import logging

    from yggdrasil.logs import configure_logging
    from yggdrasil.ops.backup import BackupError, run_backup
    from yggdrasil.ops.pgtools import PgToolNotFound, dsn_without_password
    from yggdrasil.ops.schedule import parse_time_of_day, run_scheduler
    from yggdrasil.settings import Settings

    settings = Settings()
    targets = _targets(settings, databases)
    try:
        time_of_day = parse_time_of_day(at or settings.backup_time_utc)
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    backup_dir = _backup_dir(settings, folder)
    configure_logging("backup", settings.log_level, settings.log_json)
    log = logging.getLogger("yggdrasil.ops.backup")
    stop = _stop_on_signals()

    def finished(db) -> None:
        if db.status == "cancelled":
            log.warning("backup of %s cancelled: %s", db.name, db.error, extra={"database": db.name})
        elif db.ok:
            log.info("backed up %s: %d bytes in %.1f s", db.name, db.bytes, db.duration_seconds,
                     extra={"database": db.name, "bytes": db.bytes, "sha256": db.sha256})
        else:
            log.error("backup of %s %s: %s", db.name, db.status, db.error, extra={"database": db.name})

    def run_once() -> bool:
        log.info("backup run starting: %s", ", ".join(f"{t.name} ({dsn_without_password(t.dsn)})" for t in targets))
        try:
            run = run_backup(targets, backup_dir, pg_bin_dir=settings.pg_bin_dir,
                             retention_days=settings.backup_retention_days, stop=stop, on_finished=finished)
        except (BackupError, PgToolNotFound) as exc:
            log.error("backup run failed: %s", exc)
            return False
        level = logging.INFO if run.ok else logging.WARNING if run.status == "cancelled" else logging.ERROR
        log.log(level, "backup run %s %s in %.1f s", run.run_id, run.status, run.duration_seconds,
                extra={"run_id": run.run_id, "status": run.status})
        return run.ok

    run_scheduler(run_once, time_of_day, stop, retry_attempts=settings.backup_retry_attempts,
                  retry_initial_seconds=settings.backup_retry_initial_seconds)


# -- restore ---------------------------------------------------------------------------------------

def restore(
    source: str = typer.Option(..., "--from", help="a run id, run folder, `latest`, or a .dump file"),
    database: str = typer.Option(None, "--database", help="which backup of the run to restore (central, tenant-<id> ...)"),
    dsn: str = typer.Option(..., "--dsn", help="the target database; it must be empty or not exist yet"),
    admin_dsn: str = typer.Option(None, "--admin-dsn",
                                  help="where to CREATE the target database if it does not exist "
                                       "(default: the target server's `postgres` database)"),
    folder: Path = DirOption,
    no_owner: bool = typer.Option(False, "--no-owner", help="do not restore object owners and grants "
                                                            "(when the dump's roles do not exist on the target)"),
) -> None:
    """Restore a database from a backup into an empty or new database, after checking its sha256.

    Reports the duration and, for a tenant database, whether the audit trail verifies.
    Exit code 0: restored; 1: refused or failed (nothing restored) or the audit trail does not verify."""
    from yggdrasil.ops.restore import RestoreError, resolve_source, restore_database
    from yggdrasil.settings import Settings

    settings = Settings()
    out, err = _consoles()
    try:
        chosen = resolve_source(source, database, _backup_dir(settings, folder))
        out.print(f"restoring {chosen.name} from {chosen.file}", markup=False)
        report = restore_database(chosen, dsn, admin_dsn=admin_dsn, pg_bin_dir=settings.pg_bin_dir,
                                  no_owner=no_owner, on_step=lambda step: out.print(f"  {step}", markup=False))
    except RestoreError as exc:
        raise _fail(str(exc), EXIT_BAD) from None
    out.print(f"restored {chosen.name} into {report.target}{' (created)' if report.created else ''}: "
              f"{report.tables} tables in {report.duration_seconds:.1f} s", markup=False, style="green")
    if report.audit_summary is not None:
        (out if report.audit_ok else err).print(report.audit_summary, markup=False,
                                                style="green" if report.audit_ok else "red")
    if not report.audit_ok:
        raise typer.Exit(EXIT_BAD)


# -- replay ----------------------------------------------------------------------------------------

# Exit codes of `ygg replay`: 0 marked (or counted, with --dry-run), also when there was nothing
# to mark; 2 usage, a destination that is not a partner, or the database could not be reached.
EXIT_REPLAY_USAGE = 2


def replay(
    destination: str = typer.Option(..., "--to", help="the partner tenant to send the events to again"),
    since: datetime = typer.Option(
        None, "--since", formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f",
                                  "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%d %H:%M:%S"],
        help="only events the partner answered at or after this time, or has not answered (UTC unless "
             "it has an offset); for a partner restored from a backup, the time the backup was taken"),
    orders: list[str] = typer.Option(None, "--order", help="only this order's events: the id of our sales or "
                                                           "purchase order (as in /api/v1/sales-orders/{id}); "
                                                           "repeat for several"),
    modules: list[str] = typer.Option(None, "--module", help="sales or purchasing (default: both); repeatable"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would be sent again, mark nothing"),
    dsn: str = typer.Option(None, "--dsn", help="tenant database DSN (default: YGG_TENANT_DSN or ygg.toml)"),
) -> None:
    """Send a partner again, from this tenant's outbox, the order events it already had.

    For a partner restored from a backup: it lost what it applied since, and nothing else sends it again.

    The rows are marked; the sidecar's publisher sends them in outbox order under new message ids.
    The partner's inbox drops what it still has.

    Exit code 0: marked (or counted); 2: usage, not a partner, or the database could not be reached."""
    import psycopg

    from yggdrasil.ops.replay import ORDER_MODULES, ReplayRefused, ReplayScope, replay_to_partner
    from yggdrasil.settings import Settings

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    scope = ReplayScope(destination, since, tuple(orders or ()), tuple(modules or ORDER_MODULES))
    out, err = _consoles()
    try:
        with psycopg.connect(dsn or Settings().tenant_dsn, connect_timeout=5, autocommit=True,
                             application_name="ygg-replay") as conn:
            result = replay_to_partner(conn, scope, dry_run=dry_run, on_progress=_replay_progress(err))
    except ReplayRefused as exc:
        raise _fail(str(exc), EXIT_REPLAY_USAGE) from None
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(f"cannot replay: {reason}", EXIT_REPLAY_USAGE) from None
    out.print(result.summary(), markup=False)


def _replay_progress(err):
    """A line on stderr per 10,000 events marked, for a long history; nothing for a short one."""
    reported = [0]

    def progress(total: int) -> None:
        if total // 10_000 > reported[0] // 10_000:
            err.print(f"  {total:,} events so far", markup=False)
        reported[0] = total

    return progress
