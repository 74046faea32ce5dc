"""`ygg backup schedule` as a real process: it runs at its UTC time of day, prunes, survives
failed runs with bounded retries, and stops cleanly on SIGTERM."""

import os
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from backup_drill_helpers import YGG, manifest
from yggdrasil import db

pytestmark = pytest.mark.integration


def start_scheduler(tmp_path: Path, database: str, seconds_ahead: float, **env: str) -> tuple[subprocess.Popen, Path]:
    at = (datetime.now(timezone.utc) + timedelta(seconds=seconds_ahead)).strftime("%H:%M:%S")
    log_path = tmp_path / "scheduler.log"
    environment = {**os.environ, "YGG_CONFIG": "/nonexistent/ygg.toml", "YGG_LOG_JSON": "false", **env}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(YGG), "backup", "schedule", "--database", database, "--at", at,
                                    "--dir", str(tmp_path / "backups")],
                                   stdout=log, stderr=subprocess.STDOUT, env=environment)
    return process, log_path


def wait_for_line(process: subprocess.Popen, log_path: Path, text: str, count: int = 1, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = log_path.read_text()
        if log.count(text) >= count:
            return log
        assert process.poll() is None, f"the scheduler exited with {process.returncode}:\n{log}"
        time.sleep(0.1)
    raise AssertionError(f"no {count}x {text!r} in the scheduler's log within {timeout} s:\n{log_path.read_text()}")


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def test_the_scheduler_backs_up_at_its_time_prunes_and_stops_on_sigterm(tenant_dsn, tmp_path):
    old_run = tmp_path / "backups" / "20000101T030000Z"
    old_run.mkdir(parents=True)
    process, log_path = start_scheduler(tmp_path, f"tenant-acme={tenant_dsn}", seconds_ahead=3)
    try:
        log = wait_for_line(process, log_path, "next backup run at")
        assert not [p for p in (tmp_path / "backups").iterdir() if p != old_run], "nothing runs before its time"
        # After the run, the next slot is the same time tomorrow.
        log = wait_for_line(process, log_path, "next backup run at", count=2)
        assert "backed up tenant-acme" in log and "backup run " in log and " ok in " in log
        slots = [line.split("next backup run at ", 1)[1].strip() for line in log.splitlines() if "next backup run at" in line]
        first, second = (datetime.fromisoformat(s.replace("Z", "+00:00")) for s in slots[:2])
        assert second - first == timedelta(days=1)
        [run_dir] = [p for p in (tmp_path / "backups").iterdir()]
        assert manifest(run_dir)["status"] == "ok" and not old_run.exists(), "the successful run pruned the old one"
    finally:
        code = stop(process)
    assert code == 0, log_path.read_text()
    assert log_path.read_text().rstrip().endswith("backup scheduler stopped")


def test_a_failing_run_is_retried_with_backoff_then_left_to_the_next_slot(pg_admin_dsn, tmp_path):
    missing = db.dsn_with_database(pg_admin_dsn, "ygg_never_created")
    process, log_path = start_scheduler(tmp_path, f"tenant-gone={missing}", seconds_ahead=2,
                                        YGG_BACKUP_RETRY_ATTEMPTS="2", YGG_BACKUP_RETRY_INITIAL_SECONDS="0.3")
    try:
        log = wait_for_line(process, log_path, "giving up until the next slot")
        assert log.count("backup of tenant-gone failed") == 3
        assert "retrying the backup in 0.3 s (retry 1 of 2)" in log and "(retry 2 of 2)" in log
        log = wait_for_line(process, log_path, "next backup run at", count=2)   # alive, waiting for tomorrow
        assert "Traceback" not in log
    finally:
        code = stop(process)
    assert code == 0


def test_sigterm_during_a_dump_abandons_it_and_leaves_no_partial_file(tenant_dsn, tmp_path):
    with psycopg.connect(tenant_dsn) as blocker:
        # A migration holding a table lock: pg_dump waits for it (up to its lock-wait timeout).
        blocker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        process, log_path = start_scheduler(tmp_path, f"tenant-acme={tenant_dsn}", seconds_ahead=2)
        try:
            wait_for_line(process, log_path, "backup run starting")
            deadline = time.monotonic() + 20
            with psycopg.connect(tenant_dsn, autocommit=True) as watcher:
                while not watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' "
                                          "AND wait_event_type = 'Lock'").fetchone()[0]:
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.1)
            stopped_at = time.monotonic()
            code = stop(process)
            assert time.monotonic() - stopped_at < 8, "the stop did not wait for the dump"
        finally:
            stop(process)
        blocker.rollback()
    assert code == 0, log_path.read_text()
    [run_dir] = list((tmp_path / "backups").iterdir())
    record = manifest(run_dir)
    assert record["status"] == "cancelled" and record["databases"][0]["status"] == "cancelled"
    assert sorted(p.name for p in run_dir.iterdir()) == ["manifest.json"]
    assert log_path.read_text().rstrip().endswith("backup scheduler stopped")
