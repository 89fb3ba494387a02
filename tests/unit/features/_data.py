"""Real shared data shaped for the features tests (read in place, never copied)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def candles(shared: Path, pair: str = "BTCUSDT", timeframe: str = "1d", *, exchange: str = "binance",
            symbol: str | None = None, rows: int | None = None) -> pd.DataFrame:
    """Binance spot klines from binance_spot_yanniedog as market.candles-shaped rows."""
    df = pd.read_csv(shared / "binance_spot_yanniedog" / timeframe / f"{pair}_{timeframe}.csv")
    if rows is not None:
        df = df.iloc[:rows]
    sym = symbol or f"{pair[:-4]}/{pair[-4:]}"
    return pd.DataFrame({
        "exchange": exchange, "symbol": sym, "timeframe": timeframe,
        "ts": pd.to_datetime(df["timestamp"], utc=True),
        "open": df["open"].astype(float), "high": df["high"].astype(float), "low": df["low"].astype(float),
        "close": df["close"].astype(float), "volume": df["volume"].astype(float),
        "quote_volume": np.nan,
    })


def funding(shared: Path) -> pd.DataFrame:
    """Binance BTCUSDT perpetual funding (8-hourly) as market.funding_rates rows."""
    f = next((shared / "funding").glob("*.csv"))
    df = pd.read_csv(f)
    ts = pd.to_datetime(df["funding_date"] + " " + df["funding_time"], utc=True, format="ISO8601")
    mark = df["markPrice"].where(df["markPrice"] > 0)
    return pd.DataFrame({"exchange": "binanceusdm", "symbol": "BTC/USDT:USDT", "ts": ts,
                         "funding_rate": df["fundingRate"].astype(float), "mark_price": mark})


def fear_greed_csv(shared: Path) -> Path:
    return shared / "lukmol_gamlss" / "fear_greed.csv"


def synthetic(n: int, timeframe: str = "1h", *, start: str = "2021-01-01", seed: int = 0,
              symbol: str = "SYN/USDT", exchange: str = "sim") -> pd.DataFrame:
    """A random-walk candle series on the timeframe grid (for join and edge tests)."""
    rng = np.random.default_rng(seed)
    step = pd.Timedelta(timeframe.replace("m", "min")) if timeframe.endswith("m") else pd.Timedelta(timeframe)
    ts = pd.Timestamp(start, tz="UTC") + step * np.arange(n)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[100.0, c[:-1]][:n]
    hi = np.maximum(o, c) * (1 + rng.uniform(0, 0.005, n))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.005, n))
    v = rng.uniform(10, 100, n)
    return pd.DataFrame({"exchange": exchange, "symbol": symbol, "timeframe": timeframe, "ts": ts,
                         "open": o, "high": hi, "low": lo, "close": c, "volume": v})
