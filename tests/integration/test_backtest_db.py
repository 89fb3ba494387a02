"""The backtest from the database and from candle CSVs: tables, idempotent record, report, CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from entasis.backtest.runner import load_csv_inputs, load_funding_csv, run_walk_forward
from tests.unit.backtest.synth import tiny


def _btc(shared_data: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Real BTC daily candles 2019-2021 and their features (computed in-process), plus real funding."""
    from entasis.features.compute import compute
    from entasis.features.csv_input import read_candle_csv

    c = read_candle_csv(shared_data / "binance_spot_yanniedog" / "1d" / "BTCUSDT_1d.csv")
    c["ts"] = pd.to_datetime(c["ts"], utc=True)
    c = c[(c["ts"] >= "2019-01-01") & (c["ts"] < "2021-04-01")].reset_index(drop=True)
    feats = compute(c[["ts", "open", "high", "low", "close", "volume"]], timeframe="1d", exchange="binance",
                    symbol="BTC/USDT")
    candles = c.assign(exchange="binance", symbol="BTC/USDT", timeframe="1d", quote_volume=None)
    fund = load_funding_csv(next((shared_data / "funding").glob("*.csv")), "BTC/USDT:USDT")
    fund = fund[(fund["ts"] >= "2020-06-01") & (fund["ts"] < "2021-04-01")]
    return feats, candles, fund.assign(exchange="binanceusdm")


def test_run_from_database_records_idempotently(db_url: str, shared_data: Path) -> None:
    from entasis.config import get_settings
    from entasis.store.db import connect
    from entasis.store.market import write_candles, write_funding
    from entasis.store.upsert import upsert_frame

    feats, candles, fund = _btc(shared_data)
    with connect() as conn:
        write_candles(conn, candles)
        write_funding(conn, fund[["exchange", "symbol", "ts", "funding_rate"]])
        upsert_frame(conn, "features.bars", feats, ["exchange", "symbol", "timeframe", "ts"])
    kw: dict[str, Any] = {"horizon": 7, "start": "2020-12-01", "end": "2021-01-29", "assets": ["BTC/USDT"],
          "models": [tiny("rf")], "refit_days": 30, "n_boot": 200, "exchange": "binance"}
    res = run_walk_forward(**kw)
    assert res.config["source"] == "db" and res.config["funding"] is True
    # funding entered the long/short simulation (BTC funding was positive through this period)
    assert res.trading["rf"]["BTC/USDT"]["total_funding"] != 0.0
    assert res.trading["buy_and_hold"]["BTC/USDT"]["total_funding"] > 0
    # the report: HTML and every figure, under reports_dir
    rp = Path(res.report_path)  # type: ignore[arg-type]
    assert rp.parent == Path(get_settings().reports_dir) / "backtest" / res.run_id
    html = rp.read_text()
    assert "Models vs baselines" in html and "baseline:majority" in html
    for png in ("equity.png", "drawdown.png", "reliability.png", "confusion.png", "rolling_accuracy.png"):
        assert (rp.parent / png).stat().st_size > 1000
    with connect() as conn:
        run = conn.execute("SELECT horizon, n_folds, assets, leakage_status, report_path, n_scored "
                           "FROM ml.backtest_runs WHERE run_id = %s", (res.run_id,)).fetchone()
        assert run is not None
        assert run[0] == 7 and run[1] == 2 and run[2] == ["BTC/USDT"] and run[3] == "ok"
        assert run[4] == str(rp)
        assert run[5] == res.metrics["rf"]["pooled"]["n"]
        acc = conn.execute("SELECT value FROM ml.backtest_metrics WHERE run_id = %s AND model = 'rf' "
                           "AND scope = 'pooled' AND metric = 'accuracy'", (res.run_id,)).fetchone()
        assert acc is not None and acc[0] == pytest.approx(res.metrics["rf"]["pooled"]["accuracy"])
        ci = conn.execute("SELECT count(*) FROM ml.backtest_metrics WHERE run_id = %s AND kind = 'comparison'",
                          (res.run_id,)).fetchone()
        assert ci is not None and ci[0] > 0
        n_pred = conn.execute("SELECT count(*), count(DISTINCT model) FROM ml.backtest_predictions "
                              "WHERE run_id = %s", (res.run_id,)).fetchone()
        assert n_pred == (len(res.predictions), 1 + len(res.baselines))
        snap = conn.execute("SELECT md5(string_agg(t::text, '|' ORDER BY model, scope, metric)) "
                            "FROM ml.backtest_metrics t WHERE run_id = %s", (res.run_id,)).fetchone()
    again = run_walk_forward(**kw, report=False)
    assert again.run_id == res.run_id
    with connect() as conn:
        snap2 = conn.execute("SELECT md5(string_agg(t::text, '|' ORDER BY model, scope, metric)) "
                             "FROM ml.backtest_metrics t WHERE run_id = %s", (res.run_id,)).fetchone()
        n_runs = conn.execute("SELECT count(*) FROM ml.backtest_runs").fetchone()
    assert snap2 == snap and n_runs == (1,)


def test_csv_inputs_compute_features_in_process(shared_data: Path) -> None:
    d = shared_data / "binance_spot_yanniedog" / "1d"
    inp = load_csv_inputs(d, assets=["BTC/USDT", "ETH/USDT"], timeframe="1d")
    assert set(inp.frame["symbol"]) == {"BTC/USDT", "ETH/USDT"}
    assert {"rsi_14", "y_cls_7d", "y_ret_30d", "warmup"} <= set(inp.frame.columns)
    assert inp.prices is not None and inp.prices["close"].gt(0).all()
    btc = inp.frame[inp.frame["symbol"] == "BTC/USDT"].set_index("ts")
    px = inp.prices[inp.prices["symbol"] == "BTC/USDT"].set_index("ts")["close"]
    t = pd.Timestamp("2020-03-01", tz="UTC")
    assert btc.loc[t, "y_ret_7d"] == pytest.approx(px[t + pd.Timedelta(days=7)] / px[t] - 1)
    with pytest.raises(ValueError, match="no candle CSV for DOGE/BTC"):
        load_csv_inputs(d, assets=["DOGE/BTC"], timeframe="1d")


def test_cli_from_csv(shared_data: Path, tmp_path: Path) -> None:
    from entasis.cli import app

    f = shared_data / "binance_spot_yanniedog" / "1d" / "BTCUSDT_1d.csv"
    args = ["backtest", "--asset", "BTC/USDT", "--horizon", "7", "--start", "2021-01-01", "--end", "2021-02-28",
            "--csv", str(f), "--models", "rf", "--n-estimators", "10", "--n-jobs", "1", "--refit-days", "30",
            "--n-boot", "200"]
    out = CliRunner().invoke(app, args, terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "majority*" in out.output and "persistence*" in out.output and "buy_and_hold" in out.output
    assert "Model − baseline" in out.output
    assert "report:" in out.output and "recorded" not in out.output  # CSV runs are not recorded by default
    bad = CliRunner().invoke(app, [*args[:9], "--csv", str(tmp_path / "missing.csv")])
    assert bad.exit_code == 1 and "does not exist" in bad.output
