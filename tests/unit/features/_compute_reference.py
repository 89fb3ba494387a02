"""FROZEN copy of entasis.features.compute as of commit 12c9c0e (FEATURE_VERSION 3), before the
speed work of issue 14: the pin test (test_compute_pinned.py) compares the live ``compute`` with
this one, value for value, so a faster path cannot change a single feature. Do not edit: it is the
reference. (Only ``compute_many``/``compute_universe`` and the long docstring were left out.)"""


from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.config import get_settings
from entasis.domain import BandRule, check_horizon, classify_returns, label_column
from entasis.features import catalog, joins
from entasis.features.extensions import extension_features

if TYPE_CHECKING:
    import pandas as pd

    from entasis.config import Settings

log = logging.getLogger(__name__)

_REQUIRED = ["ts", "open", "high", "low", "close", "volume"]
_NS = 10**9


@dataclass(frozen=True)
class LabelParams:
    """How labels are made; defaults from ``get_settings().labels``."""

    horizons: tuple[int, ...] = (7, 14, 30)
    neutral_band: float = 0.02
    band_mode: str = "fixed"
    vol_scale: float = 0.5

    def __post_init__(self) -> None:
        if not self.horizons:
            raise ValueError(f"label horizons must be positive whole days, got {self.horizons!r}")
        for h in self.horizons:
            check_horizon(h)
        self.band_rule  # noqa: B018 - validates the band settings

    @property
    def band_rule(self) -> BandRule:
        return BandRule(self.neutral_band, self.band_mode, self.vol_scale)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> LabelParams:
        lab = (settings or get_settings()).labels
        return cls(tuple(sorted(set(lab.horizons))), lab.neutral_band, lab.band_mode, lab.vol_scale)


@dataclass
class Extras:
    """Data beside the candles for one series; any may be None (its features are then NaN).

    funding: ts, funding_rate. open_interest: ts, open_interest. options: snapshot_ts + the option
    feature columns (one underlying). sentiment: ts, value. other_leg: ts, close of the counterpart
    series for the same timeframe (the perp for a spot pair, the spot pair for a perp).
    """

    funding: pd.DataFrame | None = None
    open_interest: pd.DataFrame | None = None
    options: pd.DataFrame | None = None
    sentiment: pd.DataFrame | None = None
    other_leg: pd.DataFrame | None = None


@dataclass(frozen=True)
class _Series:
    exchange: str
    symbol: str
    timeframe: str
    ts_ns: np.ndarray
    o: np.ndarray
    h: np.ndarray
    low: np.ndarray
    c: np.ndarray
    v: np.ndarray
    qv: np.ndarray


def _single(candles: pd.DataFrame, col: str, given: str | None) -> str:
    import pandas as pd

    if given is not None:
        return given
    if col not in candles.columns:
        return ""
    s = candles[col]
    if s.empty:
        return ""
    first = s.iloc[0]
    pa_arr = getattr(s.array, "_pa_array", None)
    same: bool | None = None
    if pa_arr is not None and not pd.isna(first):  # Arrow-backed strings: compare the raw buffers
        same = _arrow_all_equal(pa_arr, str(first))
    if same is None:
        same = not bool((s != first).any())
    if not same:
        vals = sorted(map(str, s.dropna().unique()))
        raise ValueError(f"compute() takes one series; got several {col} values: {vals[:5]}")
    return str(first)


def _arrow_all_equal(arr: Any, value: str) -> bool | None:
    """Whether every element of an Arrow string array is ``value``, from its buffers (~20x faster
    than an element-wise compare); None when the layout is not a plain (large_)string one."""
    import pyarrow as pa

    width = len(value.encode())
    for chunk in getattr(arr, "chunks", [arr]):
        if chunk.null_count:
            return False
        if pa.types.is_large_string(chunk.type):
            otype: Any = np.int64
        elif pa.types.is_string(chunk.type):
            otype = np.int32
        else:
            return None
        n = len(chunk)
        if n == 0:
            continue
        bufs = chunk.buffers()
        offs = np.frombuffer(bufs[1], dtype=otype)[chunk.offset: chunk.offset + n + 1]
        o0 = int(offs[0])
        if int(offs[-1]) - o0 != n * width or not bool((np.diff(offs) == width).all()):
            return False
        if width:
            data = np.frombuffer(bufs[2], dtype=np.uint8)[o0: o0 + n * width]
            tiled = np.frombuffer(value.encode() * n, dtype=np.uint8)  # flat compare: memcmp-like speed
            if not np.array_equal(data, tiled):
                return False
    return True


