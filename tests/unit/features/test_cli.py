"""`entasis features ...` end to end on a real database (pandas engine: no JVM in unit tests)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from entasis.cli import app
from entasis.store.db import connect
from entasis.store.market import write_candles

from ._data import candles, fear_greed_csv

runner = CliRunner()


def _out(r: object) -> str:
    """Rich wraps long lines; compare on whitespace-normalised text."""
    return " ".join(str(getattr(r, "output", "")).split())


def test_load_sentiment_build_and_columns(db_url: str, shared_data: Path) -> None:
    r = runner.invoke(app, ["features", "load-sentiment", "--csv", str(fear_greed_csv(shared_data))])
    assert r.exit_code == 0, r.output
    assert "fear_greed: 2157 inserted, 0 updated, 0 unchanged" in _out(r)
    with connect() as conn:
        write_candles(conn, candles(shared_data, "BTCUSDT", "1d", rows=300), known={"BTC/USDT"})
        write_candles(conn, candles(shared_data, "SOLUSDT", "1d", rows=50), known={"SOL/USDT"})
    r = runner.invoke(app, ["features", "build", "--engine", "pandas", "--timeframe", "1d"])
    assert r.exit_code == 0, r.output
    assert "SOL/USDT 1d: only 50 candle(s)" in _out(r)
    with connect() as conn:
        n = conn.execute("SELECT count(*), count(sentiment) FROM features.bars").fetchone()
    assert n is not None and n[0] == 350 and n[1] > 0
    r = runner.invoke(app, ["features", "build", "--engine", "pandas", "--full", "--symbol", "BTC/USDT"])
    assert r.exit_code == 0 and "BTC/USDT" in _out(r) and "SOL/USDT" not in _out(r)
    r = runner.invoke(app, ["features", "columns"])
    assert r.exit_code == 0 and "rsi_14" in _out(r) and "y_cls_30d" in _out(r)


def test_bad_arguments_fail_clearly(db_url: str, tmp_path: Path) -> None:
    r = runner.invoke(app, ["features", "build", "--engine", "dask"])
    assert r.exit_code == 1 and "--engine must be spark or pandas" in _out(r)
    r = runner.invoke(app, ["features", "build", "--engine", "pandas", "--timeframe", "3h"])
    assert r.exit_code == 1 and "unknown timeframe '3h'" in _out(r)
    r = runner.invoke(app, ["features", "load-sentiment", "--csv", str(tmp_path / "none.csv")])
    assert r.exit_code == 1 and "does not exist" in _out(r)
