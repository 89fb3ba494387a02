"""Point-in-time joins: a bar sees only extras published at or before its close (ts + timeframe)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from entasis.features import catalog
from entasis.features.compute import Extras, LabelParams, compute
from entasis.features.joins import window_mean

from ._data import synthetic

P = LabelParams(horizons=(1,))
H = pd.Timedelta("1h")


def _bars() -> pd.DataFrame:
    return synthetic(400, "1h", start="2022-03-01")


def _row(f: pd.DataFrame, ts: pd.Timestamp) -> pd.Series:
    return f.loc[f["ts"] == ts].iloc[0]


def test_funding_published_at_the_close_is_seen_and_one_second_later_is_not() -> None:
    bars = _bars()
    t = bars["ts"].iloc[200]
    close = t + H
    fund = pd.DataFrame({"ts": [t - 7 * H, close, close + pd.Timedelta("1s")],
                         "funding_rate": [0.0001, 0.0002, 0.0009]})
    f = compute(bars, Extras(funding=fund), labels=P)
    assert _row(f, t)["funding_rate"] == 0.0002           # exactly at the close: known
    assert _row(f, t - H)["funding_rate"] == 0.0001       # the bar before closed at t: not yet
    assert _row(f, t + H)["funding_rate"] == 0.0009       # next bar closes after the late print
    assert _row(f, t - 8 * H)["funding_rate"] == 0.0001   # closes exactly at the first print
    assert math.isnan(_row(f, t - 9 * H)["funding_rate"])  # before any print
    # stale after 3 days: the last print is not carried forward for ever
    assert math.isnan(_row(f, close + pd.Timedelta("3D") + H)["funding_rate"])
    assert _row(f, close + pd.Timedelta("3D") - 2 * H)["funding_rate"] == 0.0009


def test_funding_7d_mean_uses_the_window_ending_at_the_close() -> None:
    bars = _bars()
    ts8 = pd.date_range("2022-02-20", "2022-03-20", freq="8h", tz="UTC")
    rng = np.random.default_rng(1)
    fund = pd.DataFrame({"ts": ts8, "funding_rate": rng.normal(1e-4, 5e-5, len(ts8))})
    f = compute(bars, Extras(funding=fund.sample(frac=1, random_state=3)), labels=P)  # unsorted input is fine
    for i in (10, 150, 399):
        close = bars["ts"].iloc[i] + H
        w = fund[(fund["ts"] > close - pd.Timedelta("7D")) & (fund["ts"] <= close)]["funding_rate"]
        assert f["funding_rate_7d"].iloc[i] == pytest.approx(w.mean(), rel=1e-12)
        last = fund[fund["ts"] <= close]["funding_rate"].iloc[-1]
        assert f["funding_rate"].iloc[i] == last


def test_window_mean_is_independent_of_where_the_input_starts() -> None:
    rng = np.random.default_rng(2)
    ets = np.sort(rng.choice(np.arange(10_000), 3000, replace=False)).astype(np.int64)
    vals = rng.normal(size=3000)
    q = np.arange(5000, 10_000, 7, dtype=np.int64)
    a = window_mean(q, ets, vals, np.int64(300))
    b = window_mean(q, ets[ets > 4000], vals[ets > 4000], np.int64(300))
    np.testing.assert_array_equal(a, b)  # bit-identical, no running sum


def test_open_interest_change_and_perp_basis() -> None:
    bars = _bars()
    oi_ts = pd.date_range("2022-02-28", "2022-03-20", freq="1h", tz="UTC")
    oi = pd.DataFrame({"ts": oi_ts, "open_interest": np.linspace(1000, 2000, len(oi_ts))})
    perp = bars[["ts"]].copy()
    perp["close"] = bars["close"] * 1.001
    perp = perp.drop(index=[50])  # one perp bar missing
    f = compute(bars, Extras(open_interest=oi, other_leg=perp), labels=P, symbol="SYN/USDT")
    i = 120
    close = bars["ts"].iloc[i] + H
    now = oi.loc[oi["ts"] <= close, "open_interest"].iloc[-1]
    before = oi.loc[oi["ts"] <= close - pd.Timedelta("24h"), "open_interest"].iloc[-1]
    assert f["oi_change_24h"].iloc[i] == pytest.approx(math.log(now / before), rel=1e-12)
    assert f["perp_basis"].iloc[i] == pytest.approx(0.001, rel=1e-9)
    assert math.isnan(f["perp_basis"].iloc[50])
    # from the perp's side the basis is the same number
    g = compute(perp.assign(open=perp["close"], high=perp["close"], low=perp["close"], volume=1.0),
                Extras(other_leg=bars[["ts", "close"]]), timeframe="1h", symbol="SYN/USDT:USDT", labels=P)
    assert g["perp_basis"].iloc[i - 1] == pytest.approx(f["perp_basis"].iloc[i], rel=1e-12)


def test_option_snapshot_features_join_as_of_the_close() -> None:
    bars = synthetic(60, "1d", start="2024-01-01", symbol="BTC/USDT")
    snaps = pd.DataFrame({
        "underlying": "BTC",
        "snapshot_ts": pd.to_datetime(["2024-01-05 00:00:00", "2024-01-05 12:00:00", "2024-01-10 00:00:01"], utc=True),
        "atm_iv_7d": [0.50, 0.55, 0.60], "atm_iv_30d": [0.52, 0.56, 0.61], "rr25_30d": [0.01, 0.02, 0.03],
        "bf25_30d": [0.004, 0.005, 0.006], "term_slope": [0.02, 0.01, 0.01], "pc_oi_ratio": [0.7, 0.8, 0.9],
    })
    f = compute(bars, Extras(options=snaps), labels=P)
    day = lambda s: _row(f, pd.Timestamp(s, tz="UTC"))  # noqa: E731
    assert math.isnan(day("2024-01-03")["atm_iv_7d"])      # closes 01-04 00:00: nothing yet
    assert day("2024-01-04")["atm_iv_7d"] == 0.50          # closes exactly at the first snapshot
    assert day("2024-01-05")["atm_iv_30d"] == 0.56         # closes 01-06: the 12:00 snapshot
    assert day("2024-01-07")["pc_oi_ratio"] == 0.8         # 2.5 days after the last snapshot: still fresh
    assert math.isnan(day("2024-01-09")["pc_oi_ratio"])    # closes 01-10 00:00: 4.5 days old, a second early
    assert day("2024-01-10")["rr25_30d"] == 0.03
    assert math.isnan(day("2024-01-20")["term_slope"])     # stale after 3 days
    assert set(catalog.OPTION_FEATURES) <= set(f.columns)


def test_option_features_from_the_options_stage_plug_in() -> None:
    """The options engineer's snapshot_features output is accepted as it comes."""
    surface = pytest.importorskip("entasis.options.surface")
    empty = surface.snapshot_features(pd.DataFrame({
        c: pd.Series(dtype="datetime64[ns, UTC]" if c in ("snapshot_ts", "expiry") else object)
        for c in [*surface.REQUIRED_COLUMNS, "mark_iv"]}))
    assert list(empty.columns) == ["underlying", "snapshot_ts", *catalog.OPTION_FEATURES]
    f = compute(synthetic(10, "1d"), Extras(options=empty), labels=P)
    assert f[catalog.OPTION_FEATURES].isna().all().all()


