"""Shared synthetic frames and tiny model settings for the models tests (CPU, seconds not minutes)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from entasis.models.synthetic import synthetic_bars, synthetic_features

FEATS = synthetic_features(3)
TARGET = "y_cls_7d"
# Tiny but real: every member as the ensemble would build it, sized for a 2-core shared box.
TINY: dict[str, dict[str, Any]] = {
    "lstm": {"seq_len": 10, "hidden": (16,), "dense": 8, "max_epochs": 12, "batch_size": 64, "patience": 4,
             "num_threads": 1},
    "rf": {"n_estimators": 60, "n_jobs": 1},
    "xgb": {"n_estimators": 80, "n_jobs": 1},
    "lgbm": {"n_estimators": 80, "n_jobs": 1},
}


def frame(signal: float, *, seed: int = 1, n_days: int = 500) -> pd.DataFrame:
    return synthetic_bars(n_days=n_days, signal=signal, n_noise=3, seed=seed, planted="label",
                          symbols=("BTC/USDT", "ETH/USDT", "SOL/USDT"))


def labels(df: pd.DataFrame, target: str = TARGET) -> np.ndarray:
    return df[target].to_numpy(dtype=float, na_value=np.nan)
