"""The one definition of every feature and label: ``compute(candles, extras)`` for one series.

``compute`` is pure (pandas + numpy + TA-Lib): the pandas path, the Spark job
(``groupBy(exchange, symbol, timeframe)`` + ``applyInPandas``) and the backtest all call it, so
they cannot disagree. See :mod:`entasis.features.registry` for the column list and the time
convention (``ts`` is the bar's open; a bar's features use what is known at its close).

Bounded history, exactly. EMA/Wilder indicators remember their whole past and TA-Lib's rolling
sums carry rounding from the first bar, so "the same feature" computed from a shorter history
differs in the last bits. To make an incremental build reproduce a full rebuild bit for bit, the
bar-based features of every bar are computed from a fixed, bounded window: time is cut into
epoch-aligned blocks of ``block_bars`` bars, and the bars of block k are computed from the candles
that start at (block start - ``warmup_bars`` x timeframe). The warm-up (>= 1000 bars) is long
enough that EMA seeds have decayed below float precision, so values agree with an infinite history
to the last bit or two; and every value depends only on its own block window, so reading from that
window's start gives the same bits as reading everything. Features are causal inside the window, so
appending later bars never changes an earlier one.

Warm-up: a bar with fewer than ``registry.min_history`` bars in its window (itself included) is
marked ``warmup = True``; its values are whatever the indicators give (often NaN), never filled.

Labels, per horizon h days (``hb = h x bars per day`` bars): ``y_ret`` = close[t+hb] / close[t] - 1,
``y_cls`` = 2 (bullish) if y_ret > band, 0 (bearish) if y_ret < -band, else 1 (a return exactly at
the band edge is neutral); ``y_vol`` = population sd of the log returns of bars t+1 .. t+hb,
annualized like ``rvol_20``. The band is ``neutral_band`` (fixed mode) or
``vol_scale x rvol_20[t] x sqrt(h / 365)`` (vol_scaled mode, NULL while rvol_20 is undefined).
Labels are NULL while bar t+hb does not exist yet; gaps are not filled, so "h days" means hb bars.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.features import joins, registry

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
        if not self.horizons or any(int(h) != h or h <= 0 for h in self.horizons):
            raise ValueError(f"label horizons must be positive whole days, got {self.horizons!r}")
        if self.band_mode not in ("fixed", "vol_scaled"):
            raise ValueError(f"band_mode must be 'fixed' or 'vol_scaled', got {self.band_mode!r}")
        if not 0 <= self.neutral_band < 1:
            raise ValueError(f"neutral_band must be in [0, 1), got {self.neutral_band!r}")
        if self.vol_scale <= 0:
            raise ValueError(f"vol_scale must be positive, got {self.vol_scale!r}")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> LabelParams:
        from entasis.config import get_settings

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
    if pa_arr is not None and not pd.isna(first):  # Arrow-backed strings: compare in Arrow (10x faster)
        import pyarrow.compute as pc

        same = bool(pc.all(pc.equal(pa_arr, first)).as_py()) and pa_arr.null_count == 0
    else:
        same = not bool((s != first).any())
    if not same:
        vals = sorted(map(str, s.dropna().unique()))
        raise ValueError(f"compute() takes one series; got several {col} values: {vals[:5]}")
    return str(first)


def _prepare(
    candles: pd.DataFrame, timeframe: str | None, exchange: str | None, symbol: str | None
) -> _Series:
    """Check and sort one series' candles; bad input gets an error naming the row and column."""
    import pandas as pd

    missing = [c for c in _REQUIRED if c not in candles.columns]
    if missing:
        raise ValueError(f"candles lack column(s) {missing}; need {_REQUIRED} (+ optional quote_volume)")
    tf = _single(candles, "timeframe", timeframe)
    if not tf:
        raise ValueError("timeframe unknown: pass timeframe= or give candles a 'timeframe' column")
    registry.timeframe_seconds(tf)
    ex, sym = _single(candles, "exchange", exchange), _single(candles, "symbol", symbol)
    ts = joins.utc_ns(candles["ts"], f"candles {sym or ''} {tf}".strip())
    order: np.ndarray | slice = slice(None)
    if len(ts) > 1 and not bool((ts[1:] > ts[:-1]).all()):
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
    dup = np.flatnonzero(np.diff(ts) == 0)
    if len(dup):
        raise ValueError(f"candles {sym} {tf}: duplicate bar at ts={pd.Timestamp(ts[dup[0]], tz='UTC')}")
    step = registry.timeframe_seconds(tf) * _NS
    off = np.flatnonzero(ts % step != 0)
    if len(off):
        raise ValueError(
            f"candles {sym} {tf}: ts={pd.Timestamp(ts[off[0]], tz='UTC')} is not on the {tf} grid "
            "(ts must be the bar's open time)"
        )
    arrays: dict[str, np.ndarray] = {}
    for col in ["open", "high", "low", "close", "volume"]:
        a = _floats(candles[col])[order]
        ok = ((a >= 0) if col == "volume" else (a > 0)) & (a < np.inf)  # NaN fails both
        if not ok.all():
            i = int(np.argmin(ok))
            raise ValueError(
                f"candles {sym} {tf}: bad {col}={a[i]!r} at ts={pd.Timestamp(ts[i], tz='UTC')} "
                f"({'must be finite and >= 0' if col == 'volume' else 'must be a positive number'})"
            )
        arrays[col] = np.ascontiguousarray(a)
    if "quote_volume" in candles.columns:
        qv = _floats(candles["quote_volume"])[order]
    else:
        qv = np.full(len(ts), np.nan)
    typical = (arrays["high"] + arrays["low"] + arrays["close"]) / 3.0
    qv = np.where(np.isfinite(qv) & (qv >= 0), qv, arrays["volume"] * typical)
    return _Series(ex, sym, tf, ts, arrays["open"], arrays["high"], arrays["low"], arrays["close"],
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
    """A constant string column, built in Arrow (an object array of n strings is ~50x slower)."""
    import pandas as pd
    import pyarrow as pa

    dtype = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str"
    return pd.arrays.ArrowStringArray(pa.chunked_array([pa.repeat(pa.scalar(value, pa.large_string()), n)]),
                                      dtype=dtype)


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    """a[i - k] (NaN before the start): the value k bars earlier."""
    out = np.full(len(a), np.nan)
    if k < len(a):
        out[k:] = a[: len(a) - k]
    return out


def _log_change(a: np.ndarray) -> np.ndarray:
    prev = _shift(a, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(a / prev)
    r[~np.isfinite(r)] = np.nan
    return r


def candle_features(
    h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray, qv: np.ndarray, timeframe: str
) -> dict[str, np.ndarray]:
    """Bar-based features over one window of candles (the block window); all arrays as long as c."""
    import talib

    k24 = registry.bars_per_day(timeframe)
    ann = registry.annualizer(timeframe)
    inv_c = 1.0 / c
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = c / _shift(c, 1)
        lr = np.log(ratio)
        ret_24h = c / _shift(c, k24) - 1.0
    macd, macd_sig, macd_hist = talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
    upper, sma20, lower = talib.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=talib.MA_Type.SMA)
    width = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        pctb = np.where(width > 0, (c - lower) / width, np.nan)
    return {
        "ret_1": ratio - 1.0,
        "ret_24h": ret_24h,
        "log_ret_1": lr,
        "hl_spread": (h - low) * inv_c,
        "rsi_14": talib.RSI(c, timeperiod=14),
        "macd_rel": macd * inv_c,
        "macd_signal_rel": macd_sig * inv_c,
        "macd_hist_rel": macd_hist * inv_c,
        "bb_upper_rel": upper * inv_c - 1.0,
        "bb_lower_rel": lower * inv_c - 1.0,
        "bb_pctb": pctb,
        "bb_width": width / sma20,
        "ema_20_rel": talib.EMA(c, timeperiod=20) * inv_c - 1.0,
        "ema_50_rel": talib.EMA(c, timeperiod=50) * inv_c - 1.0,
        "sma_20_rel": sma20 * inv_c - 1.0,
        "sma_50_rel": talib.SMA(c, timeperiod=50) * inv_c - 1.0,
        "volume_ma_20_ratio": _ratio(v, talib.SMA(v, timeperiod=20)),
        "log_volume": np.log1p(v),
        "volume_change": _log_change(v),
        "log_quote_volume": np.log1p(qv),
        "quote_volume_change": _log_change(qv),
        "rvol_20": talib.STDDEV(lr, timeperiod=20, nbdev=1.0) * ann,
        "atr_14_rel": talib.ATR(h, low, c, timeperiod=14) * inv_c,
    }


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / b, np.nan)


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


