"""`ygg backup schedule`: a daily backup at a fixed UTC time, with pruning and bounded retries.

Times are UTC throughout, so there is no daylight-saving hour that happens twice or never. The
scheduler sleeps in short steps and re-reads the wall clock after each, so a clock that is
corrected (NTP) or a host that was suspended does not make it miss or double a slot.

A failed run (a database down, a full disk) is logged, retried a few times with growing waits,
and then given up until the next slot: the scheduler itself never dies of a failed backup,
because a process that stops after one bad night silently stops all later ones.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, time, timedelta, timezone

log = logging.getLogger(__name__)

# The longest single sleep: how late a clock correction or a stop request is noticed.
_SLEEP_STEP_SECONDS = 30.0
RETRY_DELAY_CAP_SECONDS = 3600.0


def parse_time_of_day(text: str) -> time:
    """'03:00' or '03:00:30' as a UTC time of day. Raises ValueError."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"time of day {text!r} is not HH:MM or HH:MM:SS")
    hour, minute, second = (int(p) for p in (parts + ["00"])[:3])
    return time(hour, minute, second, tzinfo=timezone.utc)


def next_run_at(now: datetime, at: time) -> datetime:
    """The first moment strictly after `now` whose UTC time of day is `at`. Strictly: a run
    that finishes within its own slot's second must not be scheduled into that slot again."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(timezone.utc)
    candidate = now.replace(hour=at.hour, minute=at.minute, second=at.second, microsecond=0)
    if candidate <= now:
        candidate += timedelta(days=1)
    return candidate


def retry_delays(attempts: int, initial_seconds: float, cap_seconds: float = RETRY_DELAY_CAP_SECONDS) -> list[float]:
    """The waits before each retry of a failed run: initial, 2x, 4x ..., each at most `cap_seconds`."""
    return [min(initial_seconds * 2 ** n, cap_seconds) for n in range(attempts)]


def sleep_until(moment: datetime, stop: threading.Event, now: Callable[[], datetime]) -> bool:
    """Wait until the wall clock reaches `moment`. False when `stop` was set first."""
    while True:
        remaining = (moment - now()).total_seconds()
        if remaining <= 0:
            return not stop.is_set()
        if stop.wait(min(remaining, _SLEEP_STEP_SECONDS)):
            return False


def run_scheduler(
    run_once: Callable[[], bool],
    at: time,
    stop: threading.Event,
    *,
    retry_attempts: int,
    retry_initial_seconds: float,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> None:
    """Call `run_once` (a backup and its pruning; True when it succeeded) every day at `at`,
    until `stop` is set. Returns when stopped; never raises for a failed run."""
    log.info("backup scheduler started: daily at %s UTC", at.strftime("%H:%M:%S"))
    while not stop.is_set():
        slot = next_run_at(now(), at)
        log.info("next backup run at %s", slot.isoformat().replace("+00:00", "Z"),
                 extra={"next_run_at": slot.isoformat()})
        if not sleep_until(slot, stop, now):
            break
        delays = retry_delays(retry_attempts, retry_initial_seconds)
        for attempt in range(1 + len(delays)):
            if attempt:
                delay = delays[attempt - 1]
                log.info("retrying the backup in %.1f s (retry %d of %d)", delay, attempt, len(delays))
                if stop.wait(delay):
                    break
            try:
                succeeded = run_once()
            except Exception:  # a bug or an environment error must not end the schedule
                log.exception("backup run crashed")
                succeeded = False
            if succeeded or stop.is_set():
                break
        else:
            log.error("backup failed %d times; giving up until the next slot", 1 + len(delays))
    log.info("backup scheduler stopped")
