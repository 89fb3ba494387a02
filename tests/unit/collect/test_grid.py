"""Grid arithmetic: timeframe lengths, time parsing, gap runs and request windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from entasis.collect.grid import Gap, ceil_to, floor_to, missing_runs, windows
from entasis.domain import from_ms, timeframe_ms, to_ms
from entasis.domain import timeframe_origin_ms as grid_origin_ms

H = 3_600_000


def test_timeframe_ms_known_and_unknown() -> None:
    assert timeframe_ms("1m") == 60_000
    assert timeframe_ms("4h") == 4 * H
    assert timeframe_ms("1d") == 24 * H
    assert timeframe_ms("1w") == 7 * 24 * H
    for bad in ("1x", "h", "0h", "-1h", ""):
        with pytest.raises(ValueError, match="unknown timeframe"):
            timeframe_ms(bad)


def test_to_ms_accepts_iso_naive_as_utc_aware_and_ms() -> None:
    assert to_ms("2024-01-01") == 1_704_067_200_000
    assert to_ms("2024-01-01T01:00:00Z") == 1_704_067_200_000 + H
    assert to_ms(datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == 1_704_067_200_000
    assert to_ms(1_704_067_200_000) == 1_704_067_200_000
    assert from_ms(1_704_067_200_000) == datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="time='yesterday' is not a timestamp"):
        to_ms("yesterday")
    with pytest.raises(ValueError, match="has no time zone"):
        to_ms("2024-01-01T06:00")  # a naive time of day is refused (entasis.domain's time rule)
    with pytest.raises(ValueError, match="boolean"):
        to_ms(True)


def test_floor_ceil_respect_week_origin() -> None:
    assert ceil_to(H + 1, H) == 2 * H
    assert ceil_to(2 * H, H) == 2 * H
    assert floor_to(2 * H - 1, H) == H
    week = timeframe_ms("1w")
    origin = grid_origin_ms("1w")
    monday = to_ms("2024-01-01")  # a Monday
    assert ceil_to(monday - 5, week, origin) == monday
    assert floor_to(monday + 5, week, origin) == monday
    assert grid_origin_ms("1h") == 0


def test_missing_runs_groups_consecutive_points() -> None:
    present = [0, H, 4 * H, 5 * H, 8 * H]
    assert missing_runs(present, 0, 8 * H, H) == [Gap(2 * H, 3 * H, 2), Gap(6 * H, 7 * H, 2)]
    assert missing_runs(present, 0, H, H) == []
    assert missing_runs([], 0, 2 * H, H) == [Gap(0, 2 * H, 3)]
    assert missing_runs(present, 5 * H, 4 * H, H) == []


def test_windows_cover_range_without_overlap() -> None:
    w = windows(0, 10, 4)
    assert w == [(0, 4), (4, 8), (8, 10)]
    assert windows(5, 5, 4) == []
    with pytest.raises(ValueError):
        windows(0, 10, 0)
