"""Flash-crash detection over 1-minute candles: a pure, vectorised function of one series.

The specification's rule: a peak-to-trough drop of at least ``drop`` (15%) within ``window_minutes``
(5) with volume at least ``volume_ratio`` (2.5x) its trailing average. Exactly:

* trough bar j, peak = max(open[j], high[i] for earlier bars i with ts[j] - ts[i] < window); the open
  of bar j is the only price of bar j known to precede its low, so a bar's own high never counts;
* drop_j = 1 - low[j] / peak_j;
* the onset of bar j is the last bar from the peak bar to j that opened within ``onset_tolerance`` (1%)
  of the peak: where the fall begins;
* the volume ratio is the mean volume of the bars from the onset to j divided by the mean volume
  per bar over the ``volume_lookback_minutes`` before the onset (time-based, so a gap in the data
  shortens the lookback instead of reaching further back); fewer than ``min_volume_bars`` bars there
  or a zero average: the ratio is unknown and nothing is flagged;
* every window is measured in time, never in rows: across a gap in the 1-minute data there is no
  earlier bar within the window, so a gap is never read as a fast move;
* a bar qualifies when drop >= drop and ratio >= volume_ratio (both inclusive, 1e-12 slack for float
  rounding). Qualifying bars less than or equal to ``window_minutes`` apart form one event.

An event reports its start (the onset of its first qualifying bar), its trough (the qualifying
bar with the deepest drop), depth, peak and trough prices, volume ratio, recovery (share of the drop
regained by the best close within ``recovery_minutes`` after the trough) and two times the DAG needs
to report each event exactly once: ``detected_at`` (close of the first qualifying bar: when an alert
could first fire) and ``final_at`` (when no later bar can change the event any more).

The specification's "liquidity impact threshold of 0.3" needs order-book depth, which we do not
collect; it is kept in the config for when we do and is not applied here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from entasis.config import FlashCrashConfig

MINUTE_NS = 60 * 10**9
_EPS = 1e-12

EVENT_COLUMNS = [
    "start_ts", "trough_ts", "detected_at", "final_at", "peak_price", "trough_price", "depth",
    "volume_ratio", "recovery", "n_bars",
]


@dataclass(frozen=True)
class CrashRule:
    """Thresholds of the detector (``settings.signals.flash_crash`` builds one)."""

    drop: float = 0.15
    window_minutes: int = 5
    volume_ratio: float = 2.5
    volume_lookback_minutes: int = 60
    min_volume_bars: int = 30
    recovery_minutes: int = 15
    onset_tolerance: float = 0.01

    @classmethod
    def from_config(cls, cfg: FlashCrashConfig) -> CrashRule:
        """The rule from settings, field by field by name (config fields the detector does not use are left)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.model_dump().items() if k in names})

    def __post_init__(self) -> None:
        if not 0 < self.drop < 1:
            raise ValueError(f"flash-crash drop must be in (0, 1), e.g. 0.15; got {self.drop!r}")
        if self.window_minutes < 1:
            raise ValueError(f"window_minutes must be >= 1; got {self.window_minutes!r}")
        if self.volume_ratio <= 0:
            raise ValueError(f"volume_ratio must be > 0; got {self.volume_ratio!r}")
        if self.volume_lookback_minutes < 1 or self.min_volume_bars < 1:
            raise ValueError("volume_lookback_minutes and min_volume_bars must be >= 1")
        if self.min_volume_bars > self.volume_lookback_minutes:
            raise ValueError(f"min_volume_bars ({self.min_volume_bars}) cannot exceed the lookback "
                             f"({self.volume_lookback_minutes} minutes)")
        if not 0 <= self.onset_tolerance < self.drop:
            raise ValueError(f"onset_tolerance must be in [0, drop); got {self.onset_tolerance!r}")
        if self.recovery_minutes < 0:
            raise ValueError(f"recovery_minutes must be >= 0; got {self.recovery_minutes!r}")

    @property
    def history_minutes(self) -> int:
        """Minutes of data before an interval that the detector needs to see every event whole."""
        return self.volume_lookback_minutes + 2 * self.window_minutes + self.recovery_minutes + 60


