"""Point-in-time joins of extras (funding, open interest, option snapshots, sentiment) onto bars.

A bar with open time ``ts`` closes at ``ts + timeframe``; it may see an extra only when the extra's
own timestamp (its publication time) is at or before that close. Every join here is a backward
as-of join on the close time with a staleness limit, so a value that stopped updating is not
carried forward for ever, and the result for one bar depends only on extras in a bounded window
before its close (which is what lets an incremental build reproduce a full one exactly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from entasis.features.jit import jit

if TYPE_CHECKING:
    import pandas as pd

# An extra older than this at a bar's close is stale: the bar sees NaN rather than an old value.
STALE_AFTER = np.int64(3 * 86_400 * 10**9)
FUNDING_MEAN_WINDOW = np.int64(7 * 86_400 * 10**9)
OI_CHANGE_WINDOW = np.int64(86_400 * 10**9)
_NAT = np.iinfo(np.int64).min  # NaT as int64
# How far before the first bar an incremental build must read extras (>= the windows above).
EXTRAS_LOOKBACK_DAYS = 14


def utc_ns(values: pd.Series | pd.Index | np.ndarray | list[object], what: str) -> np.ndarray:
    """Timestamps as int64 UTC nanoseconds; naive values are taken as UTC (as Spark hands them over)."""
    import pandas as pd

    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.DatetimeTZDtype):
        # the epoch values are UTC whatever the zone: read them as they are (one unit cast at most)
        arr = pd.DatetimeIndex(values).array if not isinstance(values, pd.Series) else values.array
        i8 = np.asarray(arr.asi8, dtype=np.int64)
        out = np.empty(len(i8), dtype=np.int64)
        if arr.unit in _NS_PER and _to_ns(i8, _NS_PER[arr.unit], out):  # no NaT, none out of range
            return out
    try:
        idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what}: cannot read timestamps ({e})") from None
    if idx.hasnans:
        raise ValueError(f"{what}: missing timestamp(s)")
    try:
        return np.asarray(idx.as_unit("ns").asi8, dtype=np.int64)
    except (ValueError, OverflowError) as e:
        raise ValueError(f"{what}: timestamp outside 1677-2262, the nanosecond range ({e})") from None


_NS_PER = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


@jit
def _to_ns(i8: np.ndarray, factor: int, out: np.ndarray) -> bool:  # pragma: no cover - compiled
    """out = i8 x factor in one pass; False where a value is NaT or would not fit in int64 ns (the
    caller then takes pandas' path, which says which)."""
    hi = np.iinfo(np.int64).max // factor
    ok = True
    for j in range(len(i8)):
        x = i8[j]
        ok &= (x != _NAT) & (x <= hi) & (x >= -hi)
        out[j] = x * factor
    return ok


def asof_join(
    close_ns: np.ndarray,
    extra: pd.DataFrame,
    ts_col: str,
    columns: list[str],
    *,
    tolerance_ns: np.int64 = STALE_AFTER,
    what: str = "extra",
) -> dict[str, np.ndarray]:
    """For each bar close, the latest row of ``extra`` with ``ts_col <= close`` (and not stale).

    This is ``pd.merge_asof(direction='backward', allow_exact_matches=True, tolerance=...)`` keyed on
    the bar's close time; ``extra`` may be unsorted.
    """
    import pandas as pd

    n = len(close_ns)
    if extra is None or extra.empty:
        return {c: np.full(n, np.nan) for c in columns}
    missing = [c for c in [ts_col, *columns] if c not in extra.columns]
    if missing:
        raise ValueError(f"{what}: lacks column(s) {missing}")
    right = pd.DataFrame({"_t": utc_ns(extra[ts_col], what)})
    for c in columns:
        right[c] = pd.to_numeric(extra[c], errors="coerce").to_numpy(dtype=np.float64)
    right = right.sort_values("_t", kind="stable").drop_duplicates("_t", keep="last")
    left = pd.DataFrame({"_t": close_ns, "_i": np.arange(n)})
    merged = pd.merge_asof(
        left, right, on="_t", direction="backward", allow_exact_matches=True, tolerance=int(tolerance_ns)
    )
    return {c: merged[c].to_numpy(dtype=np.float64) for c in columns}


def window_mean(close_ns: np.ndarray, extra_ns: np.ndarray, values: np.ndarray, window_ns: np.int64) -> np.ndarray:
    """Mean of ``values`` stamped in (close - window, close] for each close; NaN when none.

    Each window is summed on its own (no running sum), so the result for a bar does not depend on
    where the input starts.
    """
    order = np.argsort(extra_ns, kind="stable")
    ets, vals = extra_ns[order], values[order]
    keep = ~np.isnan(vals)
    ets, vals = ets[keep], vals[keep]
    n = len(close_ns)
    if len(ets) == 0:
        return np.full(n, np.nan)
    hi = np.searchsorted(ets, close_ns, side="right")
    lo = np.searchsorted(ets, close_ns - window_ns, side="right")
    count = hi - lo
    padded = np.append(vals, 0.0)
    idx = np.empty(2 * n, dtype=np.int64)
    idx[0::2], idx[1::2] = lo, hi
    sums = np.add.reduceat(padded, idx)[0::2]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, sums / np.maximum(count, 1), np.nan)
    return mean


def same_bar(ts_ns: np.ndarray, other_ns: np.ndarray, other_values: np.ndarray) -> np.ndarray:
    """The other series' value at exactly the same bar open time; NaN where it has no such bar."""
    order = np.argsort(other_ns, kind="stable")
    ots, ovals = other_ns[order], other_values[order]
    if len(ots) == 0:
        return np.full(len(ts_ns), np.nan)
    pos = np.clip(np.searchsorted(ots, ts_ns, side="left"), 0, len(ots) - 1)
    return np.where(ots[pos] == ts_ns, ovals[pos], np.nan)