def label_classes(r: np.ndarray, band: np.ndarray | float) -> Any:
    """0 bearish (r < -band), 1 neutral (|r| <= band, edges included), 2 bullish (r > band); NULL if unknown."""
    import pandas as pd

    cls = np.where(r > band, 2, np.where(r < -band, 0, 1)).astype(np.int16)
    return pd.arrays.IntegerArray(cls, np.isnan(r) | np.isnan(band))


def _extra_features(s: _Series, extras: Extras | None) -> dict[str, np.ndarray]:
    """Funding, open interest, basis, options and sentiment, each joined point-in-time on the close."""
    n = len(s.ts_ns)
    nan = np.full(n, np.nan)
    out = {c: nan for c in [*registry.PERP_FEATURES, *registry.OPTION_FEATURES, *registry.SENTIMENT_FEATURES]}
    if extras is None:
        return out
    close_ns = s.ts_ns + registry.timeframe_seconds(s.timeframe) * _NS
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
        perp, spot = (s.c, other) if registry.is_perp(s.symbol) else (other, s.c)
        out["perp_basis"] = perp / spot - 1.0
    opt = extras.options
    if opt is not None and not opt.empty:
        out.update(joins.asof_join(close_ns, opt, "snapshot_ts", registry.OPTION_FEATURES,
                                   what=f"option features for {tag}"))
    sent = extras.sentiment
    if sent is not None and not sent.empty:
        out["sentiment"] = joins.asof_join(close_ns, sent, "ts", ["value"], what=f"sentiment for {tag}")["value"]
    return out


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
) -> pd.DataFrame:
    """Features, warm-up flag and labels for one (exchange, symbol, timeframe) series.

    ``candles``: ts (bar open, UTC; naive means UTC), open, high, low, close, volume, optional
    quote_volume / exchange / symbol / timeframe. Returns one row per candle, sorted by ts, with
    ``registry.output_columns(horizons)``. ``block_bars`` / ``warmup_bars`` override the bounded-
    history windows (tests use small ones); keep the defaults for anything stored.
    """
    import pandas as pd

    params = labels or LabelParams.from_settings()
    s = _prepare(candles, timeframe, exchange, symbol)
    tf = s.timeframe
    n = len(s.ts_ns)
    mh = registry.min_history(tf)
    if n < mh:
        log.warning(
            "%s %s %s: only %d bar(s), fewer than the %d a bar needs; every row is marked warmup",
            s.exchange or "?", s.symbol or "?", tf, n, mh,
        )
    B = block_bars or registry.block_bars(tf)
    W = registry.warmup_bars(tf) if warmup_bars is None else warmup_bars
    if B <= 0 or W < 0:
        raise ValueError(f"block_bars must be > 0 and warmup_bars >= 0, got {B}, {W}")
    step = registry.timeframe_seconds(tf) * _NS
    ann = registry.annualizer(tf)
    hbars = {hd: registry.horizon_bars(hd, tf) for hd in params.horizons}
    H = max(hbars.values())

    # Every float column in one (columns x rows) block, in output order: no per-column copies later.
    float_cols = list(registry.FEATURE_COLUMNS)
    for hd in params.horizons:
        float_cols += [f"y_ret_{hd}d", f"y_vol_{hd}d"]
    row = {c: j for j, c in enumerate(float_cols)}
    block = np.full((len(float_cols), n), np.nan)
    warm = np.ones(n, dtype=bool)
    if n:
        block_of = s.ts_ns // (B * step)
        starts = np.flatnonzero(np.r_[True, block_of[1:] != block_of[:-1]])
        ends = np.r_[starts[1:], n]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            i0 = int(np.searchsorted(s.ts_ns, (int(block_of[a]) * B - W) * step, side="left"))
            sl = slice(i0, b)
            for name, arr in candle_features(s.h[sl], s.low[sl], s.c[sl], s.v[sl], s.qv[sl], tf).items():
                block[row[name], a:b] = arr[a - i0:]
            warm[a:b] = (np.arange(a - i0 + 1, b - i0 + 1)) < mh
            # forward vol needs up to H bars past the block; still a function of this block's window
            ce = s.c[i0:min(n, b + H)]
            with np.errstate(divide="ignore", invalid="ignore"):
                lr = np.log(ce / _shift(ce, 1))
            for hd, hb in hbars.items():
                block[row[f"y_vol_{hd}d"], a:b] = forward_vol(lr, hb, ann)[a - i0:b - i0]
    classes: dict[str, Any] = {}
    for hd, hb in hbars.items():
        r = block[row[f"y_ret_{hd}d"]]
        if hb < n:
            r[: n - hb] = s.c[hb:] / s.c[: n - hb] - 1.0  # exact pointwise: no window needed
        if params.band_mode == "fixed":
            band: np.ndarray | float = params.neutral_band
        else:
            band = params.vol_scale * block[row["rvol_20"]] * math.sqrt(hd / 365.0)
        classes[f"y_cls_{hd}d"] = label_classes(r, band)
    for name, arr in _extra_features(s, extras).items():
        block[row[name]] = arr

    out = pd.DataFrame(block.T, columns=float_cols, copy=False)
    others: dict[str, Any] = {
        "exchange": _const_str(s.exchange, n),
        "symbol": _const_str(s.symbol, n),
        "timeframe": _const_str(tf, n),
        "ts": pd.DatetimeIndex(s.ts_ns.astype("datetime64[ns]"), tz="UTC"),
        "warmup": warm,
        **classes,
    }
    for pos, col in enumerate(registry.output_columns(params.horizons)):
        if col in others:
            out.insert(pos, col, others[col])
    return out


