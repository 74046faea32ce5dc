"""Restore: one database from a backup run (or a single dump file) into an empty database.

The order of a restore, and why:

1. Find the dump and its checksum (the run's manifest, or `<file>.sha256` beside a dump copied
   out of its run), and check the file against it before anything touches the target: a
   restore from a corrupted file would fail halfway or, worse, succeed with wrong data.
2. Make sure the target is empty, creating the database (from template0, in the dump's
   encoding) when it does not exist. We never restore over data: merging a dump into a live
   database is not a restore, and `pg_restore --clean` on the wrong DSN destroys a database.
3. `pg_restore --single-transaction --exit-on-error`: all of it or nothing, so a failed restore
   leaves the target empty and can simply be run again.
4. ANALYZE, so the first queries after a restore get the planner statistics pg_dump does not
   carry, and, for a tenant database, verify the audit trail's hash chain.

The audit trail and its guards. The tenant's audit_change_log refuses every INSERT that does not
come from its own capture trigger (0006: a guard trigger that checks pg_trigger_depth()), and
UPDATE, DELETE and TRUNCATE outright (0002). A naive restore that creates the schema first and
then COPYs the rows back (`pg_restore --data-only` into a migrated database, or a plain COPY)
is refused by that guard, and `--disable-triggers` (which needs a superuser) would be the only
way around it. A full restore into an empty database needs neither: pg_dump puts CREATE TRIGGER
in the archive's post-data section, so pg_restore loads every table's rows, audit rows and
chain head included, before any trigger exists, then creates the triggers. This also means the
business tables' audit_capture triggers do not fire while their rows are loaded, so the restore
adds no audit rows of its own: the chain is restored byte for byte (every hash covers only the
row's own columns and its predecessor's hash, nothing about where it is stored) and `ygg audit
verify` passes on the copy. Once the triggers are created, the restored log is guarded exactly
as the original: the same UPDATE, DELETE and direct INSERT are refused.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from yggdrasil.db import dsn_with_database
from yggdrasil.ops.backup import (
    CHECKSUM_SUFFIX,
    MANIFEST_NAME,
    BackupError,
    DatabaseBackup,
    find_run,
    read_manifest,
    sha256_file,
)
from yggdrasil.ops.pgtools import client_dsn, database_name, dsn_without_password, find_pg_tool, first_line


class RestoreError(Exception):
    """The restore could not be done; the message is one line for the operator."""


@dataclass
class RestoreSource:
    file: Path
    sha256: str
    name: str                          # the backup's name (central, tenant-acme ...)
    run_id: str | None = None
    record: DatabaseBackup | None = None


def resolve_source(source: str, name: str | None, backup_dir: Path) -> RestoreSource:
    """`source` is a run id in backup_dir, a run folder, `latest`, or a dump file; `name` picks
    the database out of a run (it may be left out when the run has only one)."""
    path = Path(source)
    if path.is_file():
        return _source_from_file(path, name)
    try:
        run_dir = find_run(backup_dir, source)
        run = read_manifest(run_dir)
    except BackupError as exc:
        raise RestoreError(str(exc)) from None
    dumps = [db for db in run.databases if db.ok]
    if name is None:
        if len(dumps) != 1:
            names = ", ".join(db.name for db in dumps) or "none"
            raise RestoreError(f"run {run.run_id} holds {len(dumps)} dumps ({names}): say which with --database")
        record = dumps[0]
    else:
        record = run.database(name)
        if record is None:
            names = ", ".join(db.name for db in run.databases) or "none"
            raise RestoreError(f"run {run.run_id} has no backup of {name!r} (it has: {names})")
        if not record.ok:
            raise RestoreError(f"run {run.run_id}: the backup of {name!r} {record.status} at run time: {record.error}")
    return RestoreSource(run_dir / str(record.file), str(record.sha256), record.name, run.run_id, record)


def _source_from_file(path: Path, name: str | None) -> RestoreSource:
    # The run's manifest, when the file still sits in its run folder; else the checksum file
    # written beside every dump, so a dump copied off the host on its own can be checked too.
    manifest = path.parent / MANIFEST_NAME
    if manifest.is_file():
        try:
            run = read_manifest(path.parent)
        except BackupError as exc:
            raise RestoreError(str(exc)) from None
        record = next((db for db in run.databases if db.file == path.name), None)
        if record is not None and record.sha256:
            return RestoreSource(path, record.sha256, record.name, run.run_id, record)
    checksum_file = path.with_name(path.name + CHECKSUM_SUFFIX)
    if checksum_file.is_file():
        parts = checksum_file.read_text(encoding="utf-8").split()
        if not parts:
            raise RestoreError(f"{checksum_file} is empty: no checksum for {path}")
        return RestoreSource(path, parts[0], name or path.stem)
    raise RestoreError(f"no checksum for {path}: expected {MANIFEST_NAME} or {checksum_file.name} beside it")


@dataclass
class RestoreReport:
    source: RestoreSource
    target: str                   # the target DSN without its password
    created: bool
    tables: int
    duration_seconds: float
    audit_summary: str | None     # None: the database has no audit trail (ygg_central)
    audit_ok: bool = True


Step = Callable[[str], None]


def restore_database(
    source: RestoreSource,
    target_dsn: str,
    *,
    admin_dsn: str | None = None,
    pg_bin_dir: Path | None = None,
    no_owner: bool = False,
    on_step: Step | None = None,
) -> RestoreReport:
    """Restore `source` into the empty database `target_dsn` (created through `admin_dsn`, by
    default the same server's `postgres` database, when it does not exist). Raises RestoreError."""
    step = on_step or (lambda message: None)
    clock = time.monotonic()
    pg_restore = _tool("pg_restore", pg_bin_dir)

    step(f"checking {source.file.name} against its sha256")
    actual = sha256_file(source.file)
    if actual != source.sha256:
        raise RestoreError(f"{source.file}: sha256 {actual[:16]}... does not match the recorded "
                           f"{source.sha256[:16]}...: the backup is corrupted, nothing was restored")
    encoding = _archive_encoding(pg_restore, source.file)

    created = _prepare_empty_target(target_dsn, admin_dsn, encoding, step)
    step(f"restoring into {dsn_without_password(target_dsn)}")
    client = client_dsn(target_dsn)
    command = [str(pg_restore), "--single-transaction", "--exit-on-error", "--no-password",
               f"--dbname={client.conninfo}"]
    if no_owner:
        command += ["--no-owner", "--no-privileges"]
    restored = subprocess.run([*command, str(source.file)], capture_output=True, text=True, env=client.env)
    if restored.returncode != 0:
        reason = first_line(restored.stderr.replace("pg_restore: error:", ""))
        hint = " (a role the dump names is missing here: retry with --no-owner)" if "role" in reason and "does not exist" in reason else ""
        raise RestoreError(f"pg_restore failed, nothing was restored: {reason}{hint}")

    step("analyzing and checking the restored database")
    with psycopg.connect(target_dsn, autocommit=True, application_name="ygg-restore") as conn:
        conn.execute("ANALYZE")
        tables = _count_tables(conn)
        audit_summary, audit_ok = _verify_audit_trail(conn)
    return RestoreReport(source, dsn_without_password(target_dsn), created, tables,
                         round(time.monotonic() - clock, 3), audit_summary, audit_ok)


def _tool(name: str, pg_bin_dir: Path | None) -> Path:
    from yggdrasil.ops.pgtools import PgToolNotFound

    try:
        return find_pg_tool(name, pg_bin_dir)
    except PgToolNotFound as exc:
        raise RestoreError(str(exc)) from None


def _archive_encoding(pg_restore: Path, file: Path) -> str:
    listed = subprocess.run([str(pg_restore), "--list", str(file)], capture_output=True, text=True)
    if listed.returncode != 0:
        raise RestoreError(f"{file}: not a readable pg_dump archive: "
                           f"{first_line(listed.stderr.replace('pg_restore: error:', ''))}")
    for line in listed.stdout.splitlines():
        if line.startswith(";") and "Encoding:" in line:
            return line.split("Encoding:", 1)[1].strip()
    return "UTF8"


_USER_RELATIONS = """
    SELECT n.nspname || '.' || c.relname
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
     ORDER BY 1
"""


def _prepare_empty_target(target_dsn: str, admin_dsn: str | None, encoding: str, step: Step) -> bool:
    """Refuse a target that holds tables; create a missing one. True when it was created."""
    shown = dsn_without_password(target_dsn)
    try:
        with psycopg.connect(target_dsn, connect_timeout=10, autocommit=True) as conn:
            relations = [row[0] for row in conn.execute(_USER_RELATIONS).fetchall()]
    except psycopg.Error as exc:
        # A failed connection carries no SQLSTATE to tell "no such database" from "server down"
        # (and the server's message is localised), so we ask the server's catalogue instead.
        reason = first_line(str(exc))
        admin = admin_dsn or dsn_with_database(target_dsn, "postgres")
        if _database_missing(target_dsn, admin):
            return _create_target(target_dsn, admin, encoding, step)
        raise RestoreError(f"cannot connect to the target {shown}: {reason}") from None
    if relations:
        sample = ", ".join(relations[:5]) + (" ..." if len(relations) > 5 else "")
        raise RestoreError(f"the target database {database_name(target_dsn)!r} is not empty: it has "
                           f"{len(relations)} tables, sequences or views ({sample}); restore only "
                           f"into an empty or new database")
    return False


def _database_missing(target_dsn: str, admin_dsn: str) -> bool:
    name = database_name(target_dsn)
    try:
        with psycopg.connect(admin_dsn, connect_timeout=10, autocommit=True) as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
    except psycopg.Error:
        return False  # the server cannot tell us: the target's own error is the one to show


def _create_target(target_dsn: str, admin: str, encoding: str, step: Step) -> bool:
    name = database_name(target_dsn)
    if not name:
        raise RestoreError("the target DSN names no database (dbname)")
    step(f"creating database {name!r} through {dsn_without_password(admin)}")
    # template0, not template1: anything a site added to template1 would make the new database
    # non-empty, and template0 is the only template that accepts another encoding.
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {}").format(
        sql.Identifier(name), sql.Literal(encoding))
    try:
        with psycopg.connect(admin, connect_timeout=10, autocommit=True) as conn:
            conn.execute(statement)
    except psycopg.Error as exc:
        raise RestoreError(f"the target database {name!r} does not exist and could not be created through "
                           f"{dsn_without_password(admin)}: {first_line(str(exc))} (pass --admin-dsn)") from None
    return True


def _count_tables(conn: psycopg.Connection) -> int:
    row = conn.execute("""
        SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    """).fetchone()
    return int(row[0]) if row else 0


def _verify_audit_trail(conn: psycopg.Connection) -> tuple[str | None, bool]:
    if conn.execute("SELECT to_regclass('audit_change_log') IS NOT NULL").fetchone()[0] is not True:  # type: ignore[index]
        return None, True
    from yggdrasil.ops.audit import verify_audit_chain

    result = verify_audit_chain(conn)
    return result.summary(), result.ok
