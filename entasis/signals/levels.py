"""Support and resistance levels: pure functions of one candle series, with no look-ahead.

Why: the specification asks for "key price levels based on historical patterns"; models, the
publisher and analysts need them as numbers (price, strength, touches, distance in ATR), computed
the same way everywhere.

Definition, for the bar t (levels as of its close; only bars <= t are read):

* window: the last ``lookback_bars`` bars up to t;
* ATR: the plain mean of the true range over the last ``atr_bars`` bars (a windowed mean rather than
  Wilder's recursion, so a value depends only on its window and never on where the history starts);
* pivots: a swing high at i is the highest high of bars i-k..i+k (k = ``pivot_bars``), a swing low the
  lowest low; a pivot is only known at bar i+k, so at t only pivots with i + k <= t count;
* clusters: pivot prices sorted and split wherever two neighbours are more than ``tolerance_atr`` x ATR
  apart; a level is the weighted mean price of its group, its touches the number of pivots in it;
* strength = sum over its pivots of recency (0.5 ** (age / ``halflife_bars``)) x relative volume
  (the pivot bar's volume over the window's mean), plus, for a high-volume node of the window's volume
  profile (``profile_bins`` price bins; a node is a local maximum above 2x the mean bin), its excess
  volume (bin / mean bin - 1). A node within the tolerance of a level adds to it, otherwise it is a
  level of its own with 0 touches; only levels with strength >= ``min_strength`` (1: about one recent
  pivot on average volume) are reported;
* support: levels below the close, nearest first; resistance: levels above it, nearest first; the
  distance is |close - level| / ATR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    import pandas as pd

    from entasis.config import LevelsConfig

LEVEL_COLUMNS = ["side", "rank", "price", "strength", "touches", "distance_atr"]
FEATURE_NAMES = ("support_dist_atr", "resistance_dist_atr")


@dataclass(frozen=True)
class LevelParams:
    """How levels are found; the feature columns always use the defaults (one definition)."""

    lookback_bars: int = 250
    pivot_bars: int = 3
    atr_bars: int = 14
    tolerance_atr: float = 0.5
    halflife_bars: float = 60.0
    profile_bins: int = 24
    max_levels: int = 3
    min_strength: float = 1.0

    def __post_init__(self) -> None:
        if self.lookback_bars < 20:
            raise ValueError(f"lookback_bars must be >= 20; got {self.lookback_bars}")
        if self.pivot_bars < 1 or self.atr_bars < 2 or self.profile_bins < 5 or self.max_levels < 1:
            raise ValueError("pivot_bars >= 1, atr_bars >= 2, profile_bins >= 5 and max_levels >= 1 are required")
        if self.tolerance_atr <= 0 or self.halflife_bars <= 0:
            raise ValueError("tolerance_atr and halflife_bars must be > 0")

    @classmethod
    def from_config(cls, cfg: LevelsConfig) -> LevelParams:
        return cls(cfg.lookback_bars, cfg.pivot_bars, cfg.atr_bars, cfg.tolerance_atr, cfg.halflife_bars,
                   cfg.profile_bins, min_strength=cfg.min_strength)

    @property
    def min_bars(self) -> int:
        """Bars needed before a bar has levels at all."""
        return max(self.atr_bars + 1, 2 * self.pivot_bars + 2)


@dataclass(frozen=True)
class Level:
    price: float
    strength: float
    touches: int


def windowed_atr(h: np.ndarray, low: np.ndarray, c: np.ndarray, n: int) -> np.ndarray:
    """Mean true range of the last n bars at each bar (NaN before n bars): a function of its window only."""
    m = len(c)
    out = np.full(m, np.nan)
    if m < n + 1:
        return out
    prev = np.r_[np.nan, c[:-1]]
    tr = np.fmax(h - low, np.fmax(np.abs(h - prev), np.abs(low - prev)))
    tr[0] = np.nan  # no previous close: the first bar's true range is unknown
    out[n - 1:] = sliding_window_view(tr, n).mean(axis=1)
    return out


def pivots(h: np.ndarray, low: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean swing highs and lows (bar i against i-k..i+k; the first of equal extremes wins)."""
    n = len(h)
    hi = np.zeros(n, dtype=bool)
    lo = np.zeros(n, dtype=bool)
    if n < 2 * k + 1:
        return hi, lo
    wh = sliding_window_view(h, 2 * k + 1)
    wl = sliding_window_view(low, 2 * k + 1)
    ch, cl = h[k:n - k], low[k:n - k]
    left_h = wh[:, :k].max(axis=1)
    left_l = wl[:, :k].min(axis=1)
    hi[k:n - k] = (ch >= wh.max(axis=1)) & (ch > left_h)
    lo[k:n - k] = (cl <= wl.min(axis=1)) & (cl < left_l)
    return hi, lo


