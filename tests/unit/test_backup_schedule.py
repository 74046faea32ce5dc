"""When the backup scheduler runs next, and how it backs off: pure functions of UTC times."""

from datetime import datetime, time, timedelta, timezone

import pytest

from yggdrasil.ops.schedule import next_run_at, parse_time_of_day, retry_delays

pytestmark = pytest.mark.unit

THREE_AM = time(3, 0, tzinfo=timezone.utc)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


@pytest.mark.parametrize("now, expected", [
    (utc(2025, 3, 1, 1, 59, 59), utc(2025, 3, 1, 3, 0)),             # earlier the same day
    (utc(2025, 3, 1, 2, 59, 59, 999999), utc(2025, 3, 1, 3, 0)),     # a microsecond before
    (utc(2025, 3, 1, 3, 0), utc(2025, 3, 2, 3, 0)),                  # exactly at the slot: the next day's
    (utc(2025, 3, 1, 3, 0, 0, 500000), utc(2025, 3, 2, 3, 0)),       # a run that ended within its second
    (utc(2025, 3, 1, 23, 30), utc(2025, 3, 2, 3, 0)),                # late in the day
    (utc(2024, 12, 31, 12, 0), utc(2025, 1, 1, 3, 0)),               # over a year's end
    (utc(2024, 2, 28, 4, 0), utc(2024, 2, 29, 3, 0)),                # into a leap day
    (utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 3, 0)),               # the EU's spring-forward night: UTC has none
    (utc(2025, 10, 26, 2, 30), utc(2025, 10, 26, 3, 0)),             # and its fall-back night
])
def test_the_next_run_is_the_first_slot_strictly_after_now(now, expected):
    assert next_run_at(now, THREE_AM) == expected


def test_a_local_time_is_read_as_the_same_instant_in_utc():
    zurich_summer = timezone(timedelta(hours=2))
    now = datetime(2025, 7, 1, 4, 30, tzinfo=zurich_summer)   # 02:30 UTC
    assert next_run_at(now, THREE_AM) == utc(2025, 7, 1, 3, 0)


def test_a_naive_time_is_refused_rather_than_guessed():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_run_at(datetime(2025, 3, 1, 1, 0), THREE_AM)


def test_consecutive_slots_are_exactly_a_day_apart():
    slot = next_run_at(utc(2025, 1, 1, 0, 0), time(3, 15, 30))
    for _ in range(400):
        following = next_run_at(slot, time(3, 15, 30))
        assert following - slot == timedelta(days=1)
        slot = following


@pytest.mark.parametrize("text, expected", [("03:00", time(3, 0)), ("23:59:59", time(23, 59, 59)), ("00:00", time(0, 0))])
def test_time_of_day_parses_hh_mm_and_hh_mm_ss(text, expected):
    assert parse_time_of_day(text).replace(tzinfo=None) == expected
    assert parse_time_of_day(text).tzinfo == timezone.utc


@pytest.mark.parametrize("text", ["3:00", "24:00", "03:60", "03", "03:00:00:00", "noon", ""])
def test_a_malformed_time_of_day_is_refused(text):
    with pytest.raises(ValueError):
        parse_time_of_day(text)


def test_retries_double_and_are_capped():
    assert retry_delays(3, 60) == [60, 120, 240]
    assert retry_delays(0, 60) == []
    assert retry_delays(6, 1000, cap_seconds=3600) == [1000, 2000, 3600, 3600, 3600, 3600]