def compute_many(
    candles: pd.DataFrame,
    extras: dict[tuple[str, str, str], Extras] | None = None,
    *,
    labels: LabelParams | None = None,
    **kw: Any,
) -> pd.DataFrame:
    """``compute`` for every (exchange, symbol, timeframe) in ``candles``, concatenated in key order."""
    import pandas as pd

    params = labels or LabelParams.from_settings()
    missing = [c for c in ["exchange", "symbol", "timeframe"] if c not in candles.columns]
    if missing:
        raise ValueError(f"compute_many needs key column(s) {missing}")
    frames = []
    for key, grp in candles.groupby(["exchange", "symbol", "timeframe"], sort=True):
        k = (str(key[0]), str(key[1]), str(key[2]))
        frames.append(compute(grp, (extras or {}).get(k), labels=params, **kw))
    if not frames:
        return pd.DataFrame(columns=registry.output_columns(params.horizons))
    return pd.concat(frames, ignore_index=True)


def infer_timeframe(ts: pd.Series) -> str:
    """The timeframe whose bar length is the most common gap between consecutive bars."""
    t = np.sort(joins.utc_ns(ts, "candles"))
    if len(t) < 2:
        raise ValueError("cannot infer a timeframe from fewer than 2 bars; pass timeframe=")
    d = np.diff(t)
    vals, counts = np.unique(d[d > 0], return_counts=True)
    step = int(vals[np.argmax(counts)]) // _NS
    for tf in ("1m", "5m", "15m", "1h", "4h", "1d"):
        if registry.timeframe_seconds(tf) == step:
            return tf
    raise ValueError(f"bars are {step}s apart, which is no known timeframe; pass timeframe=")


