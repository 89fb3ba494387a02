"""The project's vocabulary, defined once: every stage imports these names instead of restating them.

Classes and probability columns, the pooled-model name, horizons and label column names, the neutral
band that turns a forward return into a class, confidence levels, timeframes, and what a time is.
Pure and light (numpy only; pandas is imported inside the time helpers that return pandas values),
so that config, store and every stage above them can import it at start-up.

Time rule (one for the whole code base): a time given from outside (CLI option, API parameter, config,
DAG conf, a registry tag) must say its zone: a naive date-time (``datetime`` without ``tzinfo`` or an
ISO string with a time of day and no offset) is refused with an error naming the value. A bare ISO date
(``2024-01-01``) names that UTC calendar day (midnight UTC): dates have no time of day to be ambiguous
about, and every day boundary in the project is a UTC one. Inside, every time is tz-aware UTC.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# --- classes and probabilities -----------------------------------------------------------------
BEARISH, NEUTRAL, BULLISH = 0, 1, 2
#: Class names by class code (0 bearish, 1 neutral, 2 bullish).
CLASS_NAMES: tuple[str, str, str] = ("bearish", "neutral", "bullish")
N_CLASSES = len(CLASS_NAMES)
#: Probability columns, in class-code order (what predict_proba, the backtest and ml.predictions use).
PROBA_COLUMNS: tuple[str, str, str] = ("p_bearish", "p_neutral", "p_bullish")

#: The ``asset`` value of a model trained across the whole universe (ml.champions, registry names, API).
POOLED = "pooled"
#: Length bounds of an asset symbol as given from outside ('BTC/USDT', 'btc-usdt', 'BTC/USDT:USDT'); the
#: store's ``asset`` columns are unbounded text, so this is the one limit (the API's ``asset_symbol``).
ASSET_SYMBOL_MIN_LEN, ASSET_SYMBOL_MAX_LEN = 1, 40


def class_name(code: int) -> str:
    """'bearish' / 'neutral' / 'bullish' for 0 / 1 / 2; a clear error for anything else."""
    c = int(code)
    if c != code or not 0 <= c < N_CLASSES:
        raise ValueError(f"class code must be 0, 1 or 2; got {code!r}")
    return CLASS_NAMES[c]


def class_code(name: str) -> int:
    """0 / 1 / 2 for 'bearish' / 'neutral' / 'bullish'."""
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise ValueError(f"class name must be one of {', '.join(CLASS_NAMES)}; got {name!r}") from None


# --- horizons and label columns ----------------------------------------------------------------
LabelKind = Literal["cls", "ret", "vol"]
#: Label kinds per horizon, in the binding column order of features.bars.
LABEL_KINDS: tuple[LabelKind, ...] = ("cls", "ret", "vol")
LABEL_PREFIXES: tuple[str, ...] = tuple(f"y_{k}_" for k in LABEL_KINDS)
_LABEL_RE = re.compile(r"^y_(cls|ret|vol)_(\d+)d$")


def check_horizon(horizon: Any) -> int:
    """A horizon in whole days > 0 (7, 14, 30 ...), or a clear error."""
    try:
        h = int(horizon)
    except (TypeError, ValueError):
        raise ValueError(f"label horizon must be a positive whole number of days, got {horizon!r}") from None
    if h != horizon or h <= 0 or isinstance(horizon, bool):
        raise ValueError(f"label horizon must be a positive whole number of days, got {horizon!r}")
    return h


def label_column(kind: LabelKind, horizon: int) -> str:
    """``y_cls_7d`` / ``y_ret_7d`` / ``y_vol_7d``: the one way a label column is named."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"label kind must be one of {', '.join(LABEL_KINDS)}; got {kind!r}")
    return f"y_{kind}_{check_horizon(horizon)}d"


def target_column(horizon: int) -> str:
    """The classification label for a horizon (what models fit on)."""
    return label_column("cls", horizon)


def label_columns(horizons: Iterable[int]) -> list[str]:
    """Every label column for these horizons, sorted by horizon, y_cls, y_ret, y_vol per horizon."""
    hs = sorted({check_horizon(h) for h in horizons})
    return [label_column(k, h) for h in hs for k in LABEL_KINDS]


def parse_label_column(column: str) -> tuple[LabelKind, int]:
    """('cls', 7) from 'y_cls_7d'; a clear error for anything else."""
    m = _LABEL_RE.match(str(column))
    if m is None:
        raise ValueError(f"{column!r} is not a label column (expected y_cls_<h>d, y_ret_<h>d or y_vol_<h>d)")
    kind: LabelKind = m.group(1)  # type: ignore[assignment]
    return kind, check_horizon(int(m.group(2)))


