"""``compute`` pinned to the implementation before the speed work (``_compute_reference``): every
column of the whole output frame, exactly (NaN where NaN), on real series of several shapes, so a
faster path is proven to change nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.domain import label_column
from entasis.features.compute import Extras, LabelParams, compute

from . import _compute_reference as ref
from ._data import candles, funding, synthetic

PARAMS = LabelParams(horizons=(7, 14, 30), neutral_band=0.02)
VOL_SCALED = LabelParams(horizons=(1, 7), band_mode="vol_scaled", vol_scale=0.5)


def _same(c: pd.DataFrame, extras: Extras | None = None, **kw: object) -> pd.DataFrame:
    got = compute(c, extras, **kw)  # type: ignore[arg-type]
    want = ref.compute(c, extras, **kw)  # type: ignore[arg-type]
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    for col in got.columns:  # bit for bit, not only equal as numbers (-0.0 vs 0.0, NaN payloads aside)
        if got[col].dtype == np.float64:
            g, w = got[col].to_numpy(), want[col].to_numpy()
            assert np.array_equal(np.isnan(g), np.isnan(w)), col
            ok = ~np.isnan(g)
            assert np.array_equal(g[ok].view(np.int64), w[ok].view(np.int64)), col
    return got


def test_daily_btc_whole_history(shared_data: Path) -> None:
    got = _same(candles(shared_data, "BTCUSDT", "1d"), labels=PARAMS)
    assert got["rsi_14"].notna().sum() > 1000  # a real series, not an empty frame


def test_hourly_series_several_blocks(shared_data: Path) -> None:
    c = candles(shared_data, "ADAUSDT", "1h")
    got = _same(c, labels=PARAMS, extensions=False)
    assert len(got) > 40_000 and got[label_column("vol", 30)].notna().sum() > 30_000


def test_hourly_with_quote_volume_gaps_and_zero_volume(shared_data: Path) -> None:
    c = candles(shared_data, "SOLUSDT", "1h").iloc[:20_000].copy()
    rng = np.random.default_rng(3)
    c["quote_volume"] = c["volume"] * c["close"]
    c.loc[c.index[rng.choice(len(c), 50, replace=False)], "quote_volume"] = np.nan
    c.loc[c.index[rng.choice(len(c), 30, replace=False)], "volume"] = 0.0
    c = c.drop(index=c.index[rng.choice(len(c), 400, replace=False)])  # gaps: momentum by time, not index
    _same(c.sample(frac=1.0, random_state=1), labels=VOL_SCALED, extensions=False)  # unsorted input


def test_small_blocks_and_warmup(shared_data: Path) -> None:
    c = candles(shared_data, "ETHUSDT", "1d")
    _same(c, labels=PARAMS, block_bars=64, warmup_bars=120, extensions=False)
    _same(c.iloc[:90], labels=PARAMS, block_bars=16, warmup_bars=0, extensions=False)


def test_with_extras(shared_data: Path) -> None:
    c = candles(shared_data, "BTCUSDT", "1d", exchange="binanceusdm", symbol="BTC/USDT:USDT")
    spot = candles(shared_data, "BTCUSDT", "1d")
    ex = Extras(funding=funding(shared_data), other_leg=spot[["ts", "close"]])
    got = _same(c, ex, labels=PARAMS)
    assert got["funding_rate"].notna().sum() > 500 and got["perp_basis"].notna().sum() > 500


@pytest.mark.parametrize("n", [0, 1, 2, 30, 150])
def test_short_and_empty_series(n: int) -> None:
    _same(synthetic(n, "1h"), labels=PARAMS, timeframe="1h")


@pytest.mark.parametrize(("values", "value"), [
    (["ab"] * 11, "ab"), (["ab"] * 10 + ["ac"], "ab"), (["abc"] * 6 + ["abd"], "abc"), (["x", "x", "y"], "x"),
    (["S000/USDT"] * 100, "S000/USDT"), (["S000/USDT"] * 99 + ["S000/USDX"], "S000/USDT"), (["a", "abc"], "a"),
    (["ab", "ab", "a", "bab"], "ab"), ([""] * 4, ""), (["", "a"], ""), (["é"] * 3, "é"), (["é", "e"], "é"),
])
def test_the_one_pass_constant_string_check(values: list[str], value: str) -> None:
    """The buffer-level check behind compute's one-series test agrees with a plain comparison, on
    whole and sliced (offset) Arrow arrays."""
    from entasis.features.compute import _arrow_all_equal

    for sl in (slice(None), slice(1, None)):
        s = pd.Series(values, dtype="str").iloc[sl]
        assert _arrow_all_equal(s.array._pa_array, value) == all(x == value for x in values[sl])


@pytest.mark.parametrize("arrow_type", ["string", "large_string"])
def test_the_constant_string_check_on_chunked_arrays(arrow_type: str) -> None:
    """Every chunk is checked (a differing value in the last chunk is found), with either offset width;
    a chunk with a null is never constant; a non-string layout is left to the element-wise compare."""
    import pyarrow as pa

    from entasis.features.compute import _arrow_all_equal

    t = getattr(pa, arrow_type)()
    assert _arrow_all_equal(pa.chunked_array([["ab", "ab"], ["ab"]], type=t), "ab") is True
    assert _arrow_all_equal(pa.chunked_array([["ab", "ab"], ["ab", "ac"]], type=t), "ab") is False
    assert _arrow_all_equal(pa.chunked_array([["ab"], [None]], type=t), "ab") is False
    assert _arrow_all_equal(pa.chunked_array([["ab"]], type=pa.string_view()), "ab") is None