def read_candle_csv(path: str | Path) -> pd.DataFrame:
    """A candle CSV as ts, open, high, low, close, volume, quote_volume (``attrs``: symbol, timeframe).

    Uses ``entasis.sim.replay.load_candle_csv`` (yanniedog, CryptoDataDownload, Kaggle CMC and
    generic layouts) so the backtest and the features read CSVs the same way; falls back to a plain
    reader of the shared-data layout when the sim stage is not installed.
    """
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"candle CSV {p} does not exist")
    try:
        from entasis.sim.replay import load_candle_csv
    except ImportError:
        pass
    else:
        return load_candle_csv(p)
    df = pd.read_csv(p)
    df.columns = [c.strip().lower() for c in df.columns]
    tcol = next((c for c in ("ts", "timestamp", "date", "time", "open_time") if c in df.columns), None)
    if tcol is None:
        raise ValueError(f"{p}: no timestamp column (expected one of ts, timestamp, date, open_time)")
    t = df[tcol]
    if pd.api.types.is_numeric_dtype(t):
        unit = "ms" if t.abs().max() > 10**11 else "s"
        df["ts"] = pd.to_datetime(t, unit=unit, utc=True)
    else:
        df["ts"] = pd.to_datetime(t, utc=True)
    if tcol != "ts":
        df = df.drop(columns=[tcol])
    return df


def compute_from_candles_csv(
    path: str | Path,
    *,
    timeframe: str | None = None,
    exchange: str = "csv",
    symbol: str | None = None,
    extras: Extras | None = None,
    labels: LabelParams | None = None,
) -> pd.DataFrame:
    """Features straight from a candle CSV (for the backtest CLI): same ``compute``, no database.

    The symbol defaults to what the file says, else its name ('BTCUSDT_1d.csv' -> 'BTC/USDT'); the
    timeframe to what the name says, else the most common bar spacing. Duplicate or unsorted-and-
    conflicting bars are an error (clean such files first; compute never guesses which row is right).
    """
    df = read_candle_csv(path)
    tf = timeframe or (str(df["timeframe"].iloc[0]) if "timeframe" in df.columns and len(df) else None)
    tf = tf or df.attrs.get("timeframe") or infer_timeframe(df["ts"])
    sym = symbol or (str(df["symbol"].iloc[0]) if "symbol" in df.columns and len(df) else None)
    sym = sym or df.attrs.get("symbol") or _symbol_from_name(path)
    df = df.drop(columns=[c for c in ("exchange", "symbol", "timeframe") if c in df.columns])
    return compute(df, extras, timeframe=tf, exchange=exchange, symbol=sym, labels=labels)


def _symbol_from_name(path: str | Path) -> str:
    stem = Path(path).stem.split("_")[0].upper()
    for quote in ("USDT", "USDC", "BUSD", "USD", "BTC", "EUR"):
        if stem.endswith(quote) and len(stem) > len(quote):
            return f"{stem[: -len(quote)]}/{quote}"
    return stem