def horizon_of(column: str) -> int:
    """The horizon in days of a label column ('y_cls_14d' -> 14)."""
    return parse_label_column(column)[1]


# --- the neutral band: forward return -> class -------------------------------------------------
BAND_MODES = ("fixed", "vol_scaled")


@dataclass(frozen=True)
class BandRule:
    """How a forward return becomes a class: above ``band`` bullish, below ``-band`` bearish, else neutral
    (a return exactly at the edge is neutral). The band is ``neutral_band`` (fixed mode) or
    ``vol_scale x rvol_20 x sqrt(h / 365)`` at the prediction's bar (vol_scaled mode; unknown while
    rvol_20 is). The labels (features) and the settlement of published predictions both use this."""

    neutral_band: float = 0.02
    band_mode: str = "fixed"
    vol_scale: float = 0.5

    def __post_init__(self) -> None:
        if self.band_mode not in BAND_MODES:
            raise ValueError(f"band_mode must be 'fixed' or 'vol_scaled', got {self.band_mode!r}")
        if not 0 <= self.neutral_band < 1:
            raise ValueError(f"neutral_band must be in [0, 1), got {self.neutral_band!r}")
        if self.vol_scale <= 0:
            raise ValueError(f"vol_scale must be positive, got {self.vol_scale!r}")

    @classmethod
    def from_labels(cls, labels: Any) -> BandRule:
        """From ``Settings.labels`` (anything with neutral_band, band_mode, vol_scale)."""
        return cls(float(labels.neutral_band), str(labels.band_mode), float(labels.vol_scale))

    def band(self, horizon: int, rvol_20: Any = None) -> Any:
        """The band for this horizon: a float (fixed), or per ``rvol_20`` value (array in, array out;
        NaN where the volatility is unknown; None for an unknown scalar)."""
        if self.band_mode == "fixed":
            return self.neutral_band
        if rvol_20 is None:
            return None
        root = math.sqrt(check_horizon(horizon) / 365.0)
        # this exact order of operations: the stored labels were computed with it (bit-identical rebuilds)
        if np.ndim(rvol_20) == 0:
            v = float(rvol_20)
            return self.vol_scale * v * root if math.isfinite(v) else None
        return self.vol_scale * np.asarray(rvol_20, dtype=np.float64) * root


