"""The one definition of every feature and label: ``compute(candles, extras)`` for one series.

``compute`` is pure (pandas + numpy + TA-Lib, and numba for one pass of plain arithmetic): the
pandas path, the Spark job (its array core ``compute_series``, through ``mapInArrow``) and the
backtest all call it, so they cannot disagree. See :mod:`entasis.features.catalog` for the column
list and the time convention (``ts`` is the bar's open; a bar's features use what is known at its
close).

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

Warm-up: a bar with fewer than ``catalog.min_history`` bars in its window (itself included) is
marked ``warmup = True``; its values are whatever the indicators give (often NaN), never filled.

Labels, per horizon h days (``hb = h x bars per day`` bars): ``y_ret`` = close[t+hb] / close[t] - 1,
``y_cls`` = 2 (bullish) if y_ret > band, 0 (bearish) if y_ret < -band, else 1 (a return exactly at
the band edge is neutral); ``y_vol`` = population sd of the log returns of bars t+1 .. t+hb,
annualized like ``rvol_20``. The band is ``neutral_band`` (fixed mode) or
``vol_scale x rvol_20[t] x sqrt(h / 365)`` (vol_scaled mode, NULL while rvol_20 is undefined): the one
rule :class:`entasis.domain.BandRule`, which also settles published predictions.
Labels are NULL while bar t+hb does not exist yet; gaps are not filled, so "h days" means hb bars.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from entasis.config import get_settings
from entasis.domain import BandRule, check_horizon, label_column
from entasis.features import catalog, joins
from entasis.features.cross import with_cross_sectional
from entasis.features.extensions import extension_features
from entasis.features.jit import jit

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
    regular: bool = False  # every bar exactly one timeframe after the one before (no gaps)


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
    than an element-wise compare): every element ``len(value)`` bytes long, and the bytes ``value``
    repeated (one memcmp); None when the layout is not a plain (large_)string one."""
    import pyarrow as pa

    raw = value.encode()
    width = len(raw)
    tiled: dict[int, Any] = {}  # value repeated n times, per chunk length (built once per call)
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
        if int(offs[-1]) - o0 != n * width or not _same_lengths(offs, width):
            return False
        if width:
            if n not in tiled:
                tiled[n] = pa.py_buffer(raw * n)
            if not bufs[2].slice(o0, n * width).equals(tiled[n]):
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
    step = catalog.timeframe_seconds(tf) * _NS
    floats = (o, h, low, c, v) if qv is None else (o, h, low, c, v, qv)
    if _plain(ts_ns, *floats):
        # the usual case, settled in one compiled pass: sorted, one bar every step from a bar on the
        # grid, every price positive, every volume (and quote volume) finite and >= 0; the quote
        # volume made in the same pass where the exchange gives none
        made = np.empty(len(ts_ns) if qv is None else 0)
        if _clean_and_regular(ts_ns, o, h, low, c, v, v if qv is None else qv, made, step):
            return _Series(exchange, sym, tf, ts_ns, o, h, low, c, v, made if qv is None else qv, True)
    ts = ts_ns
    order: np.ndarray | slice = slice(None)
    gaps = np.diff(ts)
    if len(ts) > 1 and not bool((gaps > 0).all()):  # strictly increasing: sorted, no duplicates
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        gaps = np.diff(ts)
        dup = np.flatnonzero(gaps == 0)
        if len(dup):
            raise ValueError(f"candles {sym} {tf}: duplicate bar at ts={pd.Timestamp(ts[dup[0]], tz='UTC')}")
    # one bar every step: the grid check is the first bar's; else every bar's
    regular = len(ts) > 1 and bool((gaps == step).all())
    if (ts[0] % step != 0) if regular else bool((ts % step).any()):
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
    if qv is not None:
        qv = qv[order]
        # two reductions first (NaN fails them); the element-wise mask only when one fails
        if len(qv) and not (qv.min() >= 0 and qv.max() < np.inf):
            good = np.isfinite(qv) & (qv >= 0)
            qv = np.where(good, qv, arrays["volume"] * _typical(arrays))
    else:
        qv = arrays["volume"] * _typical(arrays)
    return _Series(exchange, sym, tf, ts, arrays["open"], arrays["high"], arrays["low"], arrays["close"],
                   arrays["volume"], np.ascontiguousarray(qv), regular)