class _Series:
    """Arrays of one series and what every bar's levels share (ATR, pivots)."""

    def __init__(self, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray, p: LevelParams) -> None:
        self.h, self.low, self.c, self.v, self.p = h, low, c, v, p
        self.atr = windowed_atr(h, low, c, p.atr_bars)
        ph, pl = pivots(h, low, p.pivot_bars)
        self.piv_idx = np.flatnonzero(ph | pl)
        self.piv_price = np.where(ph[self.piv_idx], h[self.piv_idx], low[self.piv_idx])

    def levels(self, t: int) -> tuple[list[Level], float]:
        """Every level as of bar t's close, and the ATR used (NaN: no levels yet)."""
        p = self.p
        atr = float(self.atr[t]) if t < len(self.atr) else math.nan
        if not math.isfinite(atr) or atr <= 0:
            return [], math.nan
        a = max(0, t - p.lookback_bars + 1)
        tol = p.tolerance_atr * atr
        lo_i = int(np.searchsorted(self.piv_idx, a, side="left"))
        hi_i = int(np.searchsorted(self.piv_idx, t - p.pivot_bars, side="right"))
        idx = self.piv_idx[lo_i:hi_i]
        prices = self.piv_price[lo_i:hi_i]
        vwin = self.v[a:t + 1]
        vmean = float(vwin.mean()) if len(vwin) else 0.0
        rel_v = self.v[idx] / vmean if vmean > 0 else np.ones(len(idx))
        w = 0.5 ** ((t - idx) / p.halflife_bars) * rel_v
        if len(idx):
            order = np.argsort(prices, kind="stable")
            ps, ws = prices[order], w[order]
            cut = np.flatnonzero(np.concatenate(([True], np.diff(ps) > tol)))
            tw = np.add.reduceat(ws, cut)
            lv_price = np.add.reduceat(ps * ws, cut) / np.where(tw > 0, tw, 1.0)
            lv_price = np.where(tw > 0, lv_price, ps[cut])
            lv_touch = np.diff(np.append(cut, len(ps)))
        else:
            tw = lv_price = np.empty(0)
            lv_touch = np.empty(0, dtype=np.int64)
        # volume profile: high-volume nodes of the window
        hw, lw = self.h[a:t + 1], self.low[a:t + 1]
        top, bot = float(hw.max()), float(lw.min())
        if top > bot and vmean > 0:
            typ = (hw + lw + self.c[a:t + 1]) / 3.0
            nb = p.profile_bins
            b_of = np.minimum(((typ - bot) * (nb / (top - bot))).astype(np.int64), nb - 1)
            vol = np.bincount(b_of, weights=vwin, minlength=nb)
            mb = float(vol.mean())
            padded = np.concatenate(([-np.inf], vol, [-np.inf]))
            nodes = np.flatnonzero((vol > 2.0 * mb) & (vol >= padded[:-2]) & (vol >= padded[2:]))
            if len(nodes):
                centers = bot + (nodes + 0.5) * ((top - bot) / nb)
                bonus = vol[nodes] / mb - 1.0
                tw = tw.copy()
                extra_p, extra_w = [], []
                for cp, bo in zip(centers.tolist(), bonus.tolist(), strict=True):
                    d = np.abs(lv_price - cp) if len(lv_price) else np.empty(0)
                    if len(d) and float(d.min()) <= tol:
                        tw[int(np.argmin(d))] += bo
                    else:
                        extra_p.append(cp)
                        extra_w.append(bo)
                if extra_p:
                    lv_price = np.concatenate((lv_price, extra_p))
                    tw = np.concatenate((tw, extra_w))
                    lv_touch = np.concatenate((lv_touch, np.zeros(len(extra_p), dtype=np.int64)))
        out = list(zip(lv_price.tolist(), tw.tolist(), np.asarray(lv_touch).tolist(), strict=True))
        return [Level(pr, st, n) for pr, st, n in out], atr

    def nearest(self, t: int, max_levels: int | None = None) -> tuple[list[Level], list[Level], float]:
        """(supports nearest first, resistances nearest first, ATR) as of bar t's close."""
        levels, atr = self.levels(t)
        levels = [lv for lv in levels if lv.strength >= self.p.min_strength]
        close = float(self.c[t])
        sup = sorted((lv for lv in levels if lv.price < close), key=lambda lv: -lv.price)
        res = sorted((lv for lv in levels if lv.price > close), key=lambda lv: lv.price)
        m = max_levels or self.p.max_levels
        return sup[:m], res[:m], atr


