"""Time-grid arithmetic for bar series: why a bar is missing is decided here, in integer milliseconds.

Everything works on epoch milliseconds (what exchanges speak) so that grid alignment and gap runs
are exact integer comparisons, free of float or timezone surprises.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


def timeframe_ms(timeframe: str) -> int:
    """Length of one bar, e.g. '1h' -> 3_600_000; a clear error for anything else."""
    tf = timeframe.strip()
    unit = tf[-1:]
    num = tf[:-1]
    if unit not in _UNIT_MS or not num.isdigit() or int(num) <= 0:
        raise ValueError(f"unknown timeframe {timeframe!r}; expected e.g. '1m', '15m', '1h', '4h', '1d'")
    return int(num) * _UNIT_MS[unit]


def grid_origin_ms(timeframe: str) -> int:
    """Where a timeframe's grid starts: the epoch, except weeks, which start on Mondays (1970-01-05)."""
    return 4 * _UNIT_MS["d"] if timeframe.strip().endswith("w") else 0


def to_ms(value: datetime | str | int | float) -> int:
    """Epoch milliseconds from an aware datetime, an ISO string (UTC assumed when naive) or ms."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a time")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty time string")
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"cannot parse time {text!r}; use ISO 8601, e.g. 2024-01-01 or 2024-01-01T06:00Z"
            ) from None
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, ISO string or epoch ms, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(round(value.timestamp() * 1000))


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def floor_to(ms: int, step: int, origin: int = 0) -> int:
    return ms - (ms - origin) % step


def ceil_to(ms: int, step: int, origin: int = 0) -> int:
    return -(-(ms - origin) // step) * step + origin


@dataclass(frozen=True)
class Gap:
    """A run of consecutive grid points with no bar: [start, end] inclusive, ``bars`` of them."""

    start: int
    end: int
    bars: int


def missing_runs(present: Iterable[int], lo: int, hi: int, step: int) -> list[Gap]:
    """Runs of grid points in [lo, hi] (both inclusive, on the grid) absent from ``present``."""
    import numpy as np

    if hi < lo:
        return []
    grid = np.arange(lo, hi + step, step, dtype=np.int64)
    have = np.fromiter(present, dtype=np.int64)
    missing = grid[~np.isin(grid, have)]
    if missing.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(missing) != step)
    starts = np.r_[0, breaks + 1]
    ends = np.r_[breaks, missing.size - 1]
    return [Gap(int(missing[s]), int(missing[e]), int(e - s + 1)) for s, e in zip(starts, ends, strict=True)]


def windows(lo: int, hi: int, span: int) -> list[tuple[int, int]]:
    """Split [lo, hi) into consecutive half-open windows of at most ``span`` ms (one request each)."""
    if span <= 0:
        raise ValueError("window span must be positive")
    out = []
    s = lo
    while s < hi:
        e = min(hi, s + span)
        out.append((s, e))
        s = e
    return out
