"""Data-quality rules the collectors add on top of the store's: page order, time grid, outliers.

The store's rules (``entasis.store.validate``: OHLC consistency, NaN, non-positive prices,
negative volume, ...) are reused through ``find_violations``; the rules only a collector can judge
(is a bar on its timeframe grid, did a page come back in order, is a return absurd given the
series' own volatility) are pandera schemas here. Both run on the one engine
(``entasis.store.validate.schema_failures``, pandera) and give (row, reason) pairs, so bad rows
are quarantined with every reason they broke while good rows still land.

Outliers are judged on log returns scaled by a rolling, robust volatility estimate:
``scale = 1.4826 * rolling median |close-to-close log return|`` (a MAD about zero, so a handful of
bad bars cannot move it). A bar is an outlier when its open->close move, or a close that jumps and
reverts on the next bar (a spike), is beyond ``OUTLIER_K`` scales *and* beyond
``OUTLIER_MIN_LOG_RETURN`` in absolute terms. The thresholds were chosen on the real Binance data
in ``shared/data``: genuine extremes reach 24 scales on daily bars (BTC 2020-03-12, -0.50 log;
DOGE 2021-01-28, +1.59 log at 28 scales) and 50 on hourly bars (XRP 2023-07-13), but the latter
are below 0.3 in log terms; known bad bars (the first CryptoDataDownload BTC and ETH hours, an
ETH 4h bar with open 144 in a 280-310 market) sit at 58-180 scales and 0.73-1.32 log.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from entasis.domain import timeframe_origin_ms
from entasis.store.validate import (
    CANDLE_RULES,
    FUNDING_RULES,
    OPEN_INTEREST_RULES,
    OPTION_RULES,
    RuleSet,
    find_violations,
    schema_failures,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pandera.pandas as pa

OUTLIER_K = 40.0
OUTLIER_MIN_LOG_RETURN = 0.3
OUTLIER_WINDOW = 101
OUTLIER_MIN_OBS = 20
#: Stored bars read before a batch so the first new bar has a previous close and a volatility estimate.
CONTEXT_BARS = OUTLIER_WINDOW

REASON_PAGE_ORDER = "timestamp out of order within its page"
REASON_DUPLICATE = "timestamp served twice with different values (the first served is kept)"
REASON_OUTLIER_BODY = f"robust outlier: open->close log return beyond {OUTLIER_K:g} MAD scales"
REASON_OUTLIER_SPIKE = f"robust outlier: close jumps beyond {OUTLIER_K:g} MAD scales and reverts next bar"


def reason_off_grid(timeframe: str) -> str:
    return f"timestamp off the {timeframe} grid"


def page_order_bad(df: pd.DataFrame) -> pd.Series:
    """True where a row's time is before an earlier row of the same page (as served)."""
    prev_max = df.groupby("page", sort=False)["t"].transform(lambda s: s.cummax().shift(1))
    return (df["t"] < prev_max).fillna(False).astype(bool)


def duplicate_bad(df: pd.DataFrame) -> pd.Series:
    """True for a later version of a time already served in this batch, when its values differ.

    Rows are in served order; exact repeats (overlapping pages) are harmless and not flagged. Only
    the first version served is kept, whichever page it was on.
    """
    values = [c for c in df.columns if c not in ("page", "ts")]
    return df.duplicated(subset=["t"], keep="first") & ~df.duplicated(subset=values, keep="first")


def _schema_failures(schema: pa.DataFrameSchema, df: pd.DataFrame) -> pd.DataFrame:
    return schema_failures(schema, df, "collected frame")


def structure_schema(step_ms: int | None, timeframe: str = "") -> pa.DataFrameSchema:
    """Page order and duplicates always; the timeframe grid when the series has one."""
    import pandera.pandas as pa

    origin = timeframe_origin_ms(timeframe) if timeframe else 0
    checks = [pa.Check(lambda d: ~page_order_bad(d), name=REASON_PAGE_ORDER),
              pa.Check(lambda d: ~duplicate_bad(d), name=REASON_DUPLICATE)]
    if step_ms:
        checks.append(pa.Check(lambda d: (d["t"] - origin) % step_ms == 0, name=reason_off_grid(timeframe)))
    return pa.DataFrameSchema({"t": pa.Column("int64"), "page": pa.Column("int64")}, checks=checks)


