"""ml.levels written for published predictions and readable by entasis_reader; signals tables; the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from typer.testing import CliRunner

from entasis.cli import app

runner = CliRunner()
DAY = timedelta(days=1)


def _candles(n: int = 320, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    phase = (np.arange(n) % 24) / 24.0
    c = 100 + 10 * np.abs(2 * phase - 1) + rng.normal(0, 0.3, n)
    o = np.r_[c[0], c[:-1]]
    return pd.DataFrame({
        "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1d",
        "ts": pd.date_range("2023-01-01", periods=n, freq="D", tz="UTC"), "open": o,
        "high": np.maximum(o, c) + 0.2, "low": np.minimum(o, c) - 0.2, "close": c, "volume": rng.uniform(50, 150, n),
        "quote_volume": np.nan})


def _seed(url: str) -> pd.DataFrame:
    from entasis.store.upsert import upsert_frame

    df = _candles()
    with psycopg.connect(url) as conn:
        upsert_frame(conn, "market.candles", df, ["exchange", "symbol", "timeframe", "ts"])
    return df


def _as_reader(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None and k != "password"}
    info["user"] = "entasis_reader"
    return make_conninfo("", **info)


def test_published_levels_join_predictions_for_the_reader(db_url: str) -> None:
    from entasis.signals.jobs import publish_levels
    from entasis.signals.levels import levels_at
    from entasis.store.db import connect

    df = _seed(db_url)
    as_of = df["ts"].iloc[299].to_pydatetime() + DAY  # close of bar 299; later bars exist but are not used
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO ml.predictions (asset, horizon, as_of, model_version, predicted_class, p_bearish, "
            "p_neutral, p_bullish, confidence, confidence_level, target_date, published_at) VALUES "
            "('BTC/USDT', 7, %s, 'm/1', 2, 0.1, 0.2, 0.7, 70, 'high', %s, %s)", (as_of, as_of + 7 * DAY, as_of))
    with connect() as conn:
        n = publish_levels(conn, [("BTC/USDT", as_of)], exchange="binance", timeframe="1d")
        again = publish_levels(conn, [("BTC/USDT", as_of)], exchange="binance", timeframe="1d")
    assert n > 0 and again == 0  # idempotent
    want = levels_at(df.iloc[:300])
    with psycopg.connect(_as_reader(db_url), autocommit=True) as conn:
        row = conn.execute("SELECT support, support_touches, support_distance_atr, resistance "
                           "FROM ml.prediction_levels WHERE asset = 'BTC/USDT' AND as_of = %s", (as_of,)).fetchone()
        stored = conn.execute("SELECT side, rank, price FROM ml.levels ORDER BY side, rank").fetchall()
    sup = want[want["side"] == "support"].iloc[0]
    res = want[want["side"] == "resistance"].iloc[0]
    assert row[0] == pytest.approx(sup["price"]) and row[1] == sup["touches"]
    assert row[2] == pytest.approx(sup["distance_atr"]) and row[3] == pytest.approx(res["price"])
    assert len(stored) == len(want)


def test_publish_levels_with_no_candles_writes_nothing(db_url: str) -> None:
    from entasis.signals.jobs import publish_levels
    from entasis.store.db import connect

    with connect() as conn:
        assert publish_levels(conn, [("ETH/USDT", datetime(2024, 1, 1, tzinfo=UTC))], exchange="binance",
                              timeframe="1d") == 0


def test_events_and_alerts_are_upserted_once(db_url: str) -> None:
    from entasis.signals.flashcrash import EVENT_COLUMNS
    from entasis.signals.store import recent_flash_crash_events, write_alerts, write_events
    from entasis.store.db import connect

    t = pd.Timestamp("2024-01-01 10:00", tz="UTC")
    ev = pd.DataFrame([{"exchange": "binance", "symbol": "BTC/USDT", "start_ts": t,
                        "trough_ts": t + pd.Timedelta("2min"),
                        "detected_at": t + pd.Timedelta("2min"), "final_at": t + pd.Timedelta("18min"),
                        "peak_price": 100.0, "trough_price": 80.0, "depth": 0.2, "volume_ratio": 5.0,
                        "recovery": 0.7, "n_bars": 2}])
    assert list(ev.columns[2:]) == EVENT_COLUMNS
    end = datetime(2024, 1, 1, 10, 5, tzinfo=UTC)
    with connect() as conn:
        assert write_alerts(conn, ev, interval_end=end) == 1
        assert write_alerts(conn, ev, interval_end=end) == 0
        assert write_events(conn, ev, interval_end=end + timedelta(minutes=15)) == 1
        got = recent_flash_crash_events(conn, since=datetime(2024, 1, 1, tzinfo=UTC))
        assert recent_flash_crash_events(conn, since=datetime(2024, 2, 1, tzinfo=UTC)) == []
    assert got[0]["final"] and got[0]["depth"] == pytest.approx(0.2) and got[0]["recovery"] == pytest.approx(0.7)
    with psycopg.connect(_as_reader(db_url), autocommit=True) as conn:  # the API may read it as the reader
        row = conn.execute("SELECT symbol, depth, recovery, final FROM ml.flash_crashes").fetchall()
    assert row == [("BTC/USDT", pytest.approx(0.2), pytest.approx(0.7), True)]


def test_cli_levels_from_csv_prints_and_draws(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "btc.png"
    res = runner.invoke(app, ["levels", "--asset", "BTC/USDT", "--csv",
                              str(shared_data / "binance_spot_yanniedog" / "1d" / "BTCUSDT_1d.csv"),
                              "--at", "2022-06-30", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "support" in res.output and "resistance" in res.output and "2022-06-30" in res.output
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_levels_from_the_store(db_url: str, tmp_path: Path) -> None:
    _seed(db_url)
    res = runner.invoke(app, ["levels", "--asset", "BTC/USDT", "--out", str(tmp_path / "x.png"), "--store"])
    assert res.exit_code == 0, res.output
    assert "stored" in res.output
    with psycopg.connect(db_url) as conn:
        as_of = conn.execute("SELECT DISTINCT as_of FROM ml.levels").fetchall()
    assert as_of == [(datetime(2023, 11, 17, tzinfo=UTC),)]  # close of the last stored bar
    bad = runner.invoke(app, ["levels", "--asset", "DOGE/USDT", "--out", str(tmp_path / "y.png")])
    assert bad.exit_code == 1 and "no 1d candles for DOGE/USDT" in bad.output
