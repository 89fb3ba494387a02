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
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view

from entasis.domain import utc_timestamp

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
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.model_dump().items() if k in names})

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


class LevelSeries:
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


def candle_arrays(candles: pd.DataFrame) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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


def levels_at(candles: pd.DataFrame, at: Any = None, params: LevelParams | None = None) -> pd.DataFrame:
    """Nearest supports and resistances as of the close of the bar opening at ``at`` (default: the last
    bar). Bars after it are dropped before anything is computed. Columns: :data:`LEVEL_COLUMNS`."""
    import pandas as pd

    p = params or LevelParams()
    ts, h, low, c, v = candle_arrays(candles)
    if at is not None:
        keep = int((ts <= utc_timestamp(at, "at")).sum())  # ts is sorted
        if keep == 0:
            raise ValueError(f"no candle at or before {at}")
        h, low, c, v = h[:keep], low[:keep], c[:keep], v[:keep]
    if len(c) == 0:
        return pd.DataFrame(columns=LEVEL_COLUMNS)
    s = LevelSeries(h, low, c, v, p)
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
    ts, h, low, c, v = candle_arrays(candles)
    s = LevelSeries(h, low, c, v, p)
    first = 0 if start is None else int((ts < utc_timestamp(start, "start")).sum())
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
    features' bounded-history blocks reproduce it bit for bit.

    Computed by a compiled kernel (:func:`_distance_kernel`) that repeats :meth:`LevelSeries.levels` bar by
    bar with the same floating-point operations in the same order (numpy's pairwise sums included), so
    its output is identical to the per-bar Python path (tests/unit/signals/test_levels_fast.py)."""
    p = params or LevelParams()
    h, low, c, v = (np.ascontiguousarray(x, dtype=np.float64) for x in (h, low, c, v))
    n = len(c)
    if not (len(h) == len(low) == len(v) == n):
        raise ValueError(f"h, low, c, v must have one length; got {len(h)}, {len(low)}, {n}, {len(v)}")
    s = LevelSeries(h, low, c, v, p)
    # recency weights by age, with the very numpy call the per-bar path makes (identical values)
    decay = 0.5 ** (np.arange(p.lookback_bars + 1, dtype=np.int64) / p.halflife_bars)
    piv_idx = np.ascontiguousarray(s.piv_idx, dtype=np.int64)
    piv_price = np.ascontiguousarray(s.piv_price, dtype=np.float64)
    typ = (h + low + c) / 3.0  # the volume profile's typical price, elementwise as the per-bar path has it
    bad_hl = np.concatenate(([0], np.cumsum(np.isnan(h) | np.isnan(low)))).astype(np.int64)
    sup_d, res_d = _distance_kernel(h, low, c, v, typ, bad_hl, s.atr, piv_idx, piv_price, decay, p.lookback_bars,
                                    p.pivot_bars, float(p.tolerance_atr), p.profile_bins, float(p.min_strength))
    return {FEATURE_NAMES[0]: sup_d, FEATURE_NAMES[1]: res_d}


def level_features(series: Any) -> dict[str, np.ndarray]:
    """The features extension (entasis.features.extensions): ``series`` has h, low, c, v arrays.

    Reaches back lookback_bars + pivot and ATR windows (~260 bars), inside the 1000-bar warm-up every
    incremental features build reads before its first rewritten bar."""
    return level_distance_features(series.h, series.low, series.c, series.v)


# --- compiled per-bar kernel (level_distance_features) ----------------------------------------------
# Why: the per-bar Python path costs ~235 us a bar (~15 s per 5-year hourly series), which dominated the
# features build. numba (already a pinned dependency, via shap) runs the same arithmetic in ~3 us.


def _jit(fn: Any) -> Any:
    """numba-compile with an on-disk cache (saves ~1 s a process); without one where no cache directory
    is writable (a read-only install with no writable home), rather than failing at import."""
    try:
        return njit(cache=True)(fn)
    except RuntimeError:
        return njit(fn)


@_jit
def _block_sum(a: np.ndarray, lo: int, n: int) -> float:  # pragma: no cover - compiled
    """numpy's pairwise-sum leaf (n <= 128): plain loop under 8, else 8 accumulators."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@_jit
def _pairwise_sum(a: np.ndarray, lo: int, n: int, t_lo: np.ndarray, t_n: np.ndarray,
                  vals: np.ndarray) -> float:  # pragma: no cover - compiled
    """numpy's pairwise summation of a[lo:lo+n] (add.reduce on a contiguous float64 array), bit for bit:
    halves (the first a multiple of 8) summed recursively down to 128-element leaves. Written with an
    explicit stack because numba's cache cannot reload recursive functions. ``t_lo``, ``t_n`` (192 int64;
    n < 0 there means "add the top two values") and ``vals`` (96) are work space, given by the caller."""
    if n <= 128:
        return _block_sum(a, lo, n)
    nt = 1
    nv = 0
    t_lo[0] = lo
    t_n[0] = n
    while nt > 0:
        nt -= 1
        lo_, n_ = t_lo[nt], t_n[nt]
        if n_ < 0:
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
        elif n_ <= 128:
            vals[nv] = _block_sum(a, lo_, n_)
            nv += 1
        else:
            n2 = n_ // 2
            n2 -= n2 % 8
            t_n[nt] = -1  # combine, after both halves
            t_lo[nt + 1], t_n[nt + 1] = lo_ + n2, n_ - n2  # right half, second
            t_lo[nt + 2], t_n[nt + 2] = lo_, n2  # left half, first
            nt += 3
    return vals[0]


@_jit
def _distance_kernel(h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray, typ: np.ndarray,
                     bad_hl: np.ndarray, atr_arr: np.ndarray,
                     piv_idx: np.ndarray, piv_price: np.ndarray, decay: np.ndarray, lookback: int, k: int,
                     tol_atr: float, nb: int, min_strength: float) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """:meth:`LevelSeries.levels` + :meth:`LevelSeries.nearest` (1 level a side) for every bar, same operation order:
    pivot clusters are numpy's ``reduceat`` (first element + pairwise sum of the rest), means are pairwise."""
    n = len(c)
    sup_d = np.full(n, np.nan)
    res_d = np.full(n, np.nan)
    npiv = len(piv_idx)
    ps = np.empty(npiv)
    ws = np.empty(npiv)
    pw = np.empty(npiv)
    sp = np.empty(npiv)  # the window's known pivots sorted by price (ties: older first, as a stable argsort)
    si = np.empty(npiv, dtype=np.int64)
    ms = 0
    lv_price = np.empty(npiv)
    lv_w = np.empty(npiv)
    vol = np.empty(nb)
    st_lo = np.empty(192, dtype=np.int64)
    st_n = np.empty(192, dtype=np.int64)
    st_v = np.empty(96)
    dq_h = np.empty(n, dtype=np.int64)  # monotonic deques: the window's highest high and lowest low
    dq_l = np.empty(n, dtype=np.int64)
    hh = th = hl = tl = 0
    lo_i = 0
    hi_i = 0
    for t in range(n):
        a = max(0, t - lookback + 1)
        while th > hh and h[dq_h[th - 1]] <= h[t]:
            th -= 1
        dq_h[th] = t
        th += 1
        while dq_h[hh] < a:
            hh += 1
        while tl > hl and low[dq_l[tl - 1]] >= low[t]:
            tl -= 1
        dq_l[tl] = t
        tl += 1
        while dq_l[hl] < a:
            hl += 1
        atr = atr_arr[t]
        if not (np.isfinite(atr) and atr > 0):
            continue
        tol = tol_atr * atr
        # the sorted list holds pivots lo_i..hi_i-1: drop those older than the window (searchsorted left) ...
        while lo_i < npiv and piv_idx[lo_i] < a:
            if lo_i < hi_i:
                q = 0
                while si[q] != piv_idx[lo_i]:
                    q += 1
                for r in range(q, ms - 1):
                    sp[r] = sp[r + 1]
                    si[r] = si[r + 1]
                ms -= 1
            lo_i += 1
        if hi_i < lo_i:
            hi_i = lo_i
        # ... and add those confirmed by now (searchsorted right of t - k), after any equal price
        while hi_i < npiv and piv_idx[hi_i] <= t - k:
            pr = piv_price[hi_i]
            q = ms
            while q > 0 and sp[q - 1] > pr:
                sp[q] = sp[q - 1]
                si[q] = si[q - 1]
                q -= 1
            sp[q] = pr
            si[q] = piv_idx[hi_i]
            ms += 1
            hi_i += 1
        m = ms
        nw = t + 1 - a
        vmean = _pairwise_sum(v, a, nw, st_lo, st_n, st_v) / nw
        for j in range(m):
            idx = si[j]
            rel = v[idx] / vmean if vmean > 0 else 1.0
            w = decay[t - idx] * rel
            ps[j] = sp[j]
            ws[j] = w
            pw[j] = sp[j] * w
        # clusters: split where neighbours are more than tol apart; reduceat = first + pairwise(rest)
        nl = 0
        s0 = 0
        for j in range(1, m + 1):
            if j == m or ps[j] - ps[j - 1] > tol:
                tw = ws[s0] + _pairwise_sum(ws, s0 + 1, j - s0 - 1, st_lo, st_n, st_v)
                tp = pw[s0] + _pairwise_sum(pw, s0 + 1, j - s0 - 1, st_lo, st_n, st_v)
                lv_price[nl] = tp / tw if tw > 0 else ps[s0]
                lv_w[nl] = tw
                nl += 1
                s0 = j
        best_sup = -np.inf
        best_res = np.inf
        close = c[t]
        # volume profile: high-volume nodes of the window
        top = h[dq_h[hh]]  # exact: a max is one of the values (NaN windows are skipped below)
        bot = low[dq_l[hl]]
        nan_hl = bad_hl[t + 1] - bad_hl[a] > 0
        if not nan_hl and top > bot and vmean > 0:
            scale = nb / (top - bot)
            for b in range(nb):
                vol[b] = 0.0
            for i in range(a, t + 1):
                bi = int((typ[i] - bot) * scale)
                if bi > nb - 1:
                    bi = nb - 1
                if bi < 0:
                    raise ValueError("levels: a close outside the window's range (NaN close?)")
                vol[bi] += v[i]
            mb = _pairwise_sum(vol, 0, nb, st_lo, st_n, st_v) / nb
            width = (top - bot) / nb
            for b in range(nb):
                left = vol[b - 1] if b > 0 else -np.inf
                right = vol[b + 1] if b < nb - 1 else -np.inf
                if vol[b] > 2.0 * mb and vol[b] >= left and vol[b] >= right:
                    cp = bot + (b + 0.5) * width
                    bo = vol[b] / mb - 1.0
                    jbest = -1
                    dbest = np.inf
                    for j in range(nl):
                        d = abs(lv_price[j] - cp)
                        if jbest < 0 or d < dbest:
                            dbest = d
                            jbest = j
                    if jbest >= 0 and dbest <= tol:
                        lv_w[jbest] += bo
                    elif bo >= min_strength:  # a level of its own
                        if cp < close and cp > best_sup:
                            best_sup = cp
                        elif cp > close and cp < best_res:
                            best_res = cp
        for j in range(nl):
            if lv_w[j] >= min_strength:
                pr = lv_price[j]
                if pr < close and pr > best_sup:
                    best_sup = pr
                elif pr > close and pr < best_res:
                    best_res = pr
        if best_sup > -np.inf:
            sup_d[t] = (close - best_sup) / atr
        if best_res < np.inf:
            res_d[t] = (best_res - close) / atr
    return sup_d, res_d