def _arrays(candles: pd.DataFrame) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import pandas as pd

    need = ["ts", "high", "low", "close", "volume"]
    missing = [c for c in need if c not in candles.columns]
    if missing:
        raise ValueError(f"candles lack column(s) {missing}; need {need}")
    df = candles.sort_values("ts")
    if df["ts"].duplicated().any():
        raise ValueError(f"candles: duplicate bar at {df.loc[df['ts'].duplicated(), 'ts'].iloc[0]}")
    arrs = []
    for col in need[1:]:
        a = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        ok = (a >= 0) if col == "volume" else (a > 0)
        if not ok.all():
            i = int(np.argmin(ok))
            raise ValueError(f"candles: bad {col}={a[i]!r} at {df['ts'].iloc[i]}")
        arrs.append(a)
    return pd.to_datetime(df["ts"], utc=True).reset_index(drop=True), arrs[0], arrs[1], arrs[2], arrs[3]


def _utc(x: Any) -> pd.Timestamp:
    import pandas as pd

    t = pd.Timestamp(x)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def levels_at(candles: pd.DataFrame, at: Any = None, params: LevelParams | None = None) -> pd.DataFrame:
    """Nearest supports and resistances as of the close of the bar opening at ``at`` (default: the last
    bar). Bars after it are dropped before anything is computed. Columns: :data:`LEVEL_COLUMNS`."""
    import pandas as pd

    p = params or LevelParams()
    ts, h, low, c, v = _arrays(candles)
    if at is not None:
        keep = int((ts <= _utc(at)).sum())  # ts is sorted
        if keep == 0:
            raise ValueError(f"no candle at or before {at}")
        h, low, c, v = h[:keep], low[:keep], c[:keep], v[:keep]
    if len(c) == 0:
        return pd.DataFrame(columns=LEVEL_COLUMNS)
    s = _Series(h, low, c, v, p)
    sup, res, atr = s.nearest(len(c) - 1)
    rows = [{"side": side, "rank": r + 1, "price": lv.price, "strength": lv.strength, "touches": lv.touches,
             "distance_atr": abs(float(c[-1]) - lv.price) / atr}
            for side, lvls in (("support", sup), ("resistance", res)) for r, lv in enumerate(lvls)]
    out = pd.DataFrame(rows, columns=LEVEL_COLUMNS)
    out.attrs.update(close=float(c[-1]), atr=atr)
    return out


def levels_series(candles: pd.DataFrame, params: LevelParams | None = None, *, start: Any = None) -> pd.DataFrame:
    """Nearest levels of every bar (from ``start``): ts (bar open; levels as of its close), close, atr and
    :data:`LEVEL_COLUMNS`, one row per (bar, side, rank)."""
    import pandas as pd

    p = params or LevelParams()
    ts, h, low, c, v = _arrays(candles)
    s = _Series(h, low, c, v, p)
    first = 0 if start is None else int((ts < _utc(start)).sum())
    rows: list[tuple[Any, ...]] = []
    for t in range(first, len(c)):
        sup, res, atr = s.nearest(t)
        for side, lvls in (("support", sup), ("resistance", res)):
            for r, lv in enumerate(lvls):
                rows.append((ts.iloc[t], float(c[t]), atr, side, r + 1, lv.price, lv.strength, lv.touches,
                             abs(float(c[t]) - lv.price) / atr))
    return pd.DataFrame(rows, columns=["ts", "close", "atr", *LEVEL_COLUMNS])


def level_distance_features(h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray,
                            params: LevelParams | None = None) -> dict[str, np.ndarray]:
    """The model features, per bar: distance from the close to the nearest support and resistance in
    ATR units (NaN where there is none). Causal and a function of the arrays given only, so the
    features' bounded-history blocks reproduce it bit for bit."""
    p = params or LevelParams()
    n = len(c)
    sup_d = np.full(n, np.nan)
    res_d = np.full(n, np.nan)
    s = _Series(h, low, c, v, p)
    for t in range(n):
        sup, res, atr = s.nearest(t, 1)
        if sup:
            sup_d[t] = (c[t] - sup[0].price) / atr
        if res:
            res_d[t] = (res[0].price - c[t]) / atr
    return {FEATURE_NAMES[0]: sup_d, FEATURE_NAMES[1]: res_d}


def level_features(series: Any) -> dict[str, np.ndarray]:
    """The features extension (entasis.features.extensions): ``series`` has h, low, c, v arrays.

    Reaches back lookback_bars + pivot and ATR windows (~260 bars), inside the 1000-bar warm-up every
    incremental features build reads before its first rewritten bar."""
    return level_distance_features(series.h, series.low, series.c, series.v)