def _arrays(candles: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """ts (ns), open, high, low, close, volume of one series; a clear error for bad input."""
    import pandas as pd


    need = ["ts", "open", "high", "low", "close", "volume"]
    missing = [c for c in need if c not in candles.columns]
    if missing:
        raise ValueError(f"1-minute candles lack column(s) {missing}; need {need}")
    ts = pd.DatetimeIndex(pd.to_datetime(candles["ts"], utc=True)).as_unit("ns").asi8
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    if len(ts) > 1 and (np.diff(ts) == 0).any():
        i = int(np.flatnonzero(np.diff(ts) == 0)[0])
        raise ValueError(f"1-minute candles: duplicate bar at {pd.Timestamp(ts[i], tz='UTC')}")
    off = np.flatnonzero(ts % MINUTE_NS != 0)
    if len(off):
        raise ValueError(f"1-minute candles: ts {pd.Timestamp(ts[off[0]], tz='UTC')} is not on the minute grid")
    out = [ts]
    for c in need[1:]:
        a = pd.to_numeric(candles[c], errors="coerce").to_numpy(dtype=np.float64)[order]
        ok = (a >= 0) if c == "volume" else (a > 0)
        if not ok.all():
            i = int(np.argmin(ok))
            raise ValueError(f"1-minute candles: bad {c}={a[i]!r} at {pd.Timestamp(ts[i], tz='UTC')}")
        out.append(a)
    return tuple(out)


def bar_signals(ts: np.ndarray, o: np.ndarray, h: np.ndarray, low: np.ndarray, v: np.ndarray,
                rule: CrashRule) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per trough bar: (onset index, drop, volume ratio, qualifies, peak index). Pure numpy, O(n * window)."""
    n = len(ts)
    win = rule.window_minutes * MINUTE_NS
    peak = o.copy()
    peak_idx = np.arange(n)
    for lag in range(1, rule.window_minutes):
        if lag >= n:
            break
        cand = np.full(n, -np.inf)
        ok = (ts[lag:] - ts[:-lag]) < win
        cand[lag:] = np.where(ok, h[:-lag], -np.inf)
        better = cand > peak
        peak = np.where(better, cand, peak)
        peak_idx = np.where(better, np.arange(n) - lag, peak_idx)
    drop = 1.0 - low / peak
    # onset: the last bar from the peak bar to j that opened within onset_tolerance of the peak
    idx = np.arange(n)
    onset = peak_idx.copy()
    floor = peak * (1.0 - rule.onset_tolerance)
    for lag in range(rule.window_minutes - 1, -1, -1):
        k = idx - lag
        ok = (k >= peak_idx) & (o[np.maximum(k, 0)] >= floor)
        onset = np.where(ok, k, onset)
    cs = np.r_[0.0, np.cumsum(v)]
    lo = np.searchsorted(ts, ts[onset] - rule.volume_lookback_minutes * MINUTE_NS, side="left")
    cnt = onset - lo
    trail = np.where(cnt > 0, (cs[onset] - cs[lo]) / np.maximum(cnt, 1), np.nan)
    window_mean = (cs[idx + 1] - cs[onset]) / (idx - onset + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((cnt >= rule.min_volume_bars) & (trail > 0), window_mean / trail, np.nan)
    hit = (drop >= rule.drop - _EPS) & (ratio >= rule.volume_ratio - _EPS)
    return onset, drop, ratio, hit, peak_idx


def detect_arrays(ts: np.ndarray, o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray,
                  rule: CrashRule | None = None) -> dict[str, np.ndarray]:
    """Events of one series from sorted arrays (ts in ns): columns of :data:`EVENT_COLUMNS` (times in ns)."""
    rule = rule or CrashRule()
    n = len(ts)
    empty: dict[str, np.ndarray] = {k: np.empty(0, dtype=np.int64 if k.endswith(("_ts", "_at")) or k == "n_bars"
                                                else np.float64) for k in EVENT_COLUMNS}
    if n == 0:
        return empty
    onset, drop, ratio, hit, peak_idx = bar_signals(ts, o, h, low, v, rule)
    q = np.flatnonzero(hit)
    if len(q) == 0:
        return empty
    win = rule.window_minutes * MINUTE_NS
    new = np.r_[True, np.diff(ts[q]) > win]
    gid = np.cumsum(new) - 1
    first = q[new]
    last = q[np.r_[new[1:], True]]
    # deepest member of each group (first one on ties)
    order = np.lexsort((q, -drop[q], gid))
    deepest = q[order[np.r_[True, gid[order][1:] != gid[order][:-1]]]]
    pk = peak_idx[deepest]
    peak_price = np.where(pk == deepest, o[deepest], h[pk])
    trough_price = low[deepest]
    rec_end = ts[deepest] + rule.recovery_minutes * MINUTE_NS
    recovery = np.full(len(deepest), np.nan)
    for k, (j, end) in enumerate(zip(deepest.tolist(), rec_end.tolist(), strict=True)):
        stop = int(np.searchsorted(ts, end, side="right"))
        if stop > j + 1:
            best = float(np.max(c[j + 1:stop]))
            recovery[k] = (best - trough_price[k]) / (peak_price[k] - trough_price[k])
    n_bars = np.bincount(gid)
    return {
        "start_ts": ts[onset[first]],
        "trough_ts": ts[deepest],
        "detected_at": ts[first] + MINUTE_NS,
        "final_at": np.maximum(ts[last] + win + MINUTE_NS, rec_end + MINUTE_NS),
        "peak_price": peak_price,
        "trough_price": trough_price,
        "depth": drop[deepest],
        "volume_ratio": ratio[deepest],
        "recovery": recovery,
        "n_bars": n_bars.astype(np.int64),
    }


def detect(candles: pd.DataFrame, rule: CrashRule | None = None) -> pd.DataFrame:
    """Flash crashes in one series of 1-minute candles (ts = bar open, UTC): one row per event."""
    import pandas as pd


    ts, o, h, low, c, v = _arrays(candles)
    ev = detect_arrays(ts, o, h, low, c, v, rule)
    out = pd.DataFrame(ev)
    for col in ("start_ts", "trough_ts", "detected_at", "final_at"):
        out[col] = pd.to_datetime(out[col], unit="ns", utc=True)
    return out[EVENT_COLUMNS]


def detect_many(candles: pd.DataFrame, rule: CrashRule | None = None) -> pd.DataFrame:
    """:func:`detect` per (exchange, symbol) of a long frame; those key columns lead the result."""
    import pandas as pd


    keys = [k for k in ("exchange", "symbol") if k in candles.columns]
    if not keys:
        raise ValueError("detect_many needs an 'exchange' and/or 'symbol' column; use detect() for one series")
    parts: list[pd.DataFrame] = []
    for key, grp in candles.groupby(keys, sort=True):
        ev = detect(grp, rule)
        vals: Any = key if isinstance(key, tuple) else (key,)
        for k, val in zip(keys, vals, strict=True):
            ev.insert(keys.index(k), k, str(val))
        parts.append(ev)
    if not parts:
        return pd.DataFrame(columns=[*keys, *EVENT_COLUMNS])
    return pd.concat(parts, ignore_index=True)


def in_interval(events: pd.DataFrame, column: str, start: Any, end: Any) -> pd.DataFrame:
    """Events whose ``column`` time lies in (start, end]: each event belongs to exactly one interval."""
    import pandas as pd


    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    sel = (events[column] > lo) & (events[column] <= hi)
    return events.loc[sel].reset_index(drop=True)
