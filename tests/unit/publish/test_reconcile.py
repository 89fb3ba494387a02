"""Outcome reconciliation: band edges, rows not yet due, idempotency, agreement with the labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.publish import market_data as md

BASE_TS = datetime(2024, 1, 1, tzinfo=UTC)  # the predicted bar; it closes at AS_OF
AS_OF = BASE_TS + timedelta(days=1)
DAY = timedelta(days=1)
# close at each horizon's target per asset, with the band at 0.25 (exactly representable edges)
TARGET_CLOSE = {
    "BTC/USDT": {7: 125.0, 14: 125.0001, 30: 124.9999},
    "ETH/USDT": {7: 75.0, 14: 74.9999, 30: 75.0001},
    "SOL/USDT": {7: 200.0, 14: 50.0, 30: 100.0},
}
EXPECTED = {
    "BTC/USDT": {7: 1, 14: 2, 30: 1},   # +25% exactly is neutral; just above is bullish
    "ETH/USDT": {7: 1, 14: 0, 30: 1},   # -25% exactly is neutral; just below is bearish
    "SOL/USDT": {7: 2, 14: 0, 30: 1},
}
PREDICTED = {"BTC/USDT": 1, "ETH/USDT": 0, "SOL/USDT": 2}


def _settings(**labels):
    from entasis.config import load_settings

    return load_settings(labels={"neutral_band": 0.25, **labels})


def _candles(symbol: str, closes: dict[datetime, float], start: datetime, end: datetime):
    import pandas as pd

    ts = pd.date_range(start, end, freq="1D", tz="UTC")
    close = [closes.get(t.to_pydatetime(), 100.0) for t in ts]
    return pd.DataFrame({"exchange": "binance", "symbol": symbol, "timeframe": "1d", "ts": ts, "open": close,
                         "high": close, "low": close, "close": close, "volume": 1.0})


def _load(conn, *, sol_until: datetime | None = None):
    import pandas as pd

    from entasis.store.market import write_candles
    from entasis.store.upsert import upsert_frame

    for sym, targets in TARGET_CLOSE.items():
        closes = {AS_OF + timedelta(days=h) - DAY: v for h, v in targets.items()}
        end = sol_until if (sym == "SOL/USDT" and sol_until) else datetime(2024, 2, 10, tzinfo=UTC)
        write_candles(conn, _candles(sym, closes, BASE_TS - 5 * DAY, end))
    rows = []
    for sym in TARGET_CLOSE:
        for h in (7, 14, 30):
            c = PREDICTED[sym]
            p = [0.2, 0.2, 0.2]
            p[c] = 0.6
            rows.append({"asset": sym, "horizon": h, "as_of": AS_OF, "model_version": "m/1", "predicted_class": c,
                         "p_bearish": p[0], "p_neutral": p[1], "p_bullish": p[2], "confidence": 60.0,
                         "confidence_level": "medium", "target_date": AS_OF + timedelta(days=h),
                         "published_at": AS_OF})
    df = pd.DataFrame(rows)
    upsert_frame(conn, "ml.predictions", df, ["asset", "horizon", "as_of", "model_version"])


def _outcomes(conn):
    rows = conn.execute("SELECT asset, horizon, actual_class, realized_return, correct FROM ml.predictions").fetchall()
    return {(a, h): (act, r, ok) for a, h, act, r, ok in rows}


def test_classify_return_edges():
    from entasis.domain import BandRule, classify_return

    assert classify_return(0.02, 0.02) == 1 and classify_return(-0.02, 0.02) == 1
    assert classify_return(0.0200001, 0.02) == 2 and classify_return(-0.0200001, 0.02) == 0
    assert classify_return(0.0, 0.0) == 1 and classify_return(1e-12, 0.0) == 2
    with pytest.raises(ValueError, match="non-finite"):
        classify_return(float("nan"), 0.02)
    vol = BandRule(neutral_band=0.02, band_mode="vol_scaled", vol_scale=0.5)
    assert vol.band(7, 0.8) == pytest.approx(0.5 * 0.8 * (7 / 365) ** 0.5)
    assert vol.band(7, None) is None and BandRule().band(30, None) == 0.02


def test_fills_outcomes_at_band_edges_and_only_when_due(db_url):
    from entasis.publish.reconcile import reconcile_outcomes
    from entasis.store.db import connect
    from entasis.store.market import table_checksum

    s = _settings()
    with connect() as conn:
        _load(conn)
        # nothing is due a day before the first target
        assert reconcile_outcomes(conn, now=AS_OF + 6 * DAY, settings=s) == 0
        assert all(v == (None, None, None) for v in _outcomes(conn).values())
        # at the 7d target exactly: its candle closed at that instant, the others are not due
        assert reconcile_outcomes(conn, now=AS_OF + 7 * DAY, settings=s) == 3
        got = _outcomes(conn)
        for (sym, h), (act, r, ok) in got.items():
            if h == 7:
                assert act == EXPECTED[sym][7]
                assert r == TARGET_CLOSE[sym][7] / 100.0 - 1.0
                assert ok is (PREDICTED[sym] == act)
            else:
                assert (act, r, ok) == (None, None, None)
        assert reconcile_outcomes(conn, now=datetime(2024, 2, 10, tzinfo=UTC), settings=s) == 6
        got = _outcomes(conn)
        assert {k: v[0] for k, v in got.items()} == {(a, h): c for a, d in EXPECTED.items() for h, c in d.items()}
        assert {k: v[2] for k, v in got.items()} == {(a, h): PREDICTED[a] == c for a, d in EXPECTED.items()
                                                     for h, c in d.items()}
        before = table_checksum(conn, "ml.predictions", ["asset", "horizon", "as_of", "model_version"])
        assert reconcile_outcomes(conn, now=datetime(2024, 2, 10, tzinfo=UTC), settings=s) == 0
        assert table_checksum(conn, "ml.predictions", ["asset", "horizon", "as_of", "model_version"]) == before


def test_waits_for_the_target_candle(db_url):
    from entasis.publish.reconcile import reconcile_outcomes
    from entasis.store.db import connect
    from entasis.store.market import write_candles

    s = _settings()
    now = datetime(2024, 2, 10, tzinfo=UTC)
    with connect() as conn:
        _load(conn, sol_until=datetime(2024, 1, 20, tzinfo=UTC))  # SOL's 30d target candle is missing
        assert reconcile_outcomes(conn, now=now, settings=s) == 8
        assert _outcomes(conn)[("SOL/USDT", 30)] == (None, None, None)
        # a candle closing 4 days after the target (a gap) does not settle it either
        write_candles(conn, _candles("SOL/USDT", {}, datetime(2024, 2, 4, tzinfo=UTC), now - DAY))
        assert reconcile_outcomes(conn, now=now, settings=s) == 0
        # the target candle arrives: settled
        write_candles(conn, _candles("SOL/USDT", {}, datetime(2024, 1, 21, tzinfo=UTC), now - DAY))
        assert reconcile_outcomes(conn, now=now, settings=s) == 1
        assert _outcomes(conn)[("SOL/USDT", 30)] == (1, 0.0, False)


def test_vol_scaled_band_uses_the_bars_volatility(db_url):
    import pandas as pd

    from entasis.publish.reconcile import reconcile_outcomes
    from entasis.store.db import connect
    from entasis.store.upsert import upsert_frame

    s = _settings(band_mode="vol_scaled", vol_scale=0.5)
    with connect() as conn:
        _load(conn)
        bar = pd.DataFrame({"exchange": ["binance"], "symbol": ["BTC/USDT"], "timeframe": ["1d"],
                            "ts": [pd.Timestamp(BASE_TS)], "rvol_20": [0.8], "warmup": [False]})
        upsert_frame(conn, "features.bars", bar, ["exchange", "symbol", "timeframe", "ts"])
        reconcile_outcomes(conn, now=datetime(2024, 2, 10, tzinfo=UTC), settings=s)
        got = _outcomes(conn)
    # band = 0.5 * 0.8 * sqrt(h/365) < 0.25: +25% is bullish now, +/-0.0001% (30d) neutral
    assert got[("BTC/USDT", 7)][0] == 2 and got[("BTC/USDT", 14)][0] == 2
    assert got[("BTC/USDT", 30)][0] == 2  # 24.9999% > 0.5*0.8*sqrt(30/365) = 11.5%
    # no features row (no volatility) for ETH / SOL: the band is undefined, the rows stay open
    assert got[("ETH/USDT", 7)] == (None, None, None) and got[("SOL/USDT", 14)] == (None, None, None)


def test_outcomes_equal_the_feature_labels(db_url):
    """Publishing then reconciling reproduces y_cls / y_ret of features.bars for that bar exactly."""
    from entasis.config import load_settings
    from entasis.publish.predictions import publish_predictions
    from entasis.publish.reconcile import reconcile_outcomes
    from entasis.store.db import connect

    s = load_settings(labels={"neutral_band": 0.02})
    bars = md.bars()
    with connect() as conn:
        md.load_market(conn)
        for day in range(3):
            publish_predictions(conn, as_of=datetime(2023, 6, 1 + day, 6, tzinfo=UTC), loader=md.loader(),
                                settings=s)
        n = reconcile_outcomes(conn, now=datetime(2023, 6, 25, tzinfo=UTC), settings=s)
        rows = conn.execute("SELECT asset, horizon, as_of, actual_class, realized_return, correct, "
                            "predicted_class FROM ml.predictions WHERE actual_class IS NOT NULL").fetchall()
        still_open = conn.execute("SELECT count(*) FROM ml.predictions WHERE actual_class IS NULL").fetchone()[0]
    assert n == len(rows) == 3 * 3 * 2  # 7d and 14d are due by 2023-06-25; 30d are not
    assert still_open == 9
    for asset, h, as_of, act, r, ok, pred in rows:
        lab = bars[(bars["symbol"] == asset) & (bars["ts"] == as_of - DAY)].iloc[0]
        assert act == int(lab[f"y_cls_{h}d"])
        assert r == lab[f"y_ret_{h}d"]
        assert ok is (pred == act)


def test_recent_outcomes_follow_revised_candles_old_ones_are_final(db_url):
    from entasis.publish.reconcile import reconcile_outcomes
    from entasis.store.db import connect
    from entasis.store.market import write_candles

    s = _settings()
    target7 = AS_OF + 7 * DAY - DAY  # open time of BTC's 7d target candle
    with connect() as conn:
        _load(conn)
        assert reconcile_outcomes(conn, now=AS_OF + 18 * DAY, settings=s) == 6  # 7d and 14d
        assert _outcomes(conn)[("BTC/USDT", 7)][0] == 1
        write_candles(conn, _candles("BTC/USDT", {target7: 130.0}, target7, target7))  # exchange revised it
        assert reconcile_outcomes(conn, now=AS_OF + 18 * DAY, settings=s) == 1
        assert _outcomes(conn)[("BTC/USDT", 7)][:2] == (2, 130.0 / 100.0 - 1.0)
        # revised again, but now more than recheck_days after the target date: the outcome is final
        write_candles(conn, _candles("BTC/USDT", {target7: 125.0}, target7, target7))
        assert reconcile_outcomes(conn, now=datetime(2024, 2, 10, tzinfo=UTC), settings=s, recheck_days=30) == 3
        assert _outcomes(conn)[("BTC/USDT", 7)][0] == 2
        with pytest.raises(ValueError, match="recheck_days"):
            reconcile_outcomes(conn, now=AS_OF, settings=s, recheck_days=-1)
