"""Runner helpers: labels knowable at a cut-off, CSV file lookup, funding CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.backtest.folds import BacktestError
from entasis.backtest.runner import blank_unknown_labels, csv_for, load_funding_csv


def test_labels_after_the_cutoff_are_blanked() -> None:
    ts = pd.date_range("2021-01-01", periods=12, freq="1D", tz="UTC")
    f = pd.DataFrame({"symbol": "A/USDT", "ts": ts, "rsi_14": 50.0,
                      "y_cls_7d": pd.array([1] * 12, dtype="Int16"), "y_ret_7d": 0.01, "y_cls_2d": 2.0})
    out = blank_unknown_labels(f, "2021-01-10", "1d")
    # bars not closed by 01-10 00:00 are not known at all: the bar of 01-09 closes at 01-10 (kept),
    # the bars of 01-10 .. 01-12 close after it (dropped, features and all)
    assert out["ts"].max() == pd.Timestamp("2021-01-09", tz="UTC") and len(out) == 9
    # the 7-day label of day t is known at the close of day t+7, i.e. t + 8 days <= 01-10 -> t <= 01-02
    assert out["y_cls_7d"].notna().tolist() == [True, True] + [False] * 7
    assert out["y_ret_7d"].notna().sum() == 2
    assert out["y_cls_2d"].notna().sum() == 7           # t + 3 days <= 01-10
    # a cut-off during the day (the train DAG's Sunday 02:00): the bar that opened at 00:00 is still open
    assert blank_unknown_labels(f, "2021-01-10T02:00Z", "1d")["ts"].max() == pd.Timestamp("2021-01-09", tz="UTC")
    assert len(blank_unknown_labels(f, "2021-01-11", "1d")) == 10
    assert (out["rsi_14"] == 50.0).all()                # features untouched
    assert f["y_cls_7d"].notna().all()                  # input not modified


def test_csv_lookup_and_funding_formats(tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT_1d.csv").write_text("timestamp,open,high,low,close,volume\n")
    assert csv_for(tmp_path, "BTC/USDT", "1d").name == "BTCUSDT_1d.csv"
    assert csv_for(tmp_path, "BTC/USDT:USDT", "1d").name == "BTCUSDT_1d.csv"
    with pytest.raises(BacktestError, match="ETHUSDT_1d.csv"):
        csv_for(tmp_path, "ETH/USDT", "1d")
    binance = tmp_path / "f.csv"
    binance.write_text("symbol,funding_date,funding_time,fundingRate,markPrice\n"
                       "BTCUSDT,2021-01-01,08:00:00,0.0001,0.0\nBTCUSDT,2021-01-01,16:00:00.001000,-0.0002,0.0\n")
    fr = load_funding_csv(binance, "BTC/USDT")
    assert fr["funding_rate"].tolist() == [0.0001, -0.0002]
    assert fr["ts"].iloc[0] == pd.Timestamp("2021-01-01 08:00", tz="UTC")
    plain = tmp_path / "g.csv"
    plain.write_text("ts,funding_rate\n2021-01-01T00:00:00Z,0.0003\n")
    assert np.isclose(load_funding_csv(plain, "X/USDT")["funding_rate"].iloc[0], 0.0003)
    bad = tmp_path / "h.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(BacktestError, match="funding_date"):
        load_funding_csv(bad, "X/USDT")