def _outlier_masks(closes: np.ndarray, opens: np.ndarray, n_context: int) -> tuple[np.ndarray, np.ndarray]:
    """(body, spike) outlier masks for the last len(opens) bars; closes include the context first."""
    import numpy as np
    import pandas as pd

    with np.errstate(divide="ignore", invalid="ignore"):
        logc = np.log(closes)
        rc = np.r_[np.nan, np.diff(logc)]
        body = np.log(closes[n_context:]) - np.log(opens)
    scale = 1.4826 * pd.Series(np.abs(rc)).rolling(OUTLIER_WINDOW, min_periods=OUTLIER_MIN_OBS, center=True).median()
    scale_arr = np.maximum(scale.to_numpy(), 1e-6)
    with np.errstate(invalid="ignore"):
        zc = rc / scale_arr
        big = (np.abs(zc) > OUTLIER_K) & (np.abs(rc) > OUTLIER_MIN_LOG_RETURN)
        nxt_big = np.r_[big[1:], False]
        nxt_z = np.r_[zc[1:], np.nan]
        spike = big & nxt_big & (np.sign(zc) == -np.sign(nxt_z))
        sb = scale_arr[n_context:]
        body_bad = (np.abs(body) / sb > OUTLIER_K) & (np.abs(body) > OUTLIER_MIN_LOG_RETURN)
    body_bad = np.nan_to_num(body_bad, nan=0).astype(bool) & ~np.isnan(sb)
    spike = np.nan_to_num(spike, nan=0).astype(bool)[n_context:]
    return body_bad, spike


def outlier_schema(context_close: np.ndarray) -> pa.DataFrameSchema:
    """Robust return outliers of a sorted, deduplicated bar frame, given stored closes before it."""
    import numpy as np
    import pandas as pd
    import pandera.pandas as pa

    ctx = np.asarray(context_close, dtype="float64")

    def masks(d: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        closes = np.r_[ctx, d["close"].to_numpy("float64")]
        return _outlier_masks(closes, d["open"].to_numpy("float64"), len(ctx))

    return pa.DataFrameSchema(
        {"open": pa.Column("float64"), "close": pa.Column("float64")},
        checks=[
            pa.Check(lambda d: pd.Series(~masks(d)[0], index=d.index), name=REASON_OUTLIER_BODY),
            pa.Check(lambda d: pd.Series(~masks(d)[1], index=d.index), name=REASON_OUTLIER_SPIKE),
        ],
    )


def _store_rule_failures(df: pd.DataFrame, rules: RuleSet, key_cols: Iterable[str]) -> pd.DataFrame:
    v = find_violations(df, rules, key_cols=key_cols)
    return v[["row", "rule"]]


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({"row": pd.Series(dtype=object), "rule": pd.Series(dtype=str)})
    return pd.concat(parts, ignore_index=True).drop_duplicates(ignore_index=True)


def check_candles(df: pd.DataFrame, step_ms: int, timeframe: str, context_close: np.ndarray) -> pd.DataFrame:
    """Every (row, reason) a candle batch breaks. ``df`` holds ms ``t``, ``ts`` (UTC), ``page``, OHLCV,
    rows in served order.

    Structural and store rules run on every row as served; outliers run on the rows that survive
    them, in time order.
    """
    import pandas as pd

    first = _concat([
        _schema_failures(structure_schema(step_ms, timeframe), df),
        _store_rule_failures(df, CANDLE_RULES, ("t",)),
    ])
    ok = df.drop(index=pd.Index(first["row"].unique())) if len(first) else df
    ok = ok.drop_duplicates(subset=["t"], keep="first").sort_values("t", kind="stable")
    second = _schema_failures(outlier_schema(context_close), ok[["open", "close"]])
    return _concat([first, second])


def check_funding(df: pd.DataFrame) -> pd.DataFrame:
    return _concat([_schema_failures(structure_schema(None), df), _store_rule_failures(df, FUNDING_RULES, ("t",))])


def check_open_interest(df: pd.DataFrame, step_ms: int, timeframe: str) -> pd.DataFrame:
    return _concat([
        _schema_failures(structure_schema(step_ms, timeframe), df),
        _store_rule_failures(df, OPEN_INTEREST_RULES, ("t",)),
    ])


def option_schema() -> pa.DataFrameSchema:
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {"instrument": pa.Column(str)},
        checks=[
            pa.Check(lambda d: (d["expiry"] > d["snapshot_ts"]).fillna(False), name="expiry not after the snapshot"),
            pa.Check(lambda d: ~(d["mark_iv"] < 0), name="negative mark_iv"),
            pa.Check(lambda d: ~(d["mark_price"] < 0), name="negative mark_price"),
            pa.Check(lambda d: ~(d["underlying_price"] <= 0), name="non-positive underlying_price"),
            pa.Check(lambda d: ~d.duplicated(subset=["instrument"], keep="first"), name="instrument listed twice"),
        ],
    )


def check_options(df: pd.DataFrame) -> pd.DataFrame:
    return _concat([
        _schema_failures(option_schema(), df),
        _store_rule_failures(df, OPTION_RULES, ("instrument",)),
    ])