def _prepare(
    candles: pd.DataFrame, timeframe: str | None, exchange: str | None, symbol: str | None
) -> _Series:
    """Check and sort one series' candles; bad input gets an error naming the row and column."""
    missing = [c for c in _REQUIRED if c not in candles.columns]
    if missing:
        raise ValueError(f"candles lack column(s) {missing}; need {_REQUIRED} (+ optional quote_volume)")
    tf = _single(candles, "timeframe", timeframe)
    if not tf:
        raise ValueError("timeframe unknown: pass timeframe= or give candles a 'timeframe' column")
    catalog.timeframe_seconds(tf)
    ex, sym = _single(candles, "exchange", exchange), _single(candles, "symbol", symbol)
    ts = joins.utc_ns(candles["ts"], f"candles {sym or ''} {tf}".strip())
    cols = {c: _floats(candles[c]) for c in ["open", "high", "low", "close", "volume"]}
    qv = _floats(candles["quote_volume"]) if "quote_volume" in candles.columns else None
    return series_from_arrays(ex, sym, tf, ts, cols["open"], cols["high"], cols["low"], cols["close"],
                              cols["volume"], qv)


def series_from_arrays(
    exchange: str, symbol: str, timeframe: str, ts_ns: np.ndarray, o: np.ndarray, h: np.ndarray,
    low: np.ndarray, c: np.ndarray, v: np.ndarray, qv: np.ndarray | None,
) -> _Series:
    """Check and sort one series given as arrays (ts as UTC epoch ns); the pandas and Arrow paths
    both come through here, so they refuse the same input with the same message."""
    import pandas as pd

    sym, tf = symbol, timeframe
    ts = ts_ns
    order: np.ndarray | slice = slice(None)
    if len(ts) > 1 and not bool((np.diff(ts) > 0).all()):  # strictly increasing: sorted, no duplicates
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        dup = np.flatnonzero(np.diff(ts) == 0)
        if len(dup):
            raise ValueError(f"candles {sym} {tf}: duplicate bar at ts={pd.Timestamp(ts[dup[0]], tz='UTC')}")
    step = catalog.timeframe_seconds(tf) * _NS
    if (ts % step).any():
        off = np.flatnonzero(ts % step != 0)
        raise ValueError(
            f"candles {sym} {tf}: ts={pd.Timestamp(ts[off[0]], tz='UTC')} is not on the {tf} grid "
            "(ts must be the bar's open time)"
        )
    arrays: dict[str, np.ndarray] = {}
    for col in ["open", "high", "low", "close", "volume"]:
        a = np.ascontiguousarray({"open": o, "high": h, "low": low, "close": c, "volume": v}[col][order])
        # two reductions instead of element-wise masks; NaN makes min/max NaN and fails the test
        if len(a) and not ((a.min() >= 0 if col == "volume" else a.min() > 0) and a.max() < np.inf):
            ok = ((a >= 0) if col == "volume" else (a > 0)) & (a < np.inf)
            i = int(np.argmin(ok))
            raise ValueError(
                f"candles {sym} {tf}: bad {col}={a[i]!r} at ts={pd.Timestamp(ts[i], tz='UTC')} "
                f"({'must be finite and >= 0' if col == 'volume' else 'must be a positive number'})"
            )
        arrays[col] = a
    typical = (arrays["high"] + arrays["low"] + arrays["close"]) / 3.0
    if qv is not None:
        qv = qv[order]
        good = np.isfinite(qv) & (qv >= 0)
        if not good.all():
            qv = np.where(good, qv, arrays["volume"] * typical)
    else:
        qv = arrays["volume"] * typical
    return _Series(exchange, sym, tf, ts, arrays["open"], arrays["high"], arrays["low"], arrays["close"],
                   arrays["volume"], np.ascontiguousarray(qv))


