"""The features DAG task (entasis.jobs.build_features) builds only the configured timeframes.

Why: the flash-crash DAG stores 1-minute candles in market.candles; features are defined for the
configured timeframes (universe.timeframes) only, so 1m series must get no feature rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.config import get_settings
from entasis.store.db import connect
from entasis.store.market import write_candles
from tests.unit.features._data import candles

pytestmark = pytest.mark.spark


def _minutes(n: int) -> pd.DataFrame:
    """n 1-minute BTC/USDT candles, as the flash-crash DAG stores them."""
    rng = np.random.default_rng(3)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    return pd.DataFrame({
        "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m",
        "ts": pd.date_range("2021-06-01", periods=n, freq="1min", tz="UTC"),
        "open": close, "high": close * 1.001, "low": close * 0.999, "close": close,
        "volume": rng.uniform(1, 10, n), "quote_volume": np.nan,
    })


def test_one_minute_candles_get_no_feature_rows(db_url: str, shared_data: Path) -> None:
    from entasis.jobs import build_features

    tfs = get_settings().universe.timeframes
    assert "1m" not in tfs and "1d" in tfs
    daily = candles(shared_data, "BTCUSDT", "1d", rows=300)
    with connect() as conn:
        write_candles(conn, daily, known={"BTC/USDT"})
        write_candles(conn, _minutes(1500), known={"BTC/USDT"})
        row = conn.execute("SELECT count(*) FROM market.candles WHERE timeframe = '1m'").fetchone()
        assert row is not None and row[0] == 1500
    build_features()
    with connect() as conn:
        by_tf = dict(conn.execute("SELECT timeframe, count(*) FROM features.bars GROUP BY timeframe").fetchall())
    assert by_tf.get("1m", 0) == 0
    assert by_tf.get("1d", 0) == 300
