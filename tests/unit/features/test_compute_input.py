"""Bad input gets a clear error naming what was wrong; short histories a clear warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.features import catalog
from entasis.features.compute import LabelParams, compute, compute_many
from entasis.features.csv_input import compute_from_candles_csv, infer_timeframe

from ._data import candles, synthetic

P = LabelParams(horizons=(7,))


def test_missing_column() -> None:
    with pytest.raises(ValueError, match=r"lack column\(s\) \['volume'\]"):
        compute(synthetic(10, "1d").drop(columns=["volume"]), labels=P)


def test_unknown_or_missing_timeframe() -> None:
    c = synthetic(10, "1d").drop(columns=["timeframe"])
    with pytest.raises(ValueError, match="timeframe unknown"):
        compute(c, labels=P)
    with pytest.raises(ValueError, match="unknown timeframe '2d'"):
        compute(c, timeframe="2d", labels=P)


def test_duplicate_and_off_grid_bars_are_named() -> None:
    c = synthetic(10, "1h")
    dup = pd.concat([c, c.iloc[[4]]])
    with pytest.raises(ValueError, match="duplicate bar at ts=2021-01-01 04:00:00"):
        compute(dup, labels=P)
    off = c.copy()
    off.loc[3, "ts"] = off.loc[3, "ts"] + pd.Timedelta("30min")
    with pytest.raises(ValueError, match="not on the 1h grid"):
        compute(off, labels=P)


@pytest.mark.parametrize(("col", "val"), [("close", 0.0), ("high", np.nan), ("volume", -1.0), ("low", np.inf)])
def test_bad_prices_are_named(col: str, val: float) -> None:
    c = synthetic(10, "1d")
    c.loc[6, col] = val
    with pytest.raises(ValueError, match=f"bad {col}=.* at ts=2021-01-07"):
        compute(c, labels=P)


def test_several_series_are_refused_but_compute_many_splits_them() -> None:
    a, b = synthetic(150, "1d", symbol="A/USDT"), synthetic(120, "1d", symbol="B/USDT", seed=3)
    with pytest.raises(ValueError, match="one series; got several symbol values"):
        compute(pd.concat([a, b]), labels=P)
    out = compute_many(pd.concat([b, a]), labels=P)
    assert list(out["symbol"].unique()) == ["A/USDT", "B/USDT"]
    pd.testing.assert_frame_equal(out[out["symbol"] == "A/USDT"].reset_index(drop=True), compute(a, labels=P))


def test_short_history_warns_and_marks_every_row(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="entasis.features.compute"):
        f = compute(synthetic(30, "1d", symbol="NEW/USDT"), labels=P)
    assert "sim NEW/USDT 1d: only 30 bar(s), fewer than the 100" in caplog.text
    assert f["warmup"].all() and len(f) == 30
    assert f["sma_50_rel"].isna().all()  # not silently filled
    assert f["y_ret_7d"].iloc[:23].notna().all()  # labels exist where the future is known


def test_empty_and_tiny_inputs() -> None:
    empty = compute(synthetic(0, "1d"), timeframe="1d", labels=P)
    assert list(empty.columns) == catalog.series_columns((7,)) and len(empty) == 0
    one = compute(synthetic(1, "1d"), labels=P)
    assert len(one) == 1 and bool(one["warmup"].iloc[0]) and one["y_cls_7d"].isna().all()


def test_output_columns_and_types() -> None:
    f = compute(synthetic(200, "4h"), labels=LabelParams(horizons=(7, 14)))
    assert list(f.columns) == catalog.series_columns((7, 14))
    assert str(f["ts"].dtype) == "datetime64[ns, UTC]"
    assert f["warmup"].dtype == bool
    assert all(str(f[c].dtype) == "Int16" for c in ("y_cls_7d", "y_cls_14d"))
    assert all(f[c].dtype == np.float64 for c in catalog.SERIES_FEATURES)


def test_naive_timestamps_are_utc_and_unsorted_input_is_sorted() -> None:
    c = synthetic(150, "1h")
    naive = c.assign(ts=c["ts"].dt.tz_localize(None)).sample(frac=1, random_state=1)
    pd.testing.assert_frame_equal(compute(naive, labels=P), compute(c, labels=P))


def test_compute_from_candles_csv(shared_data: Path) -> None:
    path = shared_data / "binance_spot_yanniedog" / "4h" / "ETHUSDT_4h.csv"
    f = compute_from_candles_csv(path, labels=P)
    assert set(f["symbol"]) == {"ETH/USDT"} and set(f["timeframe"]) == {"4h"}
    ref = compute(candles(shared_data, "ETHUSDT", "4h", exchange="csv"), labels=P)
    pd.testing.assert_frame_equal(f, ref)
    assert infer_timeframe(ref["ts"]) == "4h"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compute_from_candles_csv(shared_data / "nope.csv")


def test_csv_with_exchange_quote_volume_uses_it(shared_data: Path) -> None:
    """CryptoDataDownload files are newest first and carry the quote volume: both handled."""
    path = shared_data / "cdd_binance_spot_snogcel" / "Binance_BTCUSDT_d.csv"
    f = compute_from_candles_csv(path, labels=P)
    raw = pd.read_csv(path)
    raw = raw.assign(ts=pd.to_datetime(raw["Date"], utc=True)).sort_values("ts").reset_index(drop=True)
    assert f["ts"].is_monotonic_increasing and set(f["symbol"]) == {"BTC/USDT"}
    np.testing.assert_allclose(f["log_quote_volume"], np.log1p(raw["Volume USDT"].to_numpy()), rtol=1e-12)
    yd = compute(candles(shared_data, "BTCUSDT", "1d"), labels=P)
    common = f.merge(yd, on="ts", suffixes=("", "_y"))
    assert len(common) > 2000
    np.testing.assert_allclose(common["rsi_14"], common["rsi_14_y"], rtol=1e-12, equal_nan=True)
