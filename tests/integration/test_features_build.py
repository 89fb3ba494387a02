"""The features build on a real PostgreSQL (pandas engine, no JVM): incremental == full, idempotent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.features import catalog
from entasis.features.build import build_features
from entasis.features.compute import Extras, LabelParams, compute, compute_universe
from entasis.features.plan import config_hash, plan_build
from entasis.features.store import load_bars, load_sentiment_csv
from entasis.store.db import connect
from entasis.store.market import table_checksum, write_candles, write_funding
from tests.unit.features._data import candles, fear_greed_csv, funding

KEY = catalog.KEY_COLUMNS
P = LabelParams(horizons=(7, 14, 30))


def _universe(shared: Path) -> dict[str, pd.DataFrame]:
    return {
        "btc": candles(shared, "BTCUSDT", "1d"),
        "eth": candles(shared, "ETHUSDT", "1d"),
        # hourly real data spanning two 16384-bar blocks (the incremental tail crosses the edge)
        "sol": candles(shared, "SOLUSDT", "1h", rows=20_000),
        # too little history: must build with a warning, every row warm-up
        "xmr": candles(shared, "XMRUSDT", "1d", rows=40),
    }


def _load(frames: dict[str, pd.DataFrame], until: pd.Timestamp | None = None) -> None:
    with connect() as conn:
        for df in frames.values():
            part = df if until is None else df[df["ts"] <= until]
            write_candles(conn, part, known=set(df["symbol"]))


def _checksum() -> str:
    with connect() as conn:
        return table_checksum(conn, "features.bars", KEY)


def test_incremental_equals_full_and_reruns_change_nothing(db_url: str, shared_data: Path) -> None:
    u = _universe(shared_data)
    fund = funding(shared_data)
    with connect() as conn:
        write_funding(conn, fund, known={"BTC/USDT:USDT"})
        load_sentiment_csv(conn, fear_greed_csv(shared_data))
    # first build on history up to T1, then candles arrive up to the end, then an incremental build
    t1 = pd.Timestamp("2022-05-15 05:00", tz="UTC")  # the 1h tail then spans the 2022-05-02 16:00 block edge
    _load(u, until=t1)
    first = build_features(engine="pandas", labels=P)
    assert first.groups == 4 and first.inserted == first.rows_computed > 0
    assert any("XMR/USDT 1d: only 40 candle(s)" in w for w in first.warnings)
    _load(u)
    inc = build_features(engine="pandas", labels=P)
    assert inc.groups == 3  # XMR got nothing new: skipped
    # the tail reached back so labels got filled: updated rows, plus the new ones inserted
    assert inc.updated > 0 and inc.inserted > 0
    assert inc.rows_computed < sum(len(d) for d in u.values()) - 40  # only the tail, not everything
    after_inc = _checksum()

    full = build_features(engine="pandas", labels=P, full=True)
    assert full.rows_written == 0 and full.unchanged == sum(len(d) for d in u.values())
    assert _checksum() == after_inc  # a full rebuild reproduces the incremental result bit for bit

    again = build_features(engine="pandas", labels=P)
    assert again.groups == 0 and again.skipped == 4 and _checksum() == after_inc

    # the stored rows are compute() on the candles + extras, point in time
    with connect() as conn:
        bars = load_bars(conn, exchange="binance", symbols=["BTC/USDT"], timeframe="1d")
    fg = pd.read_csv(fear_greed_csv(shared_data))
    sent = pd.DataFrame({"ts": pd.to_datetime(fg["date"], utc=True), "value": fg["fng"].astype(float)})
    ref = compute(u["btc"], Extras(funding=fund[["ts", "funding_rate"]], sentiment=sent), labels=P)
    cols = [c for c in catalog.series_columns(P.horizons) if c not in KEY]
    pd.testing.assert_frame_equal(bars[cols].reset_index(drop=True), ref[cols].reset_index(drop=True),
                                  check_exact=True, check_dtype=False)
    # and the cross-sectional columns are the pandas pass over the daily universe (built incrementally)
    with connect() as conn:
        daily = load_bars(conn, exchange="binance", timeframe="1d").sort_values(KEY).reset_index(drop=True)
    uni = compute_universe(pd.concat([u["btc"], u["eth"], u["xmr"]]), labels=P)
    uni = uni.sort_values(KEY).reset_index(drop=True)
    assert daily["xs_rank_ret_90d"].notna().sum() > 1500
    pd.testing.assert_frame_equal(daily[catalog.CROSS_FEATURES], uni[catalog.CROSS_FEATURES], check_exact=True)
    assert bars["funding_rate"].notna().sum() > 1500 and bars["sentiment"].notna().sum() > 2000
    assert bars["y_cls_30d"].isna().sum() == 30  # NULL only where the future is unknown
    with connect() as conn:
        xmr = load_bars(conn, symbols=["XMR/USDT"])
        state = conn.execute("SELECT count(*), sum(rows) FROM features.build_state").fetchone()
    assert xmr["warmup"].all() and len(xmr) == 40
    assert state == (4, sum(len(d) for d in u.values()))


def test_plan_detects_backfill_and_repaired_history(db_url: str, shared_data: Path) -> None:
    c = candles(shared_data, "BTCUSDT", "1d").iloc[100:400]
    with connect() as conn:
        write_candles(conn, c.drop(index=c.index[50]), known={"BTC/USDT"})
    build_features(engine="pandas", labels=P)
    chash = config_hash(P, "fear_greed")
    with connect() as conn:
        write_candles(conn, c.iloc[[50]], known={"BTC/USDT"})  # a gap repaired before the watermark
        (p,) = plan_build(conn, full=False, params=P, chash=chash)
        assert (p.mode, p.reason) == ("full", "candles before the watermark changed")
        assert plan_build(conn, full=False, params=LabelParams(horizons=(7,)),
                          chash=config_hash(LabelParams(horizons=(7,)), "fear_greed"))[0].reason.startswith(
            "feature/label configuration")
    build_features(engine="pandas", labels=P)
    with connect() as conn:
        write_candles(conn, candles(shared_data, "BTCUSDT", "1d").iloc[90:100], known={"BTC/USDT"})
        (p,) = plan_build(conn, full=False, params=P, chash=chash)
        assert (p.mode, p.reason) == ("full", "history extended backwards")
        write_candles(conn, candles(shared_data, "BTCUSDT", "1d").iloc[400:410], known={"BTC/USDT"})
    build_features(engine="pandas", labels=P)
    with connect() as conn:
        write_candles(conn, candles(shared_data, "BTCUSDT", "1d").iloc[410:412], known={"BTC/USDT"})
        (p,) = plan_build(conn, full=False, params=P, chash=chash)
    assert p.mode == "incremental" and p.write_from is not None
    # the tail starts max-horizon (30) bars before the watermark, so those labels get filled
    assert p.write_from == c["ts"].iloc[-1] + pd.Timedelta(days=10 - 30)
    assert p.read_from is not None and p.read_from <= p.write_from - pd.Timedelta(days=1000)


def test_bad_engine_and_timeframe_are_refused(db_url: str) -> None:
    with pytest.raises(ValueError, match="engine must be"):
        build_features(engine="dask")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown timeframe '2h'"):
        build_features(engine="pandas", timeframes=["2h"])
    s = build_features(engine="pandas")
    assert s.groups == 0 and s.rows_written == 0 and np.isfinite(s.seconds)


def test_a_deleted_candle_takes_its_feature_row_with_it(db_url: str, shared_data: Path) -> None:
    c = candles(shared_data, "ETHUSDT", "1d").iloc[:300]
    with connect() as conn:
        write_candles(conn, c, known={"ETH/USDT"})
    build_features(engine="pandas", labels=P)
    with connect() as conn:
        conn.execute("DELETE FROM market.candles WHERE ts = %s", (c["ts"].iloc[150].to_pydatetime(),))
    s = build_features(engine="pandas", labels=P)  # history before the watermark changed: full rebuild
    assert s.deleted == 1 and s.groups == 1
    with connect() as conn:
        bars = load_bars(conn, timeframe="1d")
    assert len(bars) == 299 and c["ts"].iloc[150] not in set(bars["ts"])
    # the bar after the hole now has ret_1 over the 2-day step: bars, not days (documented)
    after = bars.loc[bars["ts"] == c["ts"].iloc[151], "ret_1"].iloc[0]
    assert after == pytest.approx(c["close"].iloc[151] / c["close"].iloc[149] - 1, rel=1e-12)
