"""Migration 0700 against a real PostgreSQL: the serving generation, the reader's narrow windows onto
market data and drift, the drift log, and how the API finds its read-only URL."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import LiteralString

import psycopg
import pytest

T = datetime(2024, 3, 1, tzinfo=UTC)


def _reader(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = conninfo_to_dict(url)
    info["user"] = "entasis_reader"
    return make_conninfo("", **info)


def _one(conn: psycopg.Connection, sql: LiteralString) -> object:
    """The single value ``sql`` selects (the query must return a row)."""
    row = conn.execute(sql).fetchone()
    assert row is not None, f"no row from {sql!r}"
    return row[0]


def _gen(conn: psycopg.Connection) -> int:
    g = _one(conn, "SELECT generation FROM ml.serving_state")
    assert isinstance(g, int)
    return g


def _prediction_frame(as_of: datetime, p_bull: float = 0.5):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.DataFrame([{
        "asset": "BTC/USDT", "horizon": 7, "as_of": as_of, "model_version": "m/1", "predicted_class": 2,
        "p_bearish": 0.25, "p_neutral": 0.75 - p_bull, "p_bullish": p_bull, "confidence": p_bull * 100,
        "confidence_level": "medium", "target_date": as_of + pd.Timedelta(days=7), "published_at": as_of,
    }]).astype({"predicted_class": "int16", "horizon": "int32"})


def test_generation_moves_with_every_write_to_predictions_and_champions(db_url: str) -> None:
    from entasis.publish.champions import record_champion
    from entasis.store.upsert import upsert_frame

    with psycopg.connect(db_url, autocommit=True) as conn:
        g0 = _gen(conn)
        upsert_frame(conn, "ml.predictions", _prediction_frame(T), ["asset", "horizon", "as_of", "model_version"])
        g1 = _gen(conn)
        assert g1 > g0
        conn.execute("UPDATE ml.predictions SET actual_class = 2, correct = true")  # as reconciliation does
        g2 = _gen(conn)
        assert g2 > g1
        record_champion(conn, asset=None, horizon=7, model_name="m", version=1, promoted_at=T)
        assert _gen(conn) > g2
        # a write that is rolled back leaves the generation where it was
        g3 = _gen(conn)
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute("UPDATE ml.predictions SET predicted_class = 5")
        assert _gen(conn) == g3


def test_reader_sees_prices_state_and_drift_but_not_market_tables(db_url: str) -> None:
    import pandas as pd

    from entasis.monitor.drift_log import record_feature_drift
    from entasis.store.market import write_candles

    candles = pd.DataFrame([{"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1d", "ts": T,
                             "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0, "quote_volume": 15.0}])
    with psycopg.connect(db_url) as conn, conn.transaction():
        write_candles(conn, candles)
        record_feature_drift(conn, T, "1d", [{"feature": "rsi_14", "psi": 0.3, "n_reference": 180, "n_current": 30}])
    with psycopg.connect(_reader(db_url)) as conn:
        assert conn.execute("SELECT asset, ts, close FROM ml.asset_prices").fetchall() == [("BTC/USDT", T, 1.5)]
        assert conn.execute("SELECT feature, psi FROM ml.feature_drift").fetchall() == [("rsi_14", 0.3)]
        assert _gen(conn) >= 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM market.candles")
    with psycopg.connect(_reader(db_url)) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("UPDATE ml.serving_state SET generation = 0")


def test_drift_log_is_idempotent_and_stores_nan_as_null(db_url: str) -> None:
    from entasis.monitor.drift_log import record_feature_drift

    rows = [{"feature": "rsi_14", "psi": 0.12, "n_reference": 180, "n_current": 30},
            {"feature": "ret_1", "psi": math.nan, "n_reference": 180, "n_current": 5}]
    with psycopg.connect(db_url) as conn, conn.transaction():
        assert record_feature_drift(conn, T, "1d", rows) == 2
        assert record_feature_drift(conn, T, "1d", rows) == 0          # re-run: nothing changes
        assert record_feature_drift(conn, T, "1d", []) == 0
        got: dict[str, float | None] = dict(conn.execute("SELECT feature, psi FROM ml.feature_drift").fetchall())
        assert got == {"rsi_14": 0.12, "ret_1": None}
        with pytest.raises(ValueError, match="time ?zone"):
            record_feature_drift(conn, datetime(2024, 3, 1), "1d", rows)  # noqa: DTZ001
        with pytest.raises(ValueError, match="psi"):
            record_feature_drift(conn, T, "1d", [{"feature": "x"}])


def test_vol_forecasts_move_the_generation_when_that_table_exists(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        has = _one(conn, "SELECT to_regclass('ml.vol_forecasts') IS NOT NULL")
        trig = _one(conn, "SELECT count(*) FROM pg_trigger WHERE tgname = 'vol_forecasts_bump_serving_generation'")
        assert trig == (1 if has else 0)


def test_reader_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from psycopg.conninfo import conninfo_to_dict

    from entasis.api.store import reader_url
    from entasis.config import load_settings

    monkeypatch.setenv("ENTASIS_DATABASE_URL", "postgresql://owner:s3cret@db.example:5433/entasis")
    info = conninfo_to_dict(reader_url(load_settings()))
    assert info["user"] == "entasis_reader" and "password" not in info
    assert (info["host"], str(info["port"]), info["dbname"]) == ("db.example", "5433", "entasis")
    monkeypatch.setenv("ENTASIS_API__DATABASE_URL", "postgresql://analyst:pw@other/entasis")
    assert reader_url(load_settings()) == "postgresql://analyst:pw@other/entasis"
