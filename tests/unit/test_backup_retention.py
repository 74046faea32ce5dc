"""Which backup runs pruning deletes: older than the retention, never the newest good one."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from yggdrasil.ops.backup import RunSummary, run_started_at, runs_to_prune

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 20, 12, 0, tzinfo=timezone.utc)


def run(days_ago: float, status: str = "ok", suffix: str = "") -> RunSummary:
    started = (NOW - timedelta(days=days_ago)).replace(microsecond=0)
    run_id = started.strftime("%Y%m%dT%H%M%SZ") + suffix
    return RunSummary(run_id, Path("/backups") / run_id, started, status, 1000, [])


def ids(runs):
    return [r.run_id for r in runs]


def test_runs_older_than_the_retention_go_and_younger_ones_stay():
    runs = [run(30), run(15), run(14.01), run(13.99), run(1), run(0)]
    assert ids(runs_to_prune(runs, NOW, 14)) == ids(runs[:3])


def test_the_newest_successful_run_stays_however_old_while_older_and_failed_ones_go():
    runs = [run(40), run(30), run(20, "failed"), run(19, "partial"), run(18, "incomplete")]
    assert ids(runs_to_prune(runs, NOW, 14)) == ids([runs[0], runs[2], runs[3], runs[4]])


def test_nothing_successful_at_all_still_prunes_by_age():
    runs = [run(20, "failed"), run(2, "failed")]
    assert ids(runs_to_prune(runs, NOW, 14)) == ids(runs[:1])


def test_of_two_runs_in_one_second_the_later_counts_as_newest():
    first, second = run(20), run(20, suffix="-1")
    assert ids(runs_to_prune([second, first], NOW, 14)) == [first.run_id]


def test_run_folder_names_are_utc_start_times_and_other_names_are_not_runs():
    assert run_started_at("20250301T030000Z") == datetime(2025, 3, 1, 3, 0, tzinfo=timezone.utc)
    assert run_started_at("20250301T030000Z-2") == datetime(2025, 3, 1, 3, 0, tzinfo=timezone.utc)
    for name in ("notes", "20250301T030000Z.txt", "20250301T030000", "2025-03-01", ""):
        assert run_started_at(name) is None
