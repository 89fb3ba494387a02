"""Time-grid arithmetic for bar series: why a bar is missing is decided here, in integer milliseconds.

Everything works on epoch milliseconds (what exchanges speak) so that grid alignment and gap runs
are exact integer comparisons, free of float or timezone surprises.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Timeframe lengths and grid origins, and epoch-ms conversion, are the domain's (entasis.domain: one table,
# one time rule); this module does the arithmetic on the grid.

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