def classify_returns(r: np.ndarray, band: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(int16 class codes, unknown mask): 2 where r > band, 0 where r < -band, else 1; unknown where the
    return or the band is NaN (its code is then meaningless)."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        cls = np.add(r > band, 1, dtype=np.int16)
        cls -= r < -band
    return cls, np.isnan(r) | np.isnan(band)


def classify_return(r: float, band: float) -> int:
    """The class of one settled return (see :func:`classify_returns`); non-finite input is an error."""
    if not math.isfinite(r):
        raise ValueError(f"cannot classify a non-finite return {r!r}")
    if band is None or not math.isfinite(band):
        raise ValueError(f"cannot classify a return with an unknown band {band!r}")
    return int(classify_returns(np.array([r]), band)[0][0])


# --- confidence --------------------------------------------------------------------------------
#: Confidence is the top class probability; levels: high >= 0.70, medium >= 0.50, else low.
#: Published as a percentage (``confidence`` = top probability x 100) with the level beside it.
HIGH_CONFIDENCE, MEDIUM_CONFIDENCE = 0.70, 0.50
CONFIDENCE_LEVELS = ("high", "medium", "low")


def confidence_levels(top_p: np.ndarray) -> np.ndarray:
    """'high' / 'medium' / 'low' per top-class probability (object array; None where NaN)."""
    t = np.asarray(top_p, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out = np.where(t >= HIGH_CONFIDENCE, "high", np.where(t >= MEDIUM_CONFIDENCE, "medium", "low")).astype(object)
    out[np.isnan(t)] = None
    return out


def confidence_level(top_p: float) -> str:
    """The level of one top-class probability (0..1)."""
    if not math.isfinite(top_p):
        raise ValueError(f"confidence of a non-finite probability {top_p!r}")
    return str(confidence_levels(np.array([top_p]))[0])


def confidence(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (n, 3) probabilities: (top probability x 100, level); NaN / None for rows with a NaN."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be (n, classes); got shape {p.shape}")
    bad = np.isnan(p).any(axis=1)
    top = np.where(bad, np.nan, np.max(np.where(np.isnan(p), 0.0, p), axis=1, initial=0.0))
    return top * 100.0, confidence_levels(top)


# --- timeframes --------------------------------------------------------------------------------
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
#: 1970-01-05 was the first Monday after the epoch; weekly bars start on Mondays (as Binance's do).
WEEK_ORIGIN_MS = 4 * DAY_MS
DAYS_PER_YEAR = 365  # crypto trades every day

#: Every bar length the project knows (the simulator serves all of them).
TIMEFRAME_MS: dict[str, int] = {
    "1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS, "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS, "2h": 2 * HOUR_MS, "4h": 4 * HOUR_MS, "6h": 6 * HOUR_MS, "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS, "1d": DAY_MS, "3d": 3 * DAY_MS, "1w": WEEK_MS,
}
#: The timeframes the pipeline collects and builds features for (``universe.timeframes`` choose among them).
PIPELINE_TIMEFRAMES: tuple[str, ...] = ("1m", "5m", "15m", "1h", "4h", "1d")


def timeframe_ms(timeframe: str, known: Iterable[str] | None = None) -> int:
    """Length of one bar in ms; ``known`` narrows what is accepted (e.g. :data:`PIPELINE_TIMEFRAMES`)."""
    names = tuple(TIMEFRAME_MS) if known is None else tuple(known)
    if timeframe not in names or timeframe not in TIMEFRAME_MS:
        raise ValueError(f"unknown timeframe {timeframe!r}; expected one of {', '.join(names)}")
    return TIMEFRAME_MS[timeframe]


def timeframe_seconds(timeframe: str, known: Iterable[str] | None = None) -> int:
    return timeframe_ms(timeframe, known) // 1000


def timeframe_origin_ms(timeframe: str) -> int:
    """Where a timeframe's grid starts: the epoch, except weeks, which start on Mondays (1970-01-05)."""
    return WEEK_ORIGIN_MS if timeframe == "1w" else 0


def bars_per_year(timeframe: str, known: Iterable[str] | None = None) -> float:
    """Bars in 365 days (crypto trades every day): 365 on 1d, 8760 on 1h."""
    return DAYS_PER_YEAR * DAY_MS / timeframe_ms(timeframe, known)


# --- time ----------------------------------------------------------------------------------------
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_HINT = "use ISO 8601 with a zone, e.g. 2024-05-01 (a UTC day) or 2024-05-01T06:00:00+00:00"


def utc_timestamp(value: Any, what: str = "time") -> pd.Timestamp:
    """A tz-aware UTC ``pd.Timestamp`` from an aware datetime / Timestamp, an ISO string with an offset
    (``Z`` or ``+00:00``) or a bare ISO date (that UTC day). Naive date-times, missing values and
    unparsable text are refused with a ValueError naming ``what``."""
    import pandas as pd

    if value is None or value is pd.NaT:
        raise ValueError(f"{what} is missing")
    if isinstance(value, bool) or not isinstance(value, str | datetime | np.datetime64):
        raise ValueError(f"{what}={value!r} is not a timestamp; {_ISO_HINT}")
    if isinstance(value, str):
        text = value.strip()
        if _DATE_ONLY.match(text):
            text += "T00:00:00+00:00"
        try:  # strictly ISO 8601 (pandas alone would read 'June 1st')
            t = pd.Timestamp(datetime.fromisoformat(text))
        except (TypeError, ValueError):
            raise ValueError(f"{what}={value!r} is not a timestamp; {_ISO_HINT}") from None
    else:
        t = pd.Timestamp(value)
    if t is pd.NaT:
        raise ValueError(f"{what} is missing")
    if t.tzinfo is None:
        raise ValueError(f"{what}={value!r} has no time zone; {_ISO_HINT}")
    return t.tz_convert("UTC")


def utc_datetime(value: Any, what: str = "time") -> datetime:
    """:func:`utc_timestamp` as a plain ``datetime`` (tzinfo UTC)."""
    return utc_timestamp(value, what).to_pydatetime()


def to_ms(value: Any, what: str = "time") -> int:
    """Epoch milliseconds: an int / float is taken as ms already; anything else as :func:`utc_timestamp`."""
    if isinstance(value, bool):
        raise ValueError(f"{what}={value!r}: a boolean is not a time")
    if isinstance(value, int | float | np.integer | np.floating):
        if not math.isfinite(float(value)):
            raise ValueError(f"{what}={value!r} is not a time")
        return int(value)
    return int(utc_timestamp(value, what).value // 1_000_000)


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds."""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
