"""Small synthetic markets for backtest tests: features.bars-shaped rows plus closes.

Each symbol's daily log return is ``r[u] = strength · 0.02 · mean(sig[u−h .. u−1]) + 0.01 · ε[u]`` where
``sig`` is an iid N(0, 1) feature known on its own day. So ``sig`` at t (and its recent lags) moves the
next h days' return — a causal, learnable signal when ``strength > 0`` and pure noise at 0;
``sig_known`` is the part of the next h days' drift already determined at t (a backward-only feature). Labels follow
features.bars: ``y_ret_{h}d = close[t+h]/close[t] − 1``, ``y_cls_{h}d`` 0/1/2 around ±band, NULL for
the last h rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

FEATURES = ["sig", "sig_known", "past_ret", "noise_0", "noise_1"]


def make_market(*, symbols: Sequence[str] = ("AAA/USDT", "BBB/USDT"), n_days: int = 360, strength: float = 0.0,
                horizons: Sequence[int] = (7,), band: float = 0.02, seed: int = 0,
                start: str = "2020-01-01") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(frame, prices): frame has symbol, ts, exchange, timeframe, warmup, FEATURES and labels."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=n_days, freq="1D", tz="UTC")
    frames, prices = [], []
    hmax = max(horizons)
    for sym in symbols:
        s = rng.normal(size=n_days)
        eps = rng.normal(size=n_days)
        h0 = min(horizons)
        cs = np.concatenate([[0.0], np.cumsum(s)])
        drift = np.zeros(n_days)
        for u in range(1, n_days):
            lo = max(0, u - h0)
            drift[u] = (cs[u] - cs[lo]) / h0
        r = strength * 0.02 * drift + 0.01 * eps
        r[0] = 0.0
        close = 100.0 * np.exp(np.cumsum(r))
        df = pd.DataFrame({"exchange": "synth", "symbol": sym, "timeframe": "1d", "ts": ts,
                           "warmup": np.arange(n_days) < 10})
        df["sig"] = s
        w = (h0 - np.arange(h0)) / h0                      # weight of sig[t-j] in the next h0 days' drift
        known = np.convolve(s, w)[:n_days]                  # sum_j w[j] * sig[t-j]: known at t
        df["sig_known"] = known
        df["past_ret"] = np.r_[np.nan, close[1:] / close[:-1] - 1]
        df["noise_0"] = rng.normal(size=n_days)
        df["noise_1"] = rng.normal(size=n_days)
        for h in horizons:
            fwd = np.full(n_days, np.nan)
            fwd[:-h] = close[h:] / close[:-h] - 1
            cls = np.where(np.isnan(fwd), np.nan, np.where(fwd > band, 2.0, np.where(fwd < -band, 0.0, 1.0)))
            df[f"y_cls_{h}d"] = pd.array(cls, dtype="Float64").astype("Int16")
            df[f"y_ret_{h}d"] = fwd
            df[f"y_vol_{h}d"] = np.nan
        frames.append(df)
        prices.append(pd.DataFrame({"symbol": sym, "ts": ts, "close": close}))
        assert hmax < n_days
    return pd.concat(frames, ignore_index=True), pd.concat(prices, ignore_index=True)


def tiny(name: str, **kw: object) -> dict[str, object]:
    """A fast, single-threaded tree model spec for tests."""
    sizes: dict[str, dict[str, object]] = {
        "rf": {"n_estimators": 15, "max_depth": 4, "min_samples_leaf": 10},
        "xgb": {"n_estimators": 15, "max_depth": 3, "learning_rate": 0.3},
        "lgbm": {"n_estimators": 15, "num_leaves": 7, "learning_rate": 0.3},
    }
    return {"name": name, **sizes[name], "n_jobs": 1, "lags": [1], "roll": [3], **kw}
