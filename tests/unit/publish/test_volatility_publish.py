"""The volatility forecast published beside every prediction: complete, causal, idempotent, readable."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest

from entasis.publish.volatility import forecast_rows
from tests.unit.publish import market_data as md

AS_OF = datetime(2023, 6, 1, 6, 0, tzinfo=UTC)
BAR_CLOSE = datetime(2023, 6, 1, tzinfo=UTC)


def _candles() -> dict[str, pd.DataFrame]:
    c = md.candles()
    return {s: g[["ts", "high", "low", "close"]].reset_index(drop=True) for s, g in c.groupby("symbol")}


def _vol_rows(conn) -> list[dict]:
    cur = conn.execute("SELECT * FROM ml.vol_forecasts ORDER BY asset, horizon, as_of")
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_forecast_reads_nothing_after_as_of() -> None:
    """Truncation: candles after as_of (or changed after it) leave every forecast identical."""
    full = _candles()
    reqs = [(s, h, pd.Timestamp(BAR_CLOSE)) for s in md.SYMBOLS for h in md.HORIZONS]
    a, skipped = forecast_rows(full, reqs)
    cut = {s: c[c["ts"] + pd.Timedelta(days=1) <= BAR_CLOSE] for s, c in full.items()}
    b, _ = forecast_rows(cut, reqs)
    shocked = {s: c.assign(high=np.where(c["ts"] >= BAR_CLOSE, c["high"] * 3, c["high"]),
                           close=np.where(c["ts"] >= BAR_CLOSE, c["close"] * 2, c["close"])) for s, c in full.items()}
    d, _ = forecast_rows(shocked, reqs)
    assert skipped == [] and len(a) == len(reqs)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, d)
    # and it does read up to as_of: a shock on the last known bar moves the forecast
    last = {s: c.assign(high=np.where(c["ts"] == BAR_CLOSE - timedelta(days=1), c["high"] * 1.5, c["high"]))
            for s, c in full.items()}
    e, _ = forecast_rows(last, reqs)
    assert (e["vol_annualized"].to_numpy() > a["vol_annualized"].to_numpy()).all()


def test_forecast_columns_are_consistent() -> None:
    rows, _ = forecast_rows(_candles(), [("BTC/USDT", 7, pd.Timestamp(BAR_CLOSE)),
                                         ("BTC/USDT", 30, pd.Timestamp(BAR_CLOSE))])
    c = md.candles()
    close = float(c[(c["symbol"] == "BTC/USDT") & (c["ts"] == BAR_CLOSE - timedelta(days=1))]["close"].iloc[0])
    for r in rows.to_dict("records"):
        assert r["bar_ts"] == pd.Timestamp(BAR_CLOSE - timedelta(days=1))
        assert r["ref_price"] == close
        assert 0.05 < r["vol_annualized"] < 5.0
        assert math.isclose(r["vol_horizon"], r["vol_annualized"] * math.sqrt(r["horizon"] / 365), rel_tol=1e-12)
        assert math.isclose(r["expected_move"], close * r["vol_horizon"], rel_tol=1e-12)
        assert r["price_low_1sd"] < close < r["price_high_1sd"]
        assert math.isclose(r["price_low_1sd"] * r["price_high_1sd"], close**2, rel_tol=1e-9)


def test_unforecastable_requests_are_skipped_with_a_reason() -> None:
    full = _candles()
    stale_as_of = pd.Timestamp(BAR_CLOSE)
    only_old = {**full, "SOL/USDT": full["SOL/USDT"][full["SOL/USDT"]["ts"] < "2023-05-01"]}
    rows, skipped = forecast_rows(only_old, [("SOL/USDT", 7, stale_as_of), ("DOGE/USDT", 7, stale_as_of),
                                             ("BTC/USDT", 7, pd.Timestamp("2021-01-01", tz="UTC"))])
    assert rows.empty
    reasons = {s["asset"]: s["reason"] for s in skipped}
    assert "more than 3 days before" in reasons["SOL/USDT"]
    assert "no daily candles of DOGE/USDT" in reasons["DOGE/USDT"]
    assert "no daily candles closed by" in reasons["BTC/USDT"]


def test_every_prediction_gets_a_vol_forecast_rerun_identical_and_realized_later(db_url) -> None:
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect
    from entasis.store.market import table_checksum

    with connect() as conn:
        md.load_market(conn)
        s = publish_predictions(conn, as_of=AS_OF, assets=md.SYMBOLS, horizons=md.HORIZONS, loader=md.loader())
        rows = _vol_rows(conn)
        first = table_checksum(conn, "ml.vol_forecasts", ["asset", "horizon", "as_of"])
        joined = conn.execute("SELECT count(*), count(vol_annualized) FROM ml.predictions_vol").fetchone()
    assert s.vol["published"] == s.published == len(md.SYMBOLS) * len(md.HORIZONS) == len(rows)
    assert s.vol["skipped"] == []
    assert joined == (s.published, s.published)
    assert {(r["asset"], r["horizon"], r["as_of"]) for r in rows} == {(a, h, t) for a, h, t, _ in s.keys}
    assert all(r["published_at"] == BAR_CLOSE and r["model"] == "har_pk" and r["realized_vol"] is None
               for r in rows)
    with connect() as conn:  # the same interval again: nothing changes
        s2 = publish_predictions(conn, as_of=AS_OF, assets=md.SYMBOLS, horizons=md.HORIZONS, loader=md.loader())
        assert table_checksum(conn, "ml.vol_forecasts", ["asset", "horizon", "as_of"]) == first
    assert s2.vol["unchanged"] == len(rows) and s2.vol["inserted"] == 0 == s2.vol["updated"]
    # 8 days later: the 7-day windows have closed; realized vol equals the y_vol_7d label of the bar
    with connect() as conn:
        s3 = publish_predictions(conn, as_of=AS_OF + timedelta(days=8), assets=md.SYMBOLS, horizons=(7,),
                                 loader=md.loader(horizons=(7,)))
        done = conn.execute("SELECT asset, horizon, realized_vol FROM ml.vol_forecasts WHERE as_of = %s "
                            "AND realized_vol IS NOT NULL ORDER BY asset", (BAR_CLOSE,)).fetchall()
    assert s3.vol["realized_filled"] == len(md.SYMBOLS)
    b = md.bars()
    for asset, h, rv in done:
        assert h == 7
        label = b[(b["symbol"] == asset) & (b["ts"] == BAR_CLOSE - timedelta(days=1))]["y_vol_7d"].iloc[0]
        assert math.isclose(rv, label, rel_tol=1e-9)


def test_reader_can_read_vol_forecasts_but_not_write(db_url) -> None:
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect

    with connect() as conn:
        md.load_market(conn)
        publish_predictions(conn, as_of=AS_OF, assets=md.SYMBOLS, horizons=(7,), loader=md.loader(horizons=(7,)))
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = {k: str(v) for k, v in conninfo_to_dict(db_url).items() if v is not None and k != "password"}
    info["user"] = "entasis_reader"
    with psycopg.connect(make_conninfo("", **info), autocommit=True) as conn:
        n = conn.execute("SELECT count(*) FROM ml.vol_forecasts").fetchone()[0]
        v = conn.execute("SELECT count(expected_move) FROM ml.predictions_vol").fetchone()[0]
        assert n == v == len(md.SYMBOLS)
        assert conn.execute("SELECT has_table_privilege('ml.vol_forecasts', 'DELETE'), "
                            "has_table_privilege('ml.vol_forecasts', 'INSERT')").fetchone() == (False, False)
        with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)):
            conn.execute("DELETE FROM ml.vol_forecasts")


def test_publish_without_volatility_leaves_the_table_empty(db_url) -> None:
    from entasis.publish.predictions import publish_predictions
    from entasis.store.db import connect

    with connect() as conn:
        md.load_market(conn)
        s = publish_predictions(conn, as_of=AS_OF, assets=md.SYMBOLS, horizons=(7,), loader=md.loader(horizons=(7,)),
                                volatility=False)
        assert conn.execute("SELECT count(*) FROM ml.vol_forecasts").fetchone()[0] == 0
    assert s.published == len(md.SYMBOLS) and s.vol == {}