def test_sentiment_published_at_midnight_is_seen_by_the_bar_closing_then() -> None:
    bars = synthetic(30, "1d", start="2023-05-01")
    sent = pd.DataFrame({"ts": pd.date_range("2023-05-01", periods=30, freq="D", tz="UTC"),
                         "value": np.arange(30, dtype=float)})
    f = compute(bars, Extras(sentiment=sent), labels=P)
    # bar of 05-01 closes 05-02 00:00, when the 05-02 value (1.0) is published
    np.testing.assert_array_equal(f["sentiment"].to_numpy()[:29], np.arange(1, 30, dtype=float))
    assert f["sentiment"].iloc[29] == 29.0
    # hourly bars inside a day see that day's value
    hb = synthetic(48, "1h", start="2023-05-03")
    g = compute(hb, Extras(sentiment=sent), labels=P)
    assert (g["sentiment"].iloc[:23] == 2.0).all() and g["sentiment"].iloc[23] == 3.0


def test_missing_extras_give_nan_not_errors() -> None:
    f = compute(_bars(), Extras(), labels=P)
    extra_cols = [*catalog.PERP_FEATURES, *catalog.OPTION_FEATURES, *catalog.SENTIMENT_FEATURES]
    assert f[extra_cols].isna().all().all()
    with pytest.raises(ValueError, match="funding for SYN/USDT 1h: lacks column"):
        compute(_bars(), Extras(funding=pd.DataFrame({"ts": [pd.Timestamp("2022-03-02", tz="UTC")],
                                                      "rate": [0.1]})), labels=P)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo"])
def test_utc_ns_reads_every_unit_and_zone_as_utc_epoch_nanoseconds(unit: str, tz: str) -> None:
    """The one-pass conversion gives pandas' own epoch nanoseconds, whatever the unit and zone."""
    from entasis.features.joins import utc_ns

    ts = pd.Series(pd.date_range("1970-01-01", periods=5, freq="37min", tz="UTC").as_unit(unit)).dt.tz_convert(tz)
    ts = pd.concat([ts, pd.Series(pd.DatetimeIndex(["1901-12-13 20:45:52", "2262-04-11"], tz="UTC")
                                  .as_unit(unit).tz_convert(tz))], ignore_index=True)
    got = utc_ns(ts, "t")
    assert got.dtype == np.int64
    assert np.array_equal(got, ts.array.as_unit("ns").asi8)
    assert np.array_equal(utc_ns(pd.DatetimeIndex(ts), "t"), got)


def test_utc_ns_refuses_missing_and_out_of_range_times_by_name() -> None:
    from entasis.features.joins import utc_ns

    with pytest.raises(ValueError, match="candles X: missing timestamp"):
        utc_ns(pd.Series(pd.DatetimeIndex(["2024-01-01", None], tz="UTC").as_unit("us")), "candles X")
    far = pd.Series(pd.DatetimeIndex(["2024-01-01", "2300-01-01"], tz="UTC").as_unit("us"))
    with pytest.raises(ValueError, match="candles X: timestamp outside 1677-2262"):
        utc_ns(far, "candles X")
