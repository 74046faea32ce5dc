"""Backups: pg_dump runs with checksums and a manifest, listing, verification and pruning.

A backup run dumps each database it is given (by default the coordination plane's `ygg_central`
and this host's tenant database) into one folder named by the run's UTC start time:

    <backup_dir>/20250301T030000Z/
        manifest.json              what was dumped, from where, when, how big, its sha256
        central.dump               pg_dump custom format (-Fc): compressed, restorable per table
        central.dump.sha256        the same checksum in `sha256sum -c` format, for a file
        tenant-acme.dump           copied away from its run folder
        tenant-acme.dump.sha256

Each dump is written under a temporary name and renamed into place only when pg_dump has
succeeded and the bytes are on disk, so a `.dump` file is always a whole dump. The manifest is
written last, the same way: a run folder without one is a run that did not finish.

pg_dump reads each database in one REPEATABLE READ snapshot, so a dump is consistent on its own:
the audit trail, its chain head and the business rows it describes are from the same instant.
Databases of one run are dumped one after another and are not consistent with each other (no
tool can give that across servers); the federation's replay and reconciliation close that gap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg

from yggdrasil import __version__
from yggdrasil.files import fsync_folder, replace_file
from yggdrasil.ops.pgtools import (
    client_dsn,
    database_name,
    dsn_without_password,
    find_pg_tool,
    first_line,
    tool_version,
)

log = logging.getLogger(__name__)

RUN_ID_FORMAT = "%Y%m%dT%H%M%SZ"
# A run folder's name: its UTC start second, with a counter when two runs start in one second.
RUN_ID_PATTERN = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")
# A backup name becomes a file name, so it is kept to characters that are safe in one.
BACKUP_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
DUMP_SUFFIX = ".dump"
CHECKSUM_SUFFIX = ".sha256"
_CHUNK = 1024 * 1024
# pg_dump waits this long for a table lock (a migration holding ACCESS EXCLUSIVE, say) before it
# fails; a failed run is retried, a hung one would block every later night.
PG_DUMP_LOCK_WAIT = "300s"


class BackupError(Exception):
    """A backup could not be taken, listed or read; the message is one line for the operator."""


# -- what to back up ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupTarget:
    name: str   # the backup's name: its file name and what `ygg restore --database` asks for
    dsn: str


def parse_target(option: str) -> BackupTarget:
    """`NAME=DSN`, as given to `ygg backup run --database`."""
    name, sep, dsn = option.partition("=")
    name, dsn = name.strip(), dsn.strip()
    if not sep or not dsn:
        raise BackupError(f"--database {option!r}: expected NAME=DSN, e.g. central=postgresql://host/ygg_central")
    check_backup_name(name)
    return BackupTarget(name, dsn)


def check_backup_name(name: str) -> None:
    if not BACKUP_NAME_PATTERN.match(name):
        raise BackupError(f"backup name {name!r} is not usable as a file name: use letters, digits, '.', '_', '-'")


def default_targets(settings: Any) -> list[BackupTarget]:
    """`backup_databases` from the settings, or else the central and this tenant's database."""
    if settings.backup_databases:
        targets = [BackupTarget(name, dsn) for name, dsn in settings.backup_databases.items()]
    else:
        targets = [BackupTarget("central", settings.central_dsn),
                   BackupTarget(f"tenant-{settings.tenant_id}", settings.tenant_dsn)]
    for target in targets:
        check_backup_name(target.name)
    return targets


# -- the manifest -----------------------------------------------------------------------------------

@dataclass
class DatabaseBackup:
    """One database's dump in a run, as the manifest records it."""

    name: str
    source: str                      # the DSN it was dumped from, without the password
    database: str | None             # the PostgreSQL database name
    status: str                      # ok | failed | cancelled
    started_at: str
    finished_at: str
    duration_seconds: float
    file: str | None = None          # relative to the run folder
    bytes: int | None = None
    sha256: str | None = None
    server_version: str | None = None
    pg_dump_version: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatabaseBackup:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class BackupRun:
    run_id: str
    path: Path
    started_at: str
    finished_at: str | None = None
    duration_seconds: float | None = None
    status: str = "running"          # ok | partial | failed | cancelled
    host: str = field(default_factory=socket.gethostname)
    databases: list[DatabaseBackup] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def manifest(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "tool": f"yggdrasil {__version__}",
            "run_id": self.run_id,
            "host": self.host,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_seconds": self.duration_seconds,
            "status": self.status,
            "databases": [asdict(db) for db in self.databases],
        }

    def database(self, name: str) -> DatabaseBackup | None:
        return next((db for db in self.databases if db.name == name), None)


