"""Do support/resistance levels matter? Reversal rates after touching a level vs random control levels.

Why: a level is only worth publishing if price behaves differently there than anywhere else. The
test, per asset and bar t (levels as of t's close, so nothing after t is used to place them):

* touch: the next bar reaches the nearest level (support: low[t+1] <= S; resistance: high[t+1] >= R);
* reversal within k bars: from bar t+1 to t+k, a close at least ``move_atr`` ATR back on the near side
  (support: >= S + m ATR; resistance: <= R - m ATR) comes before any close ``move_atr`` ATR through it;
* control: the same test for a level placed at a random distance drawn from the same asset's real
  level distances (in ATR, same side), ``n_controls`` draws per bar; so the controls are touched about
  as often and sit at the same distances, but are not levels;
* the difference of reversal rates (real - control) gets a block bootstrap CI that resamples calendar
  months (touches of one month, and of all assets in it, are not independent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.signals.levels import LevelParams, LevelSeries, candle_arrays

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class EvalResult:
    touches_real: int
    touches_control: int
    rate_real: float
    rate_control: float
    diff: float
    ci_low: float
    ci_high: float
    n_months: int

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _reversal(c: np.ndarray, start: int, k: int, level: float, step: float, side: int) -> bool:
    """side +1 support (reverses up), -1 resistance (reverses down); first passage over closes."""
    seg = c[start:start + k]
    back = np.flatnonzero(side * (seg - level) >= step)
    through = np.flatnonzero(side * (level - seg) >= step)
    if len(back) == 0:
        return False
    return len(through) == 0 or back[0] < through[0]


def touch_events(candles: pd.DataFrame, *, params: LevelParams | None = None, k: int = 5, move_atr: float = 1.0,
                 n_controls: int = 10, seed: int = 0, min_bars: int = 60) -> pd.DataFrame:
    """Every touch of a real or control level in one series: ts (bar t), kind ('real'/'control'), side,
    distance_atr, reversed (bool)."""
    import pandas as pd

    if k < 1 or move_atr <= 0 or n_controls < 1:
        raise ValueError("k >= 1, move_atr > 0 and n_controls >= 1 are required")
    p = params or LevelParams()
    ts, h, low, c, v = candle_arrays(candles)
    s = LevelSeries(h, low, c, v, p)
    n = len(c)
    rows_t, rows_side, rows_d, rows_atr = [], [], [], []
    for t in range(min_bars, n - k):
        sup, res, atr = s.nearest(t, 1)
        if not np.isfinite(atr):
            continue
        if sup:
            rows_t.append(t)
            rows_side.append(1)
            rows_d.append((c[t] - sup[0].price) / atr)
            rows_atr.append(atr)
        if res:
            rows_t.append(t)
            rows_side.append(-1)
            rows_d.append((res[0].price - c[t]) / atr)
            rows_atr.append(atr)
    if not rows_t:
        return pd.DataFrame(columns=["ts", "kind", "side", "distance_atr", "reversed"])
    tt, side, dist, atrs = (np.asarray(x) for x in (rows_t, rows_side, rows_d, rows_atr))
    rng = np.random.default_rng(seed)
    out: list[tuple[Any, ...]] = []

    def test(t: int, sd: int, d: float, atr: float, kind: str) -> None:
        level = c[t] - sd * d * atr
        touched = low[t + 1] <= level if sd == 1 else h[t + 1] >= level
        if touched:
            out.append((ts.iloc[t], kind, "support" if sd == 1 else "resistance", d,
                        _reversal(c, t + 1, k, level, move_atr * atr, sd)))

    for i in range(len(tt)):
        test(int(tt[i]), int(side[i]), float(dist[i]), float(atrs[i]), "real")
    for sd in (1, -1):
        idx = np.flatnonzero(side == sd)
        if len(idx) == 0:
            continue
        pool = dist[idx]
        for _ in range(n_controls):
            draws = rng.choice(pool, size=len(idx), replace=True)
            for i, d in zip(idx.tolist(), draws.tolist(), strict=True):
                test(int(tt[i]), sd, float(d), float(atrs[i]), "control")
    return pd.DataFrame(out, columns=["ts", "kind", "side", "distance_atr", "reversed"])


def compare(events: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> EvalResult:
    """Reversal rate of real minus control touches, with a month-block bootstrap percentile CI."""
    if events.empty:
        raise ValueError("no touch events to compare")
    months = events["ts"].dt.strftime("%Y-%m").to_numpy()
    uniq, mi = np.unique(months, return_inverse=True)
    real = (events["kind"] == "real").to_numpy()
    rev = events["reversed"].to_numpy(dtype=float)
    m = len(uniq)
    # per-month sums: reversals and counts for real and control
    sr = np.bincount(mi, weights=rev * real, minlength=m)
    nr = np.bincount(mi, weights=real.astype(float), minlength=m)
    sc = np.bincount(mi, weights=rev * ~real, minlength=m)
    nc = np.bincount(mi, weights=(~real).astype(float), minlength=m)
    if nr.sum() == 0 or nc.sum() == 0:
        raise ValueError("need touches of both real and control levels")
    rate_r, rate_c = sr.sum() / nr.sum(), sc.sum() / nc.sum()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, m, size=(n_boot, m))
    with np.errstate(invalid="ignore", divide="ignore"):
        diffs = sr[pick].sum(1) / nr[pick].sum(1) - sc[pick].sum(1) / nc[pick].sum(1)
    diffs = diffs[np.isfinite(diffs)]
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return EvalResult(int(nr.sum()), int(nc.sum()), float(rate_r), float(rate_c), float(rate_r - rate_c),
                      float(lo), float(hi), m)
