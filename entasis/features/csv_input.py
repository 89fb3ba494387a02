"""Features straight from a candle CSV file, no database: the backtest CLI, the signals CLI and the
benches read market files through here, so they all parse a file the same way and run the same
:func:`entasis.features.compute.compute`.

The file formats (yanniedog, CryptoDataDownload, Kaggle CMC, generic) are parsed by
:func:`entasis.sim.replay.load_candle_csv`, the one CSV parser the replay exchange also uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from entasis import domain
from entasis.features import catalog, joins
from entasis.features.compute import Extras, LabelParams, compute
from entasis.sim.replay import ReplayFormatError, load_candle_csv, split_pair

if TYPE_CHECKING:
    import pandas as pd

_NS = 10**9


def read_candle_csv(path: str | Path) -> pd.DataFrame:
    """A candle CSV as ts, open, high, low, close, volume, quote_volume (``attrs``: symbol, timeframe
    when the file or its name says). Nothing is cleaned; :func:`compute` refuses duplicates and bad rows."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"candle CSV {p} does not exist")
    return load_candle_csv(p)


def infer_timeframe(ts: pd.Series) -> str:
    """The timeframe whose bar length is the most common gap between consecutive bars."""
    t = np.sort(joins.utc_ns(ts, "candles"))
    if len(t) < 2:
        raise ValueError("cannot infer a timeframe from fewer than 2 bars; pass timeframe=")
    d = np.diff(t)
    vals, counts = np.unique(d[d > 0], return_counts=True)
    step = int(vals[np.argmax(counts)]) // _NS
    for tf in domain.PIPELINE_TIMEFRAMES:
        if catalog.timeframe_seconds(tf) == step:
            return tf
    raise ValueError(f"bars are {step}s apart, which is no known timeframe; pass timeframe=")


def compute_from_candles_csv(
    path: str | Path,
    *,
    timeframe: str | None = None,
    exchange: str = "csv",
    symbol: str | None = None,
    extras: Extras | None = None,
    labels: LabelParams | None = None,
) -> pd.DataFrame:
    """Features straight from a candle CSV (for the backtest CLI): same ``compute``, no database.

    The symbol defaults to what the file says, else its name ('BTCUSDT_1d.csv' -> 'BTC/USDT'); the
    timeframe to what the name says, else the most common bar spacing. Duplicate or unsorted-and-
    conflicting bars are an error (clean such files first; compute never guesses which row is right).
    """
    df = read_candle_csv(path)
    tf = timeframe or (str(df["timeframe"].iloc[0]) if "timeframe" in df.columns and len(df) else None)
    tf = tf or df.attrs.get("timeframe") or infer_timeframe(df["ts"])
    sym = symbol or (str(df["symbol"].iloc[0]) if "symbol" in df.columns and len(df) else None)
    sym = sym or df.attrs.get("symbol") or symbol_from_name(path)
    df = df.drop(columns=[c for c in ("exchange", "symbol", "timeframe") if c in df.columns])
    return compute(df, extras, timeframe=tf, exchange=exchange, symbol=sym, labels=labels)


def symbol_from_name(path: str | Path) -> str:
    """'BTCUSDT_1d.csv' -> 'BTC/USDT' (:func:`entasis.sim.replay.split_pair`); the upper-cased stem
    when no known quote ends it."""
    stem = Path(path).stem.split("_")[0].upper()
    try:
        return split_pair(stem)
    except ReplayFormatError:
        return stem
