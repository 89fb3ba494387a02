"""Synthetic features.bars frames with a planted (or no) signal, for tests and benchmarks.

The market: each symbol's daily log return is ``r[t+1] = signal · sigma[t] · f_signal[t] + sigma[t] · eps``
with a GARCH(1,1)-like ``sigma`` and an AR(1) driver ``f_signal`` (persistent, so h-day returns are
predictable when ``signal > 0``). Labels follow features.bars: ``y_ret_{h}d`` is the forward h-day log
return, ``y_cls_{h}d`` is 0 / 1 / 2 for below -band / inside / above +band, ``y_vol_{h}d`` is the
annualised std of the next h daily returns; the last h rows of each symbol have NULL labels.
With ``signal=0`` the features carry no information about future direction.

``planted="label"`` instead makes returns driftless and sets ``f_signal[t] = signal · z(y_ret_{h}d[t]) +
noise`` for the smallest horizon h: a feature that peeks at the label on purpose, so tests can check
that each model *can* learn a relationship that holds out of sample (and, with ``signal=0``, that none
is found in noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from entasis.domain import classify_returns, label_column

if TYPE_CHECKING:
    import pandas as pd


def synthetic_bars(*, symbols: Sequence[str] = ("BTC/USDT", "ETH/USDT", "SOL/USDT"), n_days: int = 600,
                   n_noise: int = 5, signal: float = 0.6, horizons: Sequence[int] = (7, 14, 30),
                   band: float = 0.02, warmup: int = 0, seed: int = 0,
                   start: str = "2020-01-01", planted: str = "drift") -> pd.DataFrame:
    """One row per (symbol, day); features ``ret_1d, vol_7d, f_signal, noise_*``; labels per horizon."""
    import pandas as pd

    if planted not in ("drift", "label"):
        raise ValueError(f"planted must be 'drift' or 'label'; got {planted!r}")
    rng = np.random.default_rng(seed)
    drift = signal if planted == "drift" else 0.0
    ts = pd.date_range(start, periods=n_days, freq="1D", tz="UTC")
    frames = []
    for sym in symbols:
        f = np.zeros(n_days)
        for t in range(1, n_days):
            f[t] = 0.95 * f[t - 1] + np.sqrt(1 - 0.95 ** 2) * rng.normal()
        var = np.empty(n_days)
        r = np.zeros(n_days)
        var[0] = 0.03 ** 2
        for t in range(1, n_days):
            var[t] = 0.03 ** 2 * 0.05 + 0.1 * r[t - 1] ** 2 + 0.85 * var[t - 1]
            sigma_prev = np.sqrt(var[t - 1])
            r[t] = drift * sigma_prev * f[t - 1] * 0.6 + np.sqrt(var[t]) * rng.normal()
        df = pd.DataFrame({"exchange": "binance", "symbol": sym, "timeframe": "1d", "ts": ts})
        df["warmup"] = np.arange(n_days) < warmup
        s = pd.Series(r)
        df["ret_1d"] = r
        df["vol_7d"] = s.rolling(7, min_periods=2).std().to_numpy() * np.sqrt(365)
        df["f_signal"] = f
        for k in range(n_noise):
            df[f"noise_{k}"] = rng.normal(size=n_days)
        for h in horizons:
            fwd = np.full(n_days, np.nan)
            vol = np.full(n_days, np.nan)
            for t in range(n_days - h):
                window = r[t + 1:t + h + 1]
                fwd[t] = window.sum()
                vol[t] = window.std(ddof=1) * np.sqrt(365) if h > 1 else abs(window[0]) * np.sqrt(365)
            codes, unknown = classify_returns(fwd, band)
            df[label_column("cls", h)] = pd.array([None if u else int(c) for c, u in zip(codes, unknown, strict=True)],
                                                  dtype="Int16")
            df[label_column("ret", h)] = fwd
            df[label_column("vol", h)] = vol
        if planted == "label":
            fwd = df[label_column("ret", min(horizons))].to_numpy(dtype=float)
            z = (fwd - np.nanmean(fwd)) / (np.nanstd(fwd) or 1.0)
            df["f_signal"] = np.where(np.isnan(z), 0.0, signal * z) + rng.normal(size=n_days)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


SYNTH_FEATURES = ["ret_1d", "vol_7d", "f_signal"]


def synthetic_features(n_noise: int = 5) -> list[str]:
    return SYNTH_FEATURES + [f"noise_{k}" for k in range(n_noise)]
