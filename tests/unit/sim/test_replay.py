"""Parsing the real candle files as they are, and mapping files to symbols for replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.sim.replay import ReplayFormatError, ReplayStore, load_candle_csv, split_pair


def test_yanniedog(shared_data: Path) -> None:
    df = load_candle_csv(shared_data / "binance_spot_yanniedog/1d/BTCUSDT_1d.csv")
    assert list(df.columns) == ["ts", "open", "high", "low", "close", "volume", "quote_volume"]
    assert df.attrs["format"] == "yanniedog" and df.attrs["timeframe"] == "1d"
    assert df["ts"].iloc[0] == pd.Timestamp("2017-08-17", tz="UTC") and df["ts"].is_monotonic_increasing
    assert df["close"].iloc[-1] == 42283.58 and df["quote_volume"].isna().all()
    h = load_candle_csv(shared_data / "binance_spot_yanniedog/1h/ADAUSDT_1h.csv")
    assert h["ts"].iloc[1] - h["ts"].iloc[0] == pd.Timedelta("1h")


def test_cdd_snogcel_keeps_newest_first_order(shared_data: Path) -> None:
    df = load_candle_csv(shared_data / "cdd_binance_spot_snogcel/Binance_BTCUSDT_d.csv")
    assert df.attrs["symbol"] == "BTC/USDT" and df.attrs["format"] == "cdd"
    assert df["ts"].iloc[0] > df["ts"].iloc[-1]  # not sorted: that is the collector's job
    assert df["quote_volume"].iloc[0] == pytest.approx(1001519241.5559055)


def test_cdd_andrewsiah_mixed_formats_dups_and_bad_rows_kept(shared_data: Path) -> None:
    df = load_candle_csv(shared_data / "cdd_binance_spot_andrewsiah_2017_2021/Binance_BTCUSDT_1h.csv")
    assert df["ts"].notna().all()
    assert df["ts"].duplicated().sum() == 2649
    first = df.iloc[-1]  # oldest row, old format: unix seconds as a float
    assert first["ts"] == pd.Timestamp("2017-08-17 04:00", tz="UTC")
    assert first["open"] == 16199.91  # the documented bad open stays
    assert df["ts"].iloc[0] == pd.Timestamp("2021-06-10 00:00", tz="UTC")


def test_kaggle_cmc(shared_data: Path) -> None:
    df = load_candle_csv(shared_data / "kaggle_cmc_coins_2013_2021/coin_Bitcoin.csv")
    assert df.attrs["symbol"] == "BTC/USD" and df.attrs["timeframe"] == "1d"
    assert df["ts"].iloc[0] == pd.Timestamp("2013-04-29", tz="UTC")
    last = df.iloc[-1]
    assert last["open"] == pytest.approx(33723.50965515) and last["high"] == pytest.approx(35038.53636342)
    assert last["volume"] == pytest.approx(last["quote_volume"] / last["close"])


def test_unknown_format_names_the_file(shared_data: Path, tmp_path: Path) -> None:
    f = shared_data / "funding/binance_btcusdt_perp_funding_8h_adee0210.csv"
    with pytest.raises(ReplayFormatError, match="binance_btcusdt_perp_funding_8h_adee0210.csv: unknown candle"):
        load_candle_csv(f)
    empty = tmp_path / "x.csv"
    empty.write_text("")
    with pytest.raises(ReplayFormatError, match="x.csv: empty"):
        load_candle_csv(empty)


def test_banner_date_fallback_and_garbage_cells(tmp_path: Path) -> None:
    f = tmp_path / "Binance_ETHUSDT_1h.csv"
    f.write_text(
        "https://www.CryptoDataDownload.com\n"
        "Unix,Date,Symbol,Open,High,Low,Close,Volume ETH,Volume USDT,tradecount\n"
        "1622764800000,2021-06-04 00:00:00,ETHUSDT,2700.1,2710,2690,2705.5,10,27000,99\n"
        ",2017-08-17 04-AM,ETHUSDT,301.13,302.57,298,301.61,125.66,37684.25,NULL\n"
        "1622768400000,2021-06-04 01:00:00,ETHUSDT,oops,2720,2700,2710,-5,13550,12\n"
    )
    df = load_candle_csv(f)
    assert df.attrs["symbol"] == "ETH/USDT" and df.attrs["timeframe"] == "1h"
    assert df["ts"].iloc[1] == pd.Timestamp("2017-08-17 04:00", tz="UTC")
    assert np.isnan(df["open"].iloc[2]) and df["volume"].iloc[2] == -5


def test_generic_ts_first_csv(tmp_path: Path) -> None:
    f = tmp_path / "candles.csv"
    f.write_text("ts,open,high,low,close,volume,quote_volume,symbol\n"
                 "2023-01-01 00:00:00+00:00,1,2,0.5,1.5,10,15,X/USDT\n"
                 "2023-01-01 01:00:00+00:00,1.5,2,1,1.2,5,6,X/USDT\n")
    df = load_candle_csv(f)
    assert df.attrs["format"] == "generic" and df["quote_volume"].tolist() == [15.0, 6.0]
    assert df["ts"].iloc[1] == pd.Timestamp("2023-01-01 01:00", tz="UTC")
    g = tmp_path / "epoch.csv"
    g.write_text("open_time,open,high,low,close,volume\n1672531200000,1,2,0.5,1.5,10\n1672534800,1,2,0.5,1.5,10\n")
    assert load_candle_csv(g)["ts"].tolist() == [pd.Timestamp("2023-01-01", tz="UTC"),
                                                 pd.Timestamp("2023-01-01 01:00", tz="UTC")]


def test_replay_store_naming_rules(shared_data: Path, tmp_path: Path) -> None:
    store = ReplayStore.from_dir(shared_data / "cdd_binance_spot_andrewsiah_2017_2021")
    assert ("BTC/USDT", "1h") in store.files and ("BNB/USDT", "1d") in store.files
    src = store.source("BTC/USDT", "1h")
    assert src is not None and len(src.ts) == 36062 and (np.diff(src.ts) >= 0).all()
    assert store.source("BTC/USDT", "4h") is None
    y = ReplayStore.from_dir(shared_data / "binance_spot_yanniedog")
    assert ("PAXG/USDT", "4h") in y.files and ("BTC/USDT", "1h") not in y.files
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    body = "timestamp,open,high,low,close,volume\n2020-01-01,1,2,0.5,1.5,10\n"
    (tmp_path / "a" / "BTCUSDT_1d.csv").write_text(body)
    (tmp_path / "b" / "BTCUSDT_1d.csv").write_text(body)
    (tmp_path / "notes.csv").write_text("whatever\n")
    with pytest.raises(ReplayFormatError, match="both hold BTC/USDT 1d"):
        ReplayStore.from_dir(tmp_path)
    with pytest.raises(ReplayFormatError, match="does not exist"):
        ReplayStore.from_dir(tmp_path / "nope")
    assert split_pair("SHIBUSDT") == "SHIB/USDT" and split_pair("ETHBTC") == "ETH/BTC"
    with pytest.raises(ReplayFormatError, match="cannot split"):
        split_pair("XYZ")