def _plain(ts: np.ndarray, *floats: np.ndarray) -> bool:
    """Whether ts is int64 and every other array float64, all 1-D, C-contiguous and as long (what the
    compiled check takes), with at least two bars."""
    def ok(x: np.ndarray, dtype: Any) -> bool:
        return bool(x.dtype == dtype and x.ndim == 1 and x.flags.c_contiguous and len(x) == len(ts))

    return len(ts) > 1 and ok(ts, np.int64) and all(ok(x, np.float64) for x in floats)


def _typical(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(high + low + close) / 3: what quote volume is made of where the exchange gives none."""
    return (arrays["high"] + arrays["low"] + arrays["close"]) / 3.0


def _floats(s: pd.Series) -> np.ndarray:
    """A column as float64 (non-numbers -> NaN, caught by the checks that follow)."""
    import pandas as pd

    if s.dtype == np.float64:
        return s.to_numpy()
    if s.dtype.kind in "iu":
        return s.to_numpy(dtype=np.float64)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


_CONST_CHUNK = 8192
_UTC_NS = "datetime64[ns, UTC]"


def _const_str(value: str, n: int) -> Any:
    """A constant string column (pandas' default "str", Arrow-backed): one chunk of up to
    ``_CONST_CHUNK`` copies, repeated (the chunks share their buffers), so a long series costs no more
    memory than a short one; an object array of n strings is ~50x slower."""
    import pandas as pd
    import pyarrow as pa

    raw = value.encode()
    k = min(n, _CONST_CHUNK)
    offsets = np.arange(0, (k + 1) * len(raw), len(raw) or 1, dtype=np.int64) if raw else np.zeros(k + 1, np.int64)
    arr = pa.Array.from_buffers(pa.large_string(), k, [None, pa.py_buffer(offsets), pa.py_buffer(raw * k)])
    full, rest = divmod(n, k) if k else (0, 0)
    chunks = [arr] * full + ([arr.slice(0, rest)] if rest else [])
    dtype = pd.StringDtype("pyarrow", na_value=np.nan)
    return pd.arrays.ArrowStringArray(pa.chunked_array(chunks, type=pa.large_string()), dtype=dtype)


def candle_features(
    h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray, qv: np.ndarray, timeframe: str,
    *, skip: int = 0, out: np.ndarray | None = None, lr: np.ndarray | None = None,
) -> np.ndarray:
    """Bar-based features over one window of candles (the block window), one row per
    ``catalog.CANDLE_FEATURES`` column.

    The indicators run over the whole window; the values are made only for bars ``skip`` onwards
    (the bars before are the warm-up read): ``out`` is (len(CANDLE_FEATURES), len(c) - skip), each
    row C-contiguous (rows of the caller's column block: this is the hot loop of every path). ``lr``:
    the window's one-bar log returns (NaN first) when the caller already has them.

    TA-Lib makes the indicators; one compiled pass (:func:`_candle_kernel`) makes every ratio from
    them (IEEE arithmetic, the same operations in the same order as the numpy formulas it replaced,
    so the same bits); the logarithms stay numpy's (numba's libm log may differ in the last bit).
    """
    import talib

    m = len(c) - skip
    if out is None:
        out = np.empty((len(catalog.CANDLE_FEATURES), m))
    if m <= 0:
        return out
    if lr is None:
        lr = _window_log_returns(c)
    ta = _ta()
    macd, macd_sig, macd_hist = ta.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
    upper, sma20, lower = ta.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=talib.MA_Type.SMA)
    _candle_kernel(
        h, low, c, v, qv, lr, skip, catalog.bars_per_day(timeframe), catalog.annualizer(timeframe),
        ta.RSI(c, timeperiod=14), macd, macd_sig, macd_hist, upper, sma20, lower,
        ta.EMA(c, timeperiod=20), ta.EMA(c, timeperiod=50), ta.SMA(c, timeperiod=50),
        ta.SMA(v, timeperiod=20), ta.STDDEV(lr, timeperiod=20, nbdev=1.0), ta.ATR(h, low, c, timeperiod=14),
        *(out[i] for i in range(len(catalog.CANDLE_FEATURES))),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log1p(v[skip:], out=out[_LOG_VOLUME])
        np.log(out[_VOLUME_CHANGE], out=out[_VOLUME_CHANGE])  # the kernel left the ratio (NaN where 0 or inf)
        np.log1p(qv[skip:], out=out[_LOG_QUOTE_VOLUME])
        np.log(out[_QUOTE_VOLUME_CHANGE], out=out[_QUOTE_VOLUME_CHANGE])
    return out


@functools.cache
def _ta() -> Any:
    """The TA-Lib functions compute uses, without the package's pandas/polars wrapper (a dozen
    isinstance checks per call, ~50 calls per series; ``functools.wraps`` keeps the C function as
    ``__wrapped__``): the same C functions on the same arrays."""
    import types

    import talib

    names = ("MACD", "BBANDS", "RSI", "EMA", "SMA", "STDDEV", "ATR")
    return types.SimpleNamespace(**{n: getattr(getattr(talib, n), "__wrapped__", getattr(talib, n)) for n in names})


if catalog.SERIES_FEATURES[: len(catalog.CANDLE_FEATURES)] != catalog.CANDLE_FEATURES:
    raise RuntimeError("catalog: the candle features must lead SERIES_FEATURES (compute writes them as one row block)")
_LOG_VOLUME = catalog.CANDLE_FEATURES.index("log_volume")
_VOLUME_CHANGE = catalog.CANDLE_FEATURES.index("volume_change")
_LOG_QUOTE_VOLUME = catalog.CANDLE_FEATURES.index("log_quote_volume")
_QUOTE_VOLUME_CHANGE = catalog.CANDLE_FEATURES.index("quote_volume_change")


@jit
def _same_lengths(offs: np.ndarray, width: int) -> bool:  # pragma: no cover - compiled
    """Whether every element of an Arrow string array (its offsets) is ``width`` bytes long."""
    ok = True
    for i in range(len(offs) - 1):
        ok &= offs[i + 1] - offs[i] == width
    return ok


@jit
def _clean_and_regular(
    ts: np.ndarray, o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray, qv: np.ndarray,
    made: np.ndarray, step: int,
) -> bool:  # pragma: no cover - compiled
    """One pass: the first bar on the grid, each next bar exactly ``step`` later, prices in (0, inf),
    volumes in [0, inf) (NaN fails every test). False sends the caller to the detailed checks.
    ``made`` (empty, or one slot per bar): where the exchange gives no quote volume, it gets
    v x typical price (as :func:`_typical`, the same operations)."""
    if ts[0] % step != 0:
        return False
    ok = True
    for i in range(1, len(ts)):
        ok &= ts[i] - ts[i - 1] == step
    for j in range(len(ts)):
        ok &= (o[j] > 0.0) & (o[j] < np.inf) & (h[j] > 0.0) & (h[j] < np.inf)
        ok &= (low[j] > 0.0) & (low[j] < np.inf) & (c[j] > 0.0) & (c[j] < np.inf)
        ok &= (v[j] >= 0.0) & (v[j] < np.inf)
    for j in range(len(made)):
        made[j] = v[j] * ((h[j] + low[j] + c[j]) / 3.0)
    for j in range(len(ts)):
        ok &= (qv[j] >= 0.0) & (qv[j] < np.inf)
    return ok


@jit
def _candle_kernel(  # noqa: PLR0913 - one argument per indicator and per output row, in catalogue order
    h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray, qv: np.ndarray, lr: np.ndarray,
    skip: int, k24: int, ann: float, rsi: np.ndarray, macd: np.ndarray, macd_sig: np.ndarray,
    macd_hist: np.ndarray, upper: np.ndarray, sma20: np.ndarray, lower: np.ndarray, ema20: np.ndarray,
    ema50: np.ndarray, sma50: np.ndarray, vma: np.ndarray, sd20: np.ndarray, atr: np.ndarray,
    ret_1: np.ndarray, ret_24h: np.ndarray, log_ret_1: np.ndarray, hl_spread: np.ndarray, rsi_14: np.ndarray,
    macd_rel: np.ndarray, macd_signal_rel: np.ndarray, macd_hist_rel: np.ndarray, bb_upper_rel: np.ndarray,
    bb_lower_rel: np.ndarray, bb_pctb: np.ndarray, bb_width: np.ndarray, ema_20_rel: np.ndarray,
    ema_50_rel: np.ndarray, sma_20_rel: np.ndarray, sma_50_rel: np.ndarray, volume_ma_20_ratio: np.ndarray,
    log_volume: np.ndarray, volume_change: np.ndarray, log_quote_volume: np.ndarray,
    quote_volume_change: np.ndarray, rvol_20: np.ndarray, atr_14_rel: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Every candle feature but the logarithms, for window bars skip.. (the ``*_change`` rows get the
    ratio, NaN where its log would not be finite). Loops over pre-sliced arrays so they vectorise."""
    nan = np.nan
    m = len(c) - skip
    cs, hs, ls, vs, qs = c[skip:], h[skip:], low[skip:], v[skip:], qv[skip:]
    inv = np.empty(m)
    for j in range(m):
        inv[j] = 1.0 / cs[j]
    first = 1 if skip == 0 else 0  # the window's first bar has no bar before it
    if first:
        ret_1[0] = nan
        volume_change[0] = nan
        quote_volume_change[0] = nan
    c0, v0, q0 = c[skip + first - 1:], v[skip + first - 1:], qv[skip + first - 1:]
    for j in range(first, m):
        ret_1[j] = cs[j] / c0[j - first] - 1.0
    for j in range(first, m):
        r = vs[j] / v0[j - first]
        volume_change[j] = r if (r > 0.0) and (r < np.inf) else nan
    for j in range(first, m):
        r = qs[j] / q0[j - first]
        quote_volume_change[j] = r if (r > 0.0) and (r < np.inf) else nan
    lo24 = min(m, max(0, k24 - skip))  # bars of this part with a bar 24h earlier in the window
    for j in range(lo24):
        ret_24h[j] = nan
    if lo24 < m:
        cb = c[skip + lo24 - k24:]
        for j in range(lo24, m):
            ret_24h[j] = cs[j] / cb[j - lo24] - 1.0
    lrs, rsis, mc, ms, mh = lr[skip:], rsi[skip:], macd[skip:], macd_sig[skip:], macd_hist[skip:]
    up, mid, dn = upper[skip:], sma20[skip:], lower[skip:]
    e20, e50, s50, vm, sd, at = ema20[skip:], ema50[skip:], sma50[skip:], vma[skip:], sd20[skip:], atr[skip:]
    for j in range(m):
        log_ret_1[j] = lrs[j]
        rsi_14[j] = rsis[j]
        hl_spread[j] = (hs[j] - ls[j]) * inv[j]
    for j in range(m):
        macd_rel[j] = mc[j] * inv[j]
        macd_signal_rel[j] = ms[j] * inv[j]
        macd_hist_rel[j] = mh[j] * inv[j]
    for j in range(m):
        bb_upper_rel[j] = up[j] * inv[j] - 1.0
        bb_lower_rel[j] = dn[j] * inv[j] - 1.0
    for j in range(m):
        w = up[j] - dn[j]
        bb_pctb[j] = nan if w <= 0.0 else (cs[j] - dn[j]) / w  # a NaN width makes %b NaN as well
        bb_width[j] = w / mid[j]
    for j in range(m):
        ema_20_rel[j] = e20[j] * inv[j] - 1.0
        ema_50_rel[j] = e50[j] * inv[j] - 1.0
        sma_20_rel[j] = mid[j] * inv[j] - 1.0
        sma_50_rel[j] = s50[j] * inv[j] - 1.0
    for j in range(m):
        a = vm[j]
        volume_ma_20_ratio[j] = nan if a <= 0.0 else vs[j] / a  # a NaN average makes the ratio NaN
    for j in range(m):
        rvol_20[j] = sd[j] * ann
        atr_14_rel[j] = at[j] * inv[j]


@jit
def _classify_into(r: np.ndarray, band: np.ndarray, codes: np.ndarray, unknown: np.ndarray) -> None:
    """:func:`entasis.domain.classify_returns` in one compiled pass (it takes seven numpy passes):
    ``band`` holds one value (a fixed band) or one per return. The same comparisons, so the same codes;
    ``tests/unit/features/test_labels.py`` holds it to the domain rule on the edge cases."""
    one = len(band) == 1
    for t in range(len(r)):
        b = band[0] if one else band[t]
        x = r[t]
        codes[t] = np.int16(1) + np.int16(x > b) - np.int16(x < -b)
        unknown[t] = np.isnan(x) or np.isnan(b)


def _window_log_returns(c: np.ndarray) -> np.ndarray:
    """log(c_t / c_{t-1}) over a window, NaN for its first bar (it has no bar before it)."""
    out = np.empty(len(c))
    if len(c):
        out[0] = np.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(c[1:], c[:-1], out=out[1:])
            np.log(out[1:], out=out[1:])
    return out


def forward_vol(lr: np.ndarray, hb: int, ann: float) -> np.ndarray:
    """Annualized population sd of lr[t+1 .. t+hb], at t; NaN where the window runs past the end."""
    out = np.empty(len(lr))
    _forward_vol_into(lr, hb, ann, 0, out)
    return out


def _forward_vol_into(lr: np.ndarray, hb: int, ann: float, first: int, out: np.ndarray) -> None:
    """``forward_vol(lr, hb, ann)[first:first + len(out)]`` written into ``out`` (no full-length temporaries)."""
    m = len(out)
    end = min(m, max(0, len(lr) - hb - first))  # bars whose forward window ends inside lr
    if end > 0:
        if hb == 1:
            trailing = np.where(np.isnan(lr), np.nan, 0.0)  # the sd of one value is 0
        else:
            trailing = _ta().STDDEV(lr, timeperiod=hb, nbdev=1.0)
        np.multiply(trailing[first + hb: first + hb + end], ann, out=out[:end])
    out[end:] = np.nan


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
    float_cols = list(float_columns(params.horizons))
    row = {c: j for j, c in enumerate(float_cols)}
    block = np.empty((len(float_cols), n))
    warm = np.ones(n, dtype=bool)
    if n:
        lr_all = _window_log_returns(s.c)
        for a, b, i0 in block_windows(s.ts_ns, B * step, W * step, s.regular):
            sl = slice(i0, b)
            # the window's log returns: the series' ones, with the window's first bar NaN (as if read alone)
            lr = lr_all[i0:min(n, b + H)].copy()
            lr[0] = np.nan
            candle_features(s.h[sl], s.low[sl], s.c[sl], s.v[sl], s.qv[sl], tf, skip=a - i0,
                            out=block[: len(catalog.CANDLE_FEATURES), a:b], lr=lr[: b - i0])
            # warm-up: the bars whose window (itself included) holds fewer than mh bars
            warm[a:b] = False
            warm[a:max(a, min(b, i0 + mh - 1))] = True
            # forward vol needs up to H bars past the block; still a function of this block's window
            for hd, hb in hbars.items():
                _forward_vol_into(lr, hb, ann, a - i0, block[row[label_column("vol", hd)], a:b])
    # returns over d days: close now / close of the bar exactly d days earlier (NaN where that bar is
    # missing), so they need exactly d days of history whatever the gaps (the incremental read has it)
    for d in catalog.MOMENTUM_DAYS:
        _return_over_time(s.ts_ns, s.c, d * 86_400 * _NS, block[row[f"ret_{d}d"]], step if s.regular else None)
    classes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for hd, hb in hbars.items():
        r = block[row[label_column("ret", hd)]]
        _pointwise_return(s.c, hb, r, forward=True)
        band = np.asarray(rule.band(hd, block[row["rvol_20"]]), dtype=np.float64).reshape(-1)
        codes, unknown = np.empty(n, dtype=np.int16), np.empty(n, dtype=bool)
        _classify_into(r, band, codes, unknown)
        classes[label_column("cls", hd)] = (codes, unknown)
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
    from pandas.api.internals import create_dataframe_from_blocks

    params = labels or LabelParams.from_settings()
    s = _prepare(candles, timeframe, exchange, symbol)
    n = len(s.ts_ns)
    # the frame's non-float columns first, while the input is still in the caches (the float block
    # evicts them: pandas' object work runs several times slower after it)
    layout = _frame_layout(params.horizons)
    others: dict[str, Any] = {
        "exchange": _const_str(s.exchange, n),
        "symbol": _const_str(s.symbol, n),
        "timeframe": _const_str(s.timeframe, n),
        "ts": pd.DatetimeIndex(s.ts_ns.view("datetime64[ns]"), dtype=_UTC_NS, copy=False).array,
    }
    _, block, warm, codes = compute_series(s, extras, params, block_bars, warmup_bars, extensions)
    others.update({k: pd.arrays.IntegerArray(*v) for k, v in codes.items()})
    # The float block is handed to pandas as it is (one 2-D block, no per-column copies or checks).
    blocks: list[tuple[Any, np.ndarray]] = [(block, layout.floats), (warm.reshape(1, n), layout.of["warmup"])]
    blocks += [(arr, layout.of[c]) for c, arr in others.items()]
    return create_dataframe_from_blocks(blocks, index=pd.RangeIndex(n), columns=layout.columns.copy())


def block_windows(ts_ns: np.ndarray, block_ns: int, warmup_ns: int, regular: bool) -> list[tuple[int, int, int]]:
    """(first bar, end bar, window's first bar) of each epoch-aligned block the series touches: a
    block's bars are computed from the candles that start ``warmup_ns`` before the block does."""
    n = len(ts_ns)
    t0 = int(ts_ns[0])
    if regular:  # one bar every step (a block is a whole number of steps): the edges by arithmetic
        step = int(ts_ns[1] - ts_ns[0])
        first = min(n, ((t0 // block_ns + 1) * block_ns - t0) // step)
        starts = [0, *range(first, n, block_ns // step)]
    else:
        block_of = ts_ns // block_ns
        starts = np.flatnonzero(np.r_[True, block_of[1:] != block_of[:-1]]).tolist()
    ends = [*starts[1:], n]
    return [(a, b, int(np.searchsorted(ts_ns, int(ts_ns[a]) // block_ns * block_ns - warmup_ns, side="left")))
            for a, b in zip(starts, ends, strict=True)]


class _Layout(NamedTuple):
    """Where ``compute``'s blocks go in its frame: the column Index and each block's column positions."""

    columns: pd.Index
    floats: np.ndarray  # positions of the float block's rows (``float_columns`` order)
    of: dict[str, np.ndarray]  # position of each other column


@functools.cache
def _frame_layout(horizons: tuple[int, ...]) -> _Layout:
    """``catalog.series_columns`` and the block positions, built once per horizons: each frame gets a
    shallow copy of the Index (its own object: renaming one frame's axis never touches another's); the
    position arrays are shared, so read-only."""
    import pandas as pd

    pos = {c: i for i, c in enumerate(catalog.series_columns(horizons))}
    floats = np.array([pos[c] for c in float_columns(horizons)], dtype=np.intp)
    of = {c: np.array([i], dtype=np.intp) for c, i in pos.items()}
    for arr in (floats, *of.values()):
        arr.flags.writeable = False
    return _Layout(pd.Index(list(pos)), floats, of)


@functools.cache
def float_columns(horizons: tuple[int, ...]) -> tuple[str, ...]:
    """The float block's rows: the series features, then ``y_ret``/``y_vol`` per horizon."""
    return (*catalog.SERIES_FEATURES, *(label_column(k, hd) for hd in horizons for k in ("ret", "vol")))


def _return_over_time(ts_ns: np.ndarray, c: np.ndarray, span_ns: int, out: np.ndarray,
                      regular_step: int | None = None) -> None:
    """out[t] = c[t] / c[bar at ts[t] - span] - 1; NaN where no bar sits exactly there.
    ``regular_step``: the bars are known to be exactly this far apart (no second look at the gaps)."""
    n = len(c)
    if n == 0:
        return
    if regular_step is not None and span_ns % regular_step == 0:
        _pointwise_return(c, span_ns // regular_step, out, forward=False)
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
        return pd.DataFrame(columns=catalog.series_columns(params.horizons))
    return pd.concat(frames, ignore_index=True)


def compute_universe(
    candles: pd.DataFrame,
    extras: dict[tuple[str, str, str], Extras] | None = None,
    *,
    labels: LabelParams | None = None,
    **kw: Any,
) -> pd.DataFrame:
    """What features.bars holds for these candles: ``compute_many`` plus the cross-sectional pass
    (:mod:`entasis.features.cross`) over every series given; ``catalog.output_columns`` order."""
    return with_cross_sectional(compute_many(candles, extras, labels=labels, **kw))
