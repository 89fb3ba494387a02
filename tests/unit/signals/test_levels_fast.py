"""The compiled levels features equal the original per-bar Python path (kept here only, as the reference).

Why: ``level_distance_features`` was rewritten as a numba kernel for speed (~235 us -> ~1 us a bar); the
feature columns are stored and modelled on, so the new path must give the same numbers: bit for bit
(within 1e-12 at most) on simulated and real data, for default and non-default parameters.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from entasis.signals.levels import (
    FEATURE_NAMES,
    Level,
    LevelParams,
    level_distance_features,
    pivots,
    windowed_atr,
)
from tests.unit.features._data import candles


class _RefSeries:
    """The per-bar implementation as it was (entasis/signals/levels.py before the kernel): the reference."""

    def __init__(self, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray, p: LevelParams) -> None:
        self.h, self.low, self.c, self.v, self.p = h, low, c, v, p
        self.atr = windowed_atr(h, low, c, p.atr_bars)
        ph, pl = pivots(h, low, p.pivot_bars)
        self.piv_idx = np.flatnonzero(ph | pl)
        self.piv_price = np.where(ph[self.piv_idx], h[self.piv_idx], low[self.piv_idx])

    def levels(self, t: int) -> tuple[list[Level], float]:
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
        levels, atr = self.levels(t)
        levels = [lv for lv in levels if lv.strength >= self.p.min_strength]
        close = float(self.c[t])
        sup = sorted((lv for lv in levels if lv.price < close), key=lambda lv: -lv.price)
        res = sorted((lv for lv in levels if lv.price > close), key=lambda lv: lv.price)
        m = max_levels or self.p.max_levels
        return sup[:m], res[:m], atr


def reference_distance_features(h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray,
                                params: LevelParams | None = None) -> dict[str, np.ndarray]:
    """The original per-bar ``level_distance_features`` (slow: ~235 us a bar)."""
    p = params or LevelParams()
    n = len(c)
    sup_d = np.full(n, np.nan)
    res_d = np.full(n, np.nan)
    s = _RefSeries(h, low, c, v, p)
    for t in range(n):
        sup, res, atr = s.nearest(t, 1)
        if sup:
            sup_d[t] = (c[t] - sup[0].price) / atr
        if res:
            res_d[t] = (res[0].price - c[t]) / atr
    return {FEATURE_NAMES[0]: sup_d, FEATURE_NAMES[1]: res_d}


def _sim(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random walk with ranges (levels form and break), spiky volume, flat stretches and repeated prices."""
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    c[n // 3:n // 3 + 40] = c[n // 3]  # a flat run: equal highs/lows, ties everywhere
    c = np.round(c, 2)  # tick size: repeated prices
    spread = np.abs(rng.normal(0, 0.006, n)) * c
    h = np.round(c + spread, 2)
    low = np.round(np.maximum(c - spread * rng.uniform(0.2, 1.5, n), 0.01), 2)
    v = rng.lognormal(3, 1, n)
    v[rng.random(n) < 0.02] *= 20
    v[n // 2:n // 2 + 30] = 0.0  # no trades for a while
    return h, low, c, v


def _assert_same(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    for name in FEATURE_NAMES:
        g, r = got[name], ref[name]
        assert g.shape == r.shape, name
        assert (np.isnan(g) == np.isnan(r)).all(), f"{name}: NaN at different bars"
        ok = ~np.isnan(r)
        assert ok.sum() > 0.5 * len(r), f"{name}: too few levels to compare"
        np.testing.assert_allclose(g[ok], r[ok], rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_equals_reference_on_simulated_data(seed: int) -> None:
    h, low, c, v = _sim(1500, seed)
    _assert_same(level_distance_features(h, low, c, v), reference_distance_features(h, low, c, v))


def test_kernel_equals_reference_with_other_params() -> None:
    h, low, c, v = _sim(800, 5)
    for p in (LevelParams(lookback_bars=20, pivot_bars=1, atr_bars=2, profile_bins=5, min_strength=0.2),
              LevelParams(lookback_bars=400, pivot_bars=5, tolerance_atr=1.5, halflife_bars=10.0,
                          profile_bins=40)):
        _assert_same(level_distance_features(h, low, c, v, p), reference_distance_features(h, low, c, v, p))


@pytest.mark.parametrize(("pair", "tf", "rows"), [("BTCUSDT", "1d", None), ("SOLUSDT", "1h", 6000),
                                                  ("SHIBUSDT", "1h", 3000), ("ETHUSDT", "4h", 4000)])
def test_kernel_equals_reference_on_real_data(shared_data: Path, pair: str, tf: str, rows: int | None) -> None:
    df = candles(shared_data, pair, tf, rows=rows)
    h, low, c, v = (df[k].to_numpy(dtype=np.float64) for k in ("high", "low", "close", "volume"))
    _assert_same(level_distance_features(h, low, c, v), reference_distance_features(h, low, c, v))


def test_short_and_empty_series() -> None:
    h, low, c, v = _sim(300, 9)
    for n in (0, 1, 5, 15, 16):
        got = level_distance_features(h[:n], low[:n], c[:n], v[:n])
        ref = reference_distance_features(h[:n], low[:n], c[:n], v[:n])
        for name in FEATURE_NAMES:
            assert got[name].shape == (n,)
            assert np.array_equal(got[name], ref[name], equal_nan=True)


def test_mismatched_lengths_are_refused() -> None:
    h, low, c, v = _sim(100, 1)
    with pytest.raises(ValueError, match="one length"):
        level_distance_features(h, low, c, v[:-1])


def test_missing_highs_lows_and_volumes_match_the_reference() -> None:
    """NaN highs, lows or volumes (a gap filled with NaN) are handled as the per-bar path handles them."""
    h, low, c, v = _sim(1200, 4)
    h, low, v = h.copy(), low.copy(), v.copy()
    h[300] = np.nan
    low[700:703] = np.nan
    v[950] = np.nan
    _assert_same(level_distance_features(h, low, c, v), reference_distance_features(h, low, c, v))


def test_works_where_numba_has_no_cache_directory() -> None:
    """A read-only install with no writable home: numba's cache=True raises at import; we compile uncached.
    (No locator is a fault we cannot provoke as root, so the locator list is emptied in a fresh process.)"""
    code = (
        "import numba.core.caching as cc\n"
        "cc.CacheImpl._locator_classes = []\n"
        "import numpy as np\n"
        "from entasis.signals.levels import level_distance_features\n"
        "r = np.random.default_rng(0); c = 100 + np.cumsum(r.normal(0, 1, 400))\n"
        "out = level_distance_features(c + 1, c - 1, c, r.uniform(1, 2, 400))\n"
        "assert np.isfinite(out['support_dist_atr']).sum() > 100\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[3]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