def read_manifest(run_dir: Path) -> BackupRun:
    """The run recorded in `run_dir/manifest.json`. Raises BackupError when it is missing or unreadable."""
    path = run_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != MANIFEST_FORMAT:
            raise BackupError(f"{path}: unknown manifest format {data.get('format')!r}")
        return BackupRun(
            run_id=data["run_id"], path=run_dir, started_at=data["started_at"],
            finished_at=data.get("finished_at"), duration_seconds=data.get("duration_seconds"),
            status=data["status"], host=data.get("host", ""),
            databases=[DatabaseBackup.from_dict(db) for db in data["databases"]],
        )
    except FileNotFoundError:
        raise BackupError(f"{run_dir.name}: no {MANIFEST_NAME}: the run did not finish") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"{path}: unreadable manifest ({type(exc).__name__}: {exc})") from None


# -- taking a backup --------------------------------------------------------------------------------

def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_started_at(run_id: str) -> datetime | None:
    match = RUN_ID_PATTERN.match(run_id)
    if not match:
        return None
    return datetime.strptime(match[1], RUN_ID_FORMAT).replace(tzinfo=timezone.utc)


def create_run_dir(backup_dir: Path, now: datetime) -> tuple[str, Path]:
    """A new, empty run folder named by `now`; mkdir without exist_ok makes two runs that start
    in the same second (two hosts sharing a folder, a retry) take different names."""
    backup_dir.mkdir(parents=True, exist_ok=True)
    base = now.astimezone(timezone.utc).strftime(RUN_ID_FORMAT)
    for counter in range(0, 1000):
        run_id = base if counter == 0 else f"{base}-{counter}"
        try:
            (backup_dir / run_id).mkdir()
            return run_id, backup_dir / run_id
        except FileExistsError:
            continue
    raise BackupError(f"cannot create a run folder in {backup_dir}: too many runs named {base}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


OnStarted = Callable[[BackupTarget], None]
OnFinished = Callable[[DatabaseBackup], None]


def run_backup(
    targets: Iterable[BackupTarget],
    backup_dir: Path,
    *,
    pg_bin_dir: Path | None = None,
    retention_days: float | None = None,
    stop: threading.Event | None = None,
    on_started: OnStarted | None = None,
    on_finished: OnFinished | None = None,
) -> BackupRun:
    """Dump every target into a new run folder and write its manifest. A database that cannot
    be dumped is recorded as failed and the others still run. With `retention_days`, runs older
    than that are pruned afterwards, but only when every database of this run succeeded.
    Raises BackupError only when no run can be made at all (no pg_dump, folder not writable)."""
    pg_dump = find_pg_tool("pg_dump", pg_bin_dir)
    pg_dump_version = tool_version(pg_dump)
    stop = stop or threading.Event()
    started = utc_now()
    clock = time.monotonic()
    try:
        run_id, run_dir = create_run_dir(Path(backup_dir), started)
    except OSError as exc:
        raise BackupError(f"cannot create a run folder in {backup_dir}: {exc.strerror or exc}") from None
    run = BackupRun(run_id=run_id, path=run_dir, started_at=iso(started))
    targets = list(targets)
    for target in targets:
        if stop.is_set():
            break
        if on_started:
            on_started(target)
        result = dump_database(target, run_dir, pg_dump, pg_dump_version, stop)
        run.databases.append(result)
        if on_finished:
            on_finished(result)
    run.finished_at = iso(utc_now())
    run.duration_seconds = round(time.monotonic() - clock, 3)
    cut_short = len(run.databases) < len(targets) or any(db.status == "cancelled" for db in run.databases)
    run.status = _run_status(run, cancelled=cut_short)
    replace_file(run_dir / MANIFEST_NAME, json.dumps(run.manifest(), indent=2) + "\n", mode=0o666)
    if retention_days is not None and run.ok:
        prune_runs(Path(backup_dir), retention_days)
    return run


def _run_status(run: BackupRun, cancelled: bool) -> str:
    if cancelled:
        return "cancelled"
    succeeded = sum(db.ok for db in run.databases)
    if run.databases and succeeded == len(run.databases):
        return "ok"
    return "partial" if succeeded else "failed"


def dump_database(
    target: BackupTarget, run_dir: Path, pg_dump: Path, pg_dump_version: str, stop: threading.Event,
) -> DatabaseBackup:
    """pg_dump one database into `run_dir/<name>.dump`. Never raises for the database's sake:
    an unreachable or missing database comes back as a failed DatabaseBackup with the reason."""
    started = utc_now()
    clock = time.monotonic()
    record = DatabaseBackup(
        name=target.name, source=dsn_without_password(target.dsn), database=database_name(target.dsn),
        status="failed", started_at=iso(started), finished_at=iso(started), duration_seconds=0.0,
        pg_dump_version=pg_dump_version,
    )
    final = run_dir / f"{target.name}{DUMP_SUFFIX}"
    partial = run_dir / f".{final.name}.partial"
    try:
        record.server_version = _server_version(target.dsn)
        size, digest = _run_pg_dump(pg_dump, target.dsn, partial, stop)
        os.replace(partial, final)
        (run_dir / f"{final.name}{CHECKSUM_SUFFIX}").write_text(f"{digest}  {final.name}\n", encoding="utf-8")
        fsync_folder(run_dir)
        record.status, record.file, record.bytes, record.sha256 = "ok", final.name, size, digest
    except _Cancelled:
        record.status, record.error = "cancelled", "stopped before the dump finished"
    except BackupError as exc:
        record.error = str(exc)
    except OSError as exc:
        record.error = f"cannot write {partial}: {exc.strerror or exc}"
    finally:
        partial.unlink(missing_ok=True)
        record.finished_at = iso(utc_now())
        record.duration_seconds = round(time.monotonic() - clock, 3)
    return record


class _Cancelled(Exception):
    pass


def _server_version(dsn: str) -> str:
    # A plain connection first: it fails in a second with the server's own words ("database
    # ... does not exist", "password authentication failed") where pg_dump's are longer.
    try:
        with psycopg.connect(dsn, connect_timeout=10, autocommit=True, application_name="ygg-backup") as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    except psycopg.Error as exc:
        reason = first_line(str(exc)) or type(exc).__name__
        raise BackupError(f"cannot connect to {dsn_without_password(dsn)}: {reason}") from None


def _run_pg_dump(pg_dump: Path, dsn: str, destination: Path, stop: threading.Event) -> tuple[int, str]:
    """Run pg_dump -Fc into `destination`; returns (bytes, sha256). pg_dump writes the file
    itself rather than through a pipe: only on a seekable file does it go back and record each
    table's data offset in the archive's table of contents, which a parallel or selective
    pg_restore needs. The checksum then costs a second read, which the page cache mostly serves."""
    client = client_dsn(dsn)
    command = [str(pg_dump), "--format=custom", "--no-password", f"--lock-wait-timeout={PG_DUMP_LOCK_WAIT}",
               f"--file={destination}", f"--dbname={client.conninfo}"]
    # stderr goes to a file: a pipe nobody reads while we wait could fill and stall pg_dump.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=client.env)
        try:
            while process.poll() is None:
                if stop.wait(0.2):
                    raise _Cancelled()
        except BaseException:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise
        if process.returncode != 0:
            errors.seek(0)
            message = first_line(errors.read().decode("utf-8", "replace").replace("pg_dump: error:", ""))
            raise BackupError(f"pg_dump failed (exit {process.returncode}): {message or 'no message'}")
    with open(destination, "rb") as written:
        os.fsync(written.fileno())
    return destination.stat().st_size, sha256_file(destination)


# -- listing, verifying, pruning -------------------------------------------------------------------

@dataclass
class RunSummary:
    run_id: str
    path: Path
    started_at: datetime
    status: str            # the manifest's status, or incomplete / unreadable
    bytes: int
    databases: list[DatabaseBackup]
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def list_runs(backup_dir: Path) -> list[RunSummary]:
    """Every run folder in `backup_dir`, oldest first. A run's age is its folder name (its UTC
    start second), which holds even for a run whose manifest is missing. Folders not named like
    a run are not ours and are left out (and so never pruned)."""
    if not backup_dir.is_dir():
        return []
    runs = []
    for entry in backup_dir.iterdir():
        started = run_started_at(entry.name)
        if started is None or not entry.is_dir():
            continue
        try:
            run = read_manifest(entry)
        except BackupError as exc:
            status = "incomplete" if not (entry / MANIFEST_NAME).exists() else "unreadable"
            size = sum(f.stat().st_size for f in entry.glob(f"*{DUMP_SUFFIX}"))
            runs.append(RunSummary(entry.name, entry, started, status, size, [], str(exc)))
            continue
        size = sum(db.bytes or 0 for db in run.databases)
        runs.append(RunSummary(entry.name, entry, started, run.status, size, run.databases))
    runs.sort(key=lambda r: (r.started_at, _run_counter(r.run_id)))
    return runs


def _run_counter(run_id: str) -> int:
    match = RUN_ID_PATTERN.match(run_id)
    return int(match[2]) if match and match[2] else 0


def find_run(backup_dir: Path, run: str) -> Path:
    """A run by its id (a folder in backup_dir), by path, or `latest` (the newest successful run)."""
    if run == "latest":
        good = [r for r in list_runs(backup_dir) if r.ok]
        if not good:
            raise BackupError(f"no successful backup run in {backup_dir}")
        return good[-1].path
    for candidate in (Path(run), backup_dir / run):
        if candidate.is_dir():
            return candidate
    raise BackupError(f"no backup run {run!r} in {backup_dir}")


@dataclass(frozen=True)
class VerifyProblem:
    run_id: str
    file: str          # the file (or manifest) that is bad
    reason: str

    def __str__(self) -> str:
        return f"{self.run_id}/{self.file}: {self.reason}"


@dataclass
class VerifyResult:
    checked: list[str] = field(default_factory=list)        # run_id/file of every good dump
    skipped: list[str] = field(default_factory=list)        # databases that failed at run time
    problems: list[VerifyProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_run(
    run_dir: Path, *, pg_bin_dir: Path | None = None, named: bool = True, result: VerifyResult | None = None,
) -> VerifyResult:
    """Check every dump of a run: present, the size and sha256 the manifest recorded, and readable
    by `pg_restore --list` (its table of contents parses, so the archive is whole).

    `named`: the operator asked for this run. Then a run without a manifest or without a single
    successful dump is bad. Walking every run, those are skipped instead: a run in progress has
    no manifest yet, and a night whose dumps all failed is not a corrupted file (`backup list`
    shows it); only a manifest that exists and cannot be read is bad either way."""
    pg_restore = find_pg_tool("pg_restore", pg_bin_dir)
    result = result or VerifyResult()
    if not named and not (run_dir / MANIFEST_NAME).exists():
        result.skipped.append(f"{run_dir.name}: no {MANIFEST_NAME} (unfinished or still running)")
        return result
    try:
        run = read_manifest(run_dir)
    except BackupError as exc:
        result.problems.append(VerifyProblem(run_dir.name, MANIFEST_NAME, str(exc).split(": ", 1)[-1]))
        return result
    if named and not any(db.ok for db in run.databases):
        result.problems.append(VerifyProblem(run.run_id, MANIFEST_NAME, f"the run has no successful dump (status {run.status})"))
    for db in run.databases:
        if not db.ok:
            result.skipped.append(f"{run.run_id}/{db.name}: {db.status} at run time: {db.error}")
            continue
        problem = check_dump_file(run_dir, db, pg_restore)
        if problem:
            result.problems.append(VerifyProblem(run.run_id, db.file or db.name, problem))
        else:
            result.checked.append(f"{run.run_id}/{db.file}")
    return result


def check_dump_file(run_dir: Path, db: DatabaseBackup, pg_restore: Path) -> str | None:
    """Why this dump is bad, or None when it is good."""
    path = run_dir / (db.file or "")
    if not db.file or not path.is_file():
        return "the file is missing"
    size = path.stat().st_size
    if db.bytes is not None and size != db.bytes:
        return f"size {size} bytes, the manifest says {db.bytes}: the file was truncated or changed"
    actual = sha256_file(path)
    if actual != db.sha256:
        return f"sha256 {actual[:16]}... does not match the manifest's {str(db.sha256)[:16]}...: the file was changed"
    listed = subprocess.run([str(pg_restore), "--list", str(path)], capture_output=True, text=True, timeout=600)
    if listed.returncode != 0:
        return f"pg_restore --list fails: {first_line(listed.stderr.replace('pg_restore: error:', ''))}"
    return None


def runs_to_prune(runs: list[RunSummary], now: datetime, retention_days: float) -> list[RunSummary]:
    """The runs older than the retention, except the newest successful run, which is kept
    however old it is: a host whose backups have failed for weeks still has its last good one."""
    cutoff = now - timedelta(days=retention_days)
    good = [r for r in runs if r.ok]
    keep = max(good, key=lambda r: (r.started_at, _run_counter(r.run_id))) if good else None
    return [r for r in runs if r.started_at < cutoff and r is not keep]


def prune_runs(backup_dir: Path, retention_days: float, now: datetime | None = None) -> list[RunSummary]:
    """Delete the runs `runs_to_prune` names; returns those deleted."""
    deleted = []
    for run in runs_to_prune(list_runs(backup_dir), now or utc_now(), retention_days):
        try:
            shutil.rmtree(run.path)
        except OSError as exc:  # one undeletable folder must not stop the rest, nor fail the backup
            log.warning("cannot delete backup run %s: %s", run.path, exc)
            continue
        deleted.append(run)
    return deleted


def human_bytes(size: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_age(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
