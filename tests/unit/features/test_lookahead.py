"""No look-ahead, and bounded history: the properties that make incremental builds exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from entasis.features import catalog
from entasis.features.compute import Extras, LabelParams, compute

from ._data import candles, funding

PARAMS = LabelParams(horizons=(7, 30))
FEATS = [*catalog.SERIES_FEATURES, "warmup"]


def _same(a: pd.DataFrame, b: pd.DataFrame, cols: list[str]) -> None:
    """Bit-identical, NaN equal to NaN."""
    for c in cols:
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=c)
        else:
            assert list(a[c].astype(object)) == list(b[c].astype(object)), c


def test_feature_at_t_equals_feature_from_data_truncated_at_t(shared_data: Path) -> None:
    c = candles(shared_data, "ETHUSDT", "1d")
    fund = funding(shared_data)
    ex = Extras(funding=fund[["ts", "funding_rate"]])
    full = compute(c, ex, labels=PARAMS)
    n = len(c)
    ts_list = sorted({*range(0, 30), *np.linspace(30, n - 1, 50).astype(int).tolist()})
    for t in ts_list:
        # truncated at t: candles up to t, and extras published up to the bar's close only
        close_t = c["ts"].iloc[t] + pd.Timedelta("1D")
        cut = compute(c.iloc[: t + 1], Extras(funding=fund.loc[fund["ts"] <= close_t, ["ts", "funding_rate"]]),
                      labels=PARAMS)
        _same(full.iloc[[t]].reset_index(drop=True), cut.iloc[[t]].reset_index(drop=True), FEATS)
    assert full["funding_rate"].notna().sum() > 1000  # the extras really were joined


def test_appending_future_rows_never_changes_the_past_across_blocks(shared_data: Path) -> None:
    # Small blocks so the series spans many of them and every boundary is crossed.
    c = candles(shared_data, "SOLUSDT", "1h", rows=6000)
    kw: dict[str, Any] = {"labels": PARAMS, "block_bars": 512, "warmup_bars": 200}
    full = compute(c, **kw)
    for k in (100, 511, 1300, 2049, 3500, 5999):
        head = compute(c.iloc[:k], **kw)
        _same(full.iloc[:k].reset_index(drop=True), head, FEATS)


def test_bounded_history_reproduces_the_full_computation(shared_data: Path) -> None:
    """Reading from (block start - warm-up) gives the same bits as reading everything."""
    c = candles(shared_data, "SOLUSDT", "1h", rows=6000)
    B, W = 512, 200
    kw: dict[str, Any] = {"labels": PARAMS, "block_bars": B, "warmup_bars": W}
    full = compute(c, **kw)
    cols = catalog.series_columns(PARAMS.horizons)
    step = pd.Timedelta("1h")
    history = catalog.history_bars("1h") * step  # ret_90d reaches further back than the warm-up
    for tail in (c["ts"].iloc[2500], c["ts"].iloc[4100], c["ts"].iloc[5990]):
        ns = tail.value
        block_start = pd.Timestamp((ns // (B * step.value)) * B * step.value, tz="UTC")
        part_in = c[c["ts"] >= min(block_start - W * step, block_start - history)]
        part = compute(part_in, **kw)
        keep_full = full[full["ts"] >= block_start].reset_index(drop=True)
        keep_part = part[part["ts"] >= block_start].reset_index(drop=True)
        assert len(keep_full) == len(keep_part) > 0
        _same(keep_full, keep_part, [x for x in cols if x not in catalog.KEY_COLUMNS])
    # and a start that is too late does change values: the guarantee is not vacuous
    late = compute(c[c["ts"] >= block_start - 10 * step], **kw)
    a = full.loc[full["ts"] >= block_start, "ema_50_rel"].to_numpy()
    b = late.loc[late["ts"] >= block_start, "ema_50_rel"].to_numpy()
    assert not np.array_equal(a, b, equal_nan=True)


def test_block_boundaries_barely_move_values(shared_data: Path) -> None:
    """Blocked values agree with one long computation to float precision (the warm-up suffices)."""
    c = candles(shared_data, "SOLUSDT", "1h", rows=6000)
    blocked = compute(c, labels=PARAMS, block_bars=512, warmup_bars=1000)
    one = compute(c, labels=PARAMS, block_bars=10**6)
    live = ~blocked["warmup"]
    for col in catalog.CANDLE_FEATURES:
        np.testing.assert_allclose(blocked.loc[live, col], one.loc[live, col], rtol=1e-9, atol=1e-12, err_msg=col)


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_block_size_is_refused(bad: int) -> None:
    ts = pd.date_range("2022-01-01", periods=5, freq="D", tz="UTC")
    c = pd.DataFrame({"ts": ts, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0})
    with pytest.raises(ValueError, match="block_bars"):
        compute(c, timeframe="1d", labels=PARAMS, block_bars=bad if bad else -5)


def _universe(shared: Path, rows: int | None = None) -> pd.DataFrame:
    pairs = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT")
    return pd.concat([candles(shared, p, "1d", rows=rows) for p in pairs], ignore_index=True)


def test_cross_sectional_features_use_only_their_own_bar(shared_data: Path) -> None:
    """Truncating the universe at t (every asset's candles up to t) leaves the row at t unchanged."""
    from entasis.features.compute import compute_universe

    u = _universe(shared_data)
    full = compute_universe(u, labels=PARAMS)
    assert full["xs_rank_ret_30d"].notna().sum() > 3000 and full["btc_qv_share"].notna().sum() > 1000
    days = sorted(u["ts"].unique())
    for t in [days[i] for i in (5, 95, 400, len(days) // 2, len(days) - 1)]:
        cut = compute_universe(u[u["ts"] <= t], labels=PARAMS)
        a = full[full["ts"] == t].sort_values("symbol").reset_index(drop=True)
        b = cut[cut["ts"] == t].sort_values("symbol").reset_index(drop=True)
        assert len(a) == len(b) > 0
        _same(a, b, [*catalog.FEATURE_COLUMNS, "warmup"])


def test_cross_sectional_pass_on_a_tail_equals_the_full_pass(shared_data: Path) -> None:
    """What the incremental build does: the pass over rows at or after a cutoff, given in any order,
    gives the full pass's bits for those rows (absent earlier bars and assets change nothing)."""
    from entasis.features.compute import compute_many
    from entasis.features.cross import cross_sectional

    u = _universe(shared_data)
    per = compute_many(u, labels=PARAMS)
    full = cross_sectional(per)
    cutoff = pd.Timestamp("2022-03-01", tz="UTC")
    tail = per[per["ts"] >= cutoff].sample(frac=1.0, random_state=3)  # shuffled rows
    part = cross_sectional(tail)
    key = catalog.KEY_COLUMNS
    a = full[full["ts"] >= cutoff].sort_values(key).reset_index(drop=True)
    b = part.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 1000
    _same(a, b, catalog.CROSS_FEATURES)
