"""Cross-sectional and market-regime features: the second pass, per bar across the universe.

Why a second pass: a bar's rank among its peers, its return relative to BTC or to the market,
and the market's own state (breadth, average return and volatility, BTC's share of volume) need
every asset's value at that same bar, which one series' ``compute`` never sees. They are pure
functions of the per-series columns of the rows sharing (exchange, timeframe, ts), so:

- no look-ahead: a bar's cross-sectional values use only rows of that bar, whose per-series
  inputs are causal; appending later bars never changes them;
- one definition: the pandas path calls :func:`cross_sectional` on the whole frame, Spark calls it
  per group of timestamps (``groupBy(exchange, timeframe, ts bucket)``); any grouping that keeps a
  timestamp's rows together gives the same bits, because rows are laid out by (ts, symbol) and sums
  run left to right over symbols in sorted order (``nancumsum``), so neither row order nor absent
  assets change a value.

The universe is the spot series (perpetuals keep NaN) of one exchange and timeframe; BTC is its
``BTC/...`` series (the first in sorted order if several). Every feature is NaN where fewer than 2
assets have its input at that bar (a one-asset "cross-section" says nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from entasis.features import catalog

if TYPE_CHECKING:
    import pandas as pd

# The per-series columns the pass reads (all in features.bars).
INPUTS: list[str] = ["ret_1", "ret_7d", "ret_30d", "ret_90d", "rvol_20", "sma_50_rel", "log_quote_volume"]
MIN_ASSETS = 2


def _avg_rank(m: np.ndarray) -> np.ndarray:
    """Average rank (1-based, ties averaged) of each value within its row, NaN ignored and kept.

    Sort each row (NaN last), find each tie group's first and last sorted position with running
    max/min, give the group (first + last) / 2 + 1 (exact half-integers), scatter back. Same numbers
    as scipy's ``rankdata(nan_policy="omit")``, without importing scipy.stats in every Spark worker.
    """
    t, n = m.shape
    if m.size == 0:
        return np.full((t, n), np.nan)
    order = np.argsort(m, axis=1, kind="stable")
    srt = np.take_along_axis(m, order, axis=1)
    pos = np.broadcast_to(np.arange(n), (t, n))
    new = np.ones((t, n), dtype=bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    last_flag = np.ones((t, n), dtype=bool)
    last_flag[:, :-1] = new[:, 1:]
    last = np.minimum.accumulate(np.where(last_flag, pos, n)[:, ::-1], axis=1)[:, ::-1]
    avg = (first + last) / 2.0 + 1.0
    out = np.empty((t, n))
    np.put_along_axis(out, order, avg, axis=1)
    out[np.isnan(m)] = np.nan
    return out


def _rank_pct(m: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Percentile rank per row (0 lowest .. 1 highest, ties averaged), NaN stays NaN."""
    r = _avg_rank(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (r - 1.0) / (cnt - 1.0)[:, None]
    out[(cnt < MIN_ASSETS)] = np.nan
    return out


def _row_sum(m: np.ndarray) -> np.ndarray:
    """Sum of the non-NaN values of each row, strictly left to right (independent of NaN columns)."""
    if m.shape[1] == 0:
        return np.zeros(m.shape[0])
    return np.nancumsum(m, axis=1)[:, -1]


def _row_mean(m: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _row_sum(m) / cnt
    out[cnt < MIN_ASSETS] = np.nan
    return out


def _btc_column(symbols: np.ndarray) -> int | None:
    for j, s in enumerate(symbols):  # symbols are sorted
        if not catalog.is_perp(str(s)) and catalog.underlying_of(str(s)) == "BTC":
            return j
    return None


def _matrix_features(mats: dict[str, np.ndarray], btc: int | None) -> dict[str, np.ndarray]:
    """Every cross feature as a (timestamps x assets) matrix from the input matrices."""
    t, n = mats["ret_1"].shape
    cnt = {k: (~np.isnan(m)).sum(axis=1).astype(np.float64) for k, m in mats.items()}
    nan = np.full((t, n), np.nan)

    def bcast(v: np.ndarray) -> np.ndarray:
        return np.broadcast_to(v[:, None], (t, n))

    def rel_btc(k: str) -> np.ndarray:
        if btc is None:
            return nan
        out = mats[k] - mats[k][:, btc:btc + 1]
        out[cnt[k] < MIN_ASSETS] = np.nan
        return out

    mean = {k: _row_mean(mats[k], cnt[k]) for k in ("ret_1", "ret_7d", "ret_30d", "rvol_20")}
    sma = mats["sma_50_rel"]
    above = np.where(np.isnan(sma), np.nan, (sma < 0).astype(np.float64))  # close above its SMA 50
    breadth = _row_mean(above, cnt["sma_50_rel"])
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        qv = np.expm1(mats["log_quote_volume"])
        total = _row_sum(qv)
        share = qv[:, btc] / total if btc is not None else np.full(t, np.nan)
    share[(cnt["log_quote_volume"] < MIN_ASSETS) | ~(total > 0)] = np.nan
    return {
        "xs_rank_ret_7d": _rank_pct(mats["ret_7d"], cnt["ret_7d"]),
        "xs_rank_ret_30d": _rank_pct(mats["ret_30d"], cnt["ret_30d"]),
        "xs_rank_ret_90d": _rank_pct(mats["ret_90d"], cnt["ret_90d"]),
        "xs_rank_rvol_20": _rank_pct(mats["rvol_20"], cnt["rvol_20"]),
        "rel_btc_ret_7d": rel_btc("ret_7d"),
        "rel_btc_ret_30d": rel_btc("ret_30d"),
        "rel_mkt_ret_7d": mats["ret_7d"] - mean["ret_7d"][:, None],
        "rel_mkt_ret_30d": mats["ret_30d"] - mean["ret_30d"][:, None],
        "mkt_ret_1": bcast(mean["ret_1"]),
        "mkt_ret_7d": bcast(mean["ret_7d"]),
        "mkt_rvol_20": bcast(mean["rvol_20"]),
        "mkt_breadth_50": bcast(breadth),
        "btc_qv_share": bcast(share),
    }


def cross_sectional(frame: pd.DataFrame) -> pd.DataFrame:
    """The cross-sectional columns for every row of ``frame``, in its row order.

    ``frame``: exchange, symbol, timeframe, ts and :data:`INPUTS`, any number of timestamps, any
    order. Returns the key columns and ``catalog.CROSS_FEATURES``. Two rows with the same key
    are an error (they would make a bar's cross-section ambiguous).
    """
    import pandas as pd

    missing = [c for c in [*catalog.KEY_COLUMNS, *INPUTS] if c not in frame.columns]
    if missing:
        raise ValueError(f"cross_sectional needs column(s) {missing}")
    n = len(frame)
    out = np.full((len(catalog.CROSS_FEATURES), n), np.nan)
    col = {c: i for i, c in enumerate(catalog.CROSS_FEATURES)}
    if n:
        symbols = frame["symbol"].astype(str)
        sym = symbols.to_numpy()
        spot = ~symbols.str.contains(":", regex=False).to_numpy(dtype=bool)  # perpetuals: 'BTC/USDT:USDT'
        ts = pd.DatetimeIndex(pd.to_datetime(frame["ts"], utc=True)).as_unit("ns").asi8
        keys = frame["exchange"].astype(str) + "\x00" + frame["timeframe"].astype(str)
        kv = keys.to_numpy()
        for key in sorted(set(kv[spot])):
            rows = np.flatnonzero(spot & (kv == key))
            t_codes, _ = pd.factorize(ts[rows], sort=True)
            s_codes, s_uni = pd.factorize(sym[rows], sort=True)
            shape = (int(t_codes.max()) + 1, len(s_uni))
            flat = t_codes.astype(np.int64) * shape[1] + s_codes
            if len(np.unique(flat)) != len(flat):
                dup = rows[np.flatnonzero(pd.Series(flat).duplicated().to_numpy())[0]]
                raise ValueError(f"cross_sectional: duplicate row {sym[dup]} {key.split(chr(0))[1]} "
                                 f"ts={pd.Timestamp(ts[dup], tz='UTC')}")
            mats = {}
            for c in INPUTS:
                m = np.full(shape, np.nan)
                m[t_codes, s_codes] = frame[c].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
                mats[c] = m
            for name, m in _matrix_features(mats, _btc_column(np.asarray(s_uni))).items():
                out[col[name], rows] = m[t_codes, s_codes]
    res = frame[catalog.KEY_COLUMNS].reset_index(drop=True)
    for name in catalog.CROSS_FEATURES:
        res[name] = out[col[name]]
    return res


def with_cross_sectional(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (per-series columns, e.g. from ``compute_many``) with the cross-sectional columns
    filled in, columns in ``catalog.output_columns`` order (labels kept as they are)."""
    xs = cross_sectional(frame)
    out = frame.drop(columns=[c for c in catalog.CROSS_FEATURES if c in frame.columns]).reset_index(drop=True)
    for c in catalog.CROSS_FEATURES:
        out[c] = xs[c].to_numpy()
    lead = [*catalog.KEY_COLUMNS, *catalog.FEATURE_COLUMNS, catalog.WARMUP_COLUMN]
    return out[lead + [c for c in out.columns if c not in lead]]