def _floats(s: pd.Series) -> np.ndarray:
    """A column as float64 (non-numbers -> NaN, caught by the checks that follow)."""
    import pandas as pd

    if s.dtype == np.float64:
        return s.to_numpy()
    if s.dtype.kind in "iu":
        return s.to_numpy(dtype=np.float64)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _const_str(value: str, n: int) -> Any:
    """A constant string column, built from Arrow buffers (an object array of n strings is ~50x slower)."""
    import pandas as pd
    import pyarrow as pa

    raw = value.encode()
    offsets = np.arange(0, (n + 1) * len(raw), len(raw) or 1, dtype=np.int64) if raw else np.zeros(n + 1, np.int64)
    arr = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(raw * n)])
    dtype = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str"
    return pd.arrays.ArrowStringArray(pa.chunked_array([arr]), dtype=dtype)


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    """a[i - k] (NaN before the start): the value k bars earlier."""
    out = np.full(len(a), np.nan)
    if k < len(a):
        out[k:] = a[: len(a) - k]
    return out


def candle_features(
    h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray, qv: np.ndarray, timeframe: str,
    *, skip: int = 0, out: dict[str, np.ndarray] | None = None, lr: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Bar-based features over one window of candles (the block window).

    The indicators run over the whole window; the values are made only for bars ``skip`` onwards
    (the bars before are the warm-up read), each ``len(c) - skip`` long, written into ``out``'s
    arrays when given (no temporary copies: this is the hot loop of every path). ``lr``: the
    window's one-bar log returns (NaN first) when the caller already has them.
    """
    import talib

    m = len(c) - skip
    dst = out if out is not None else {}

    def put(name: str) -> np.ndarray:
        arr = dst.get(name)
        if arr is None:
            arr = dst[name] = np.empty(m)
        return arr

    k24 = catalog.bars_per_day(timeframe)
    ann = catalog.annualizer(timeframe)
    with np.errstate(divide="ignore", invalid="ignore"):
        if lr is None:
            lr = _window_log_returns(c)
        cs = c[skip:]
        inv_c = 1.0 / cs
        r1 = put("ret_1")
        if skip == 0:
            r1[0] = np.nan
            np.divide(c[1:], c[:-1], out=r1[1:])
        else:
            np.divide(cs, c[skip - 1:-1], out=r1)
        r1 -= 1.0
        r24 = put("ret_24h")
        lo24 = max(0, k24 - skip)  # bars of this part with a bar 24h earlier in the window
        r24[:lo24] = np.nan
        if lo24 < m:
            np.divide(cs[lo24:], c[skip + lo24 - k24: len(c) - k24], out=r24[lo24:])
            r24[lo24:] -= 1.0
        put("log_ret_1")[:] = lr[skip:]
        np.multiply(h[skip:] - low[skip:], inv_c, out=put("hl_spread"))
        put("rsi_14")[:] = talib.RSI(c, timeperiod=14)[skip:]
        macd, macd_sig, macd_hist = talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
        np.multiply(macd[skip:], inv_c, out=put("macd_rel"))
        np.multiply(macd_sig[skip:], inv_c, out=put("macd_signal_rel"))
        np.multiply(macd_hist[skip:], inv_c, out=put("macd_hist_rel"))
        upper, sma20, lower = talib.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=talib.MA_Type.SMA)
        upper, sma20, lower = upper[skip:], sma20[skip:], lower[skip:]
        _rel(upper, inv_c, put("bb_upper_rel"))
        _rel(lower, inv_c, put("bb_lower_rel"))
        width = upper - lower
        pctb = put("bb_pctb")
        np.divide(cs - lower, width, out=pctb)
        pctb[~(width > 0)] = np.nan
        np.divide(width, sma20, out=put("bb_width"))
        _rel(talib.EMA(c, timeperiod=20)[skip:], inv_c, put("ema_20_rel"))
        _rel(talib.EMA(c, timeperiod=50)[skip:], inv_c, put("ema_50_rel"))
        _rel(sma20, inv_c, put("sma_20_rel"))
        _rel(talib.SMA(c, timeperiod=50)[skip:], inv_c, put("sma_50_rel"))
        vs = v[skip:]
        vma = talib.SMA(v, timeperiod=20)[skip:]
        vr = put("volume_ma_20_ratio")
        np.divide(vs, vma, out=vr)
        vr[~(vma > 0)] = np.nan
        np.log1p(vs, out=put("log_volume"))
        _log_change_into(v, skip, put("volume_change"))
        np.log1p(qv[skip:], out=put("log_quote_volume"))
        _log_change_into(qv, skip, put("quote_volume_change"))
        np.multiply(talib.STDDEV(lr, timeperiod=20, nbdev=1.0)[skip:], ann, out=put("rvol_20"))
        np.multiply(talib.ATR(h, low, c, timeperiod=14)[skip:], inv_c, out=put("atr_14_rel"))
    return dst


def _window_log_returns(c: np.ndarray) -> np.ndarray:
    """log(c_t / c_{t-1}) over a window, NaN for its first bar (it has no bar before it)."""
    out = np.empty(len(c))
    if len(c):
        out[0] = np.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(c[1:], c[:-1], out=out[1:])
            np.log(out[1:], out=out[1:])
    return out


def _rel(x: np.ndarray, inv_c: np.ndarray, out: np.ndarray) -> None:
    """x / close - 1, as x * (1 / close) - 1 (the one formula every path uses)."""
    np.multiply(x, inv_c, out=out)
    out -= 1.0


def _log_change_into(a: np.ndarray, skip: int, out: np.ndarray) -> None:
    """log(a_t / a_{t-1}) for bars skip.. into out; NaN where either side is zero (not finite)."""
    if skip == 0:
        out[0] = np.nan
        np.divide(a[1:], a[:-1], out=out[1:])
    else:
        np.divide(a[skip:], a[skip - 1:-1], out=out)
    np.log(out, out=out)
    out[~np.isfinite(out)] = np.nan


def forward_vol(lr: np.ndarray, hb: int, ann: float) -> np.ndarray:
    """Annualized population sd of lr[t+1 .. t+hb], at t; NaN where the window runs past the end."""
    import talib

    n = len(lr)
    out = np.full(n, np.nan)
    if hb >= n:
        return out
    if hb == 1:
        trailing = np.where(np.isnan(lr), np.nan, 0.0)  # the sd of one value is 0
    else:
        trailing = talib.STDDEV(lr, timeperiod=hb, nbdev=1.0)
    out[: n - hb] = trailing[hb:] * ann
    return out


def _extra_features(s: _Series, extras: Extras | None) -> dict[str, np.ndarray]:
    """Funding, open interest, basis, options and sentiment, each joined point-in-time on the close.

    Only the columns that have data come back; the caller fills the others with NaN.
    """
    out: dict[str, np.ndarray] = {}
    if extras is None:
        return out
    close_ns = s.ts_ns + catalog.timeframe_seconds(s.timeframe) * _NS
    tag = f"{s.symbol} {s.timeframe}"
    f = extras.funding
    if f is not None and not f.empty:
        out["funding_rate"] = joins.asof_join(close_ns, f, "ts", ["funding_rate"], what=f"funding for {tag}")[
            "funding_rate"
        ]
        fts = joins.utc_ns(f["ts"], f"funding for {tag}")
        fv = f["funding_rate"].to_numpy(dtype=np.float64)
        out["funding_rate_7d"] = joins.window_mean(close_ns, fts, fv, joins.FUNDING_MEAN_WINDOW)
    oi = extras.open_interest
    if oi is not None and not oi.empty:
        now = joins.asof_join(close_ns, oi, "ts", ["open_interest"], what=f"open interest for {tag}")
        before = joins.asof_join(close_ns - joins.OI_CHANGE_WINDOW, oi, "ts", ["open_interest"],
                                 what=f"open interest for {tag}")
        with np.errstate(divide="ignore", invalid="ignore"):
            ch = np.log(now["open_interest"] / before["open_interest"])
        ch[~np.isfinite(ch)] = np.nan
        out["oi_change_24h"] = ch
    leg = extras.other_leg
    if leg is not None and not leg.empty:
        other = joins.same_bar(s.ts_ns, joins.utc_ns(leg["ts"], f"other leg for {tag}"),
                               leg["close"].to_numpy(dtype=np.float64))
        perp, spot = (s.c, other) if catalog.is_perp(s.symbol) else (other, s.c)
        out["perp_basis"] = perp / spot - 1.0
    opt = extras.options
    if opt is not None and not opt.empty:
        out.update(joins.asof_join(close_ns, opt, "snapshot_ts", catalog.OPTION_FEATURES,
                                   what=f"option features for {tag}"))
    sent = extras.sentiment
    if sent is not None and not sent.empty:
        out["sentiment"] = joins.asof_join(close_ns, sent, "ts", ["value"], what=f"sentiment for {tag}")["value"]
    return out


def compute_series(
    s: _Series, extras: Extras | None, params: LabelParams, block_bars: int | None = None,
    warmup_bars: int | None = None, extensions: bool = True,
) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The arithmetic of :func:`compute` on checked arrays, no pandas: (float column names, the
    (columns x rows) float block, warm-up flags, label codes {y_cls_*: (int16 classes, null mask)}).
    The pandas frame and the Arrow table (Spark) are both thin wrappers around this."""
    tf = s.timeframe
    n = len(s.ts_ns)
    mh = catalog.min_history(tf)
    if n < mh:
        log.warning(
            "%s %s %s: only %d bar(s), fewer than the %d a bar needs; every row is marked warmup",
            s.exchange or "?", s.symbol or "?", tf, n, mh,
        )
    B = block_bars or catalog.block_bars(tf)
    W = catalog.warmup_bars(tf) if warmup_bars is None else warmup_bars
    if B <= 0 or W < 0:
        raise ValueError(f"block_bars must be > 0 and warmup_bars >= 0, got {B}, {W}")
    step = catalog.timeframe_seconds(tf) * _NS
    ann = catalog.annualizer(tf)
    hbars = {hd: catalog.horizon_bars(hd, tf) for hd in params.horizons}
    rule = params.band_rule
    H = max(hbars.values())

    # Every float column in one (columns x rows) block, in output order, every cell written once.
    float_cols = list(catalog.SERIES_FEATURES)
    for hd in params.horizons:
        float_cols += [label_column("ret", hd), label_column("vol", hd)]
    row = {c: j for j, c in enumerate(float_cols)}
    block = np.empty((len(float_cols), n))
    warm = np.ones(n, dtype=bool)
    if n:
        lr_all = _window_log_returns(s.c)
        block_of = s.ts_ns // (B * step)
        starts = np.flatnonzero(np.r_[True, block_of[1:] != block_of[:-1]])
        ends = np.r_[starts[1:], n]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            i0 = int(np.searchsorted(s.ts_ns, (int(block_of[a]) * B - W) * step, side="left"))
            sl = slice(i0, b)
            # the window's log returns: the series' ones, with the window's first bar NaN (as if read alone)
            lr = lr_all[i0:min(n, b + H)].copy()
            lr[0] = np.nan
            candle_features(s.h[sl], s.low[sl], s.c[sl], s.v[sl], s.qv[sl], tf, skip=a - i0,
                            out={name: block[row[name], a:b] for name in catalog.CANDLE_FEATURES},
                            lr=lr[: b - i0])
            warm[a:b] = (np.arange(a - i0 + 1, b - i0 + 1)) < mh
            # forward vol needs up to H bars past the block; still a function of this block's window
            for hd, hb in hbars.items():
                block[row[label_column("vol", hd)], a:b] = forward_vol(lr, hb, ann)[a - i0:b - i0]
    # returns over d days: close now / close of the bar exactly d days earlier (NaN where that bar is
    # missing), so they need exactly d days of history whatever the gaps (the incremental read has it)
    for d in catalog.MOMENTUM_DAYS:
        _return_over_time(s.ts_ns, s.c, d * 86_400 * _NS, block[row[f"ret_{d}d"]])
    classes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for hd, hb in hbars.items():
        r = block[row[label_column("ret", hd)]]
        _pointwise_return(s.c, hb, r, forward=True)
        classes[label_column("cls", hd)] = classify_returns(r, rule.band(hd, block[row["rvol_20"]]))
    have = _extra_features(s, extras)
    if extensions:  # the extension point (entasis.features.extensions); off only to measure our own layer
        have.update(extension_features(s))
    builtin = {*catalog.CANDLE_FEATURES, *catalog.MOMENTUM_FEATURES}
    for name in catalog.SERIES_FEATURES:
        if name in builtin:
            continue
        if name in have:
            block[row[name]] = have[name]
        else:
            block[row[name]].fill(np.nan)

    return float_cols, block, warm, classes


def compute(
    candles: pd.DataFrame,
    extras: Extras | None = None,
    *,
    timeframe: str | None = None,
    exchange: str | None = None,
    symbol: str | None = None,
    labels: LabelParams | None = None,
    block_bars: int | None = None,
    warmup_bars: int | None = None,
    extensions: bool = True,
) -> pd.DataFrame:
    """Features, warm-up flag and labels for one (exchange, symbol, timeframe) series.

    ``candles``: ts (bar open, UTC; naive means UTC), open, high, low, close, volume, optional
    quote_volume / exchange / symbol / timeframe. Returns one row per candle, sorted by ts, with
    ``catalog.series_columns(horizons)`` (the cross-sectional columns come from the second pass,
    :mod:`entasis.features.cross`, which needs the whole universe). ``block_bars`` /
    ``warmup_bars`` override the bounded-history windows (tests use small ones); keep the
    defaults for anything stored. ``extensions=False`` leaves the extension columns NaN (benches
    measuring this layer alone; never for stored rows).
    """
    import pandas as pd

    params = labels or LabelParams.from_settings()
    s = _prepare(candles, timeframe, exchange, symbol)
    float_cols, block, warm, codes = compute_series(s, extras, params, block_bars, warmup_bars, extensions)
    n = len(s.ts_ns)
    tf = s.timeframe
    classes = {k: pd.arrays.IntegerArray(*v) for k, v in codes.items()}
    from pandas.api.internals import create_dataframe_from_blocks

    cols = catalog.series_columns(params.horizons)
    pos = {c: i for i, c in enumerate(cols)}
    others: dict[str, Any] = {
        "exchange": _const_str(s.exchange, n),
        "symbol": _const_str(s.symbol, n),
        "timeframe": _const_str(tf, n),
        "ts": pd.DatetimeIndex(s.ts_ns.view("datetime64[ns]"), tz="UTC").array,
        **classes,
    }
    # The float block is handed to pandas as it is (one 2-D block, no per-column copies or checks).
    blocks: list[tuple[Any, np.ndarray]] = [(block, np.array([pos[c] for c in float_cols], dtype=np.intp)),
                                            (warm.reshape(1, n), np.array([pos["warmup"]], dtype=np.intp))]
    blocks += [(arr, np.array([pos[c]], dtype=np.intp)) for c, arr in others.items()]
    return create_dataframe_from_blocks(blocks, index=pd.RangeIndex(n), columns=pd.Index(cols))


def _return_over_time(ts_ns: np.ndarray, c: np.ndarray, span_ns: int, out: np.ndarray) -> None:
    """out[t] = c[t] / c[bar at ts[t] - span] - 1; NaN where no bar sits exactly there."""
    n = len(c)
    if n == 0:
        return
    if n > 1:
        d = np.diff(ts_ns)
        if bool((d == d[0]).all()) and span_ns % int(d[0]) == 0:  # a regular grid: by index (cheaper)
            _pointwise_return(c, span_ns // int(d[0]), out, forward=False)
            return
    j = np.searchsorted(ts_ns, ts_ns - span_ns)
    ok = (j < n) & (ts_ns[np.minimum(j, n - 1)] == ts_ns - span_ns)
    out.fill(np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[ok] = c[ok] / c[j[ok]] - 1.0


def _pointwise_return(c: np.ndarray, k: int, out: np.ndarray, *, forward: bool) -> None:
    """out[t] = c[t + k] / c[t] - 1 (forward) or c[t] / c[t - k] - 1 (backward); NaN where out of range."""
    n = len(c)
    if k >= n:
        out.fill(np.nan)
        return
    if forward:
        np.divide(c[k:], c[: n - k], out=out[: n - k])
        out[: n - k] -= 1.0
        out[n - k:] = np.nan
    else:
        np.divide(c[k:], c[: n - k], out=out[k:])
        out[k:] -= 1.0
        out[:k] = np.nan
