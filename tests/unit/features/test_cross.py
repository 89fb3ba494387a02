"""The cross-sectional pass on hand-made bars: ranks, relative returns, regime, edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from entasis.features import catalog
from entasis.features.cross import INPUTS, cross_sectional

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def _rows(spec: list[tuple[str, float, float, float]], ts: pd.Timestamp = T0, **const: float) -> pd.DataFrame:
    """(symbol, ret_7d, rvol_20, quote volume) per asset at one bar."""
    out = []
    for sym, r7, vol, qv in spec:
        row = {"exchange": "x", "symbol": sym, "timeframe": "1d", "ts": ts, "ret_1": r7 / 7, "ret_7d": r7,
               "ret_30d": 2 * r7, "ret_90d": -r7, "rvol_20": vol, "sma_50_rel": -r7,
               "log_quote_volume": np.log1p(qv)}
        row.update(const)
        out.append(row)
    return pd.DataFrame(out)


def test_values_at_one_bar() -> None:
    df = _rows([("BTC/USDT", 0.10, 0.5, 600.0), ("ETH/USDT", -0.10, 0.8, 300.0),
                ("SOL/USDT", 0.10, 0.9, 100.0), ("DOGE/USDT", 0.30, np.nan, 0.0)])
    xs = cross_sectional(df).set_index("symbol")
    # ret_7d: ETH -0.1 < BTC = SOL 0.1 (tie, averaged) < DOGE 0.3 -> ranks 1, 2.5, 2.5, 4 of 4
    assert xs["xs_rank_ret_7d"].to_dict() == {"BTC/USDT": 0.5, "ETH/USDT": 0.0, "SOL/USDT": 0.5, "DOGE/USDT": 1.0}
    # rvol: DOGE has none, so 3 ranked; DOGE stays NaN
    assert xs.loc["BTC/USDT", "xs_rank_rvol_20"] == 0.0 and xs.loc["SOL/USDT", "xs_rank_rvol_20"] == 1.0
    assert np.isnan(xs.loc["DOGE/USDT", "xs_rank_rvol_20"])
    assert xs.loc["ETH/USDT", "rel_btc_ret_7d"] == pytest.approx(-0.2) and xs.loc["BTC/USDT", "rel_btc_ret_7d"] == 0
    mkt = (0.1 - 0.1 + 0.1 + 0.3) / 4
    assert xs["mkt_ret_7d"].tolist() == pytest.approx([mkt] * 4)
    assert xs.loc["DOGE/USDT", "rel_mkt_ret_7d"] == pytest.approx(0.3 - mkt)
    assert xs["mkt_rvol_20"].tolist() == pytest.approx([(0.5 + 0.8 + 0.9) / 3] * 4)
    # above the SMA 50 <=> sma_50_rel < 0 <=> ret_7d > 0 here: BTC, SOL, DOGE of 4
    assert xs["mkt_breadth_50"].tolist() == [0.75] * 4
    assert xs["btc_qv_share"].tolist() == pytest.approx([0.6] * 4)
    assert list(xs.columns) == ["exchange", "timeframe", "ts", *catalog.CROSS_FEATURES]


def test_perps_other_venues_and_lone_assets_stay_nan() -> None:
    a = _rows([("BTC/USDT", 0.1, 0.5, 10.0), ("ETH/USDT", 0.2, 0.6, 10.0), ("BTC/USDT:USDT", 0.3, 0.7, 10.0)])
    lone = _rows([("ETH/USDT", 0.2, 0.6, 10.0)], ts=T0 + pd.Timedelta("1D"))
    other = _rows([("BTC/USDT", 0.1, 0.5, 10.0), ("ETH/USDT", 0.2, 0.6, 10.0)]).assign(exchange="y")
    xs = cross_sectional(pd.concat([a, lone, other], ignore_index=True))
    assert xs.loc[2, catalog.CROSS_FEATURES].isna().all()  # the perpetual
    assert xs.loc[3, catalog.CROSS_FEATURES].isna().all()  # one asset at that bar: no cross-section
    assert xs.loc[0, "xs_rank_ret_7d"] == 0.0 and xs.loc[1, "xs_rank_ret_7d"] == 1.0  # the perp is not ranked
    assert xs.loc[4, "xs_rank_ret_7d"] == 0.0 and xs.loc[5, "btc_qv_share"] == 0.5  # venue y on its own


def test_no_btc_means_no_btc_features() -> None:
    xs = cross_sectional(_rows([("ETH/USDT", 0.1, 0.5, 1.0), ("SOL/USDT", 0.2, 0.6, 1.0)]))
    assert xs["rel_btc_ret_7d"].isna().all() and xs["btc_qv_share"].isna().all()
    assert xs["xs_rank_ret_7d"].notna().all()


def test_bad_input_is_named() -> None:
    df = _rows([("BTC/USDT", 0.1, 0.5, 1.0), ("BTC/USDT", 0.2, 0.6, 1.0)])
    with pytest.raises(ValueError, match="duplicate row BTC/USDT 1d"):
        cross_sectional(df)
    with pytest.raises(ValueError, match="rvol_20"):
        cross_sectional(df.drop(columns=["rvol_20"]))
    empty = cross_sectional(df.iloc[:0])
    assert empty.empty and set(INPUTS).isdisjoint(empty.columns)


def test_ranks_equal_scipys_average_ranks_with_ties_and_gaps() -> None:
    from scipy.stats import rankdata

    from entasis.features.cross import _avg_rank

    rng = np.random.default_rng(5)
    for shape in [(400, 17), (50, 3), (7, 1), (30, 60)]:
        m = rng.integers(0, 5, shape).astype(float)  # many ties
        m[rng.random(shape) < 0.3] = np.nan
        np.testing.assert_array_equal(_avg_rank(m), rankdata(m, axis=1, nan_policy="omit"))
