"""The one catalogue of feature and label columns, and the time conventions they rest on.

Time convention (binding for every stage): a bar's ``ts`` is its OPEN time, as in
``market.candles``. A bar's features use only data known at its CLOSE, ``ts + timeframe``:
its own OHLCV, earlier bars, and extras (funding, open interest, option snapshots, sentiment)
published at or before that close. Labels look forward from the close of bar ``t`` to the close
of bar ``t + h`` bars.

Prices enter models scale-free (returns, log returns, ratios to close), so pooled models across
assets make sense; the ``*_rel`` columns are ``x / close - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from entasis import domain
from entasis.domain import label_columns

KEY_COLUMNS: list[str] = ["exchange", "symbol", "timeframe", "ts"]

# name -> what it is (the description is what publish/explainability show for a factor).
FEATURES: dict[str, str] = {
    # candles
    "ret_1": "simple return over 1 bar, close_t / close_{t-1} - 1",
    "ret_24h": "simple return over the bars spanning 24 hours (1 bar on 1d, 24 on 1h)",
    "log_ret_1": "log return over 1 bar",
    "hl_spread": "(high - low) / close of the bar",
    "rsi_14": "RSI 14 (Wilder), 0..100",
    "macd_rel": "MACD line (EMA12 - EMA26) / close",
    "macd_signal_rel": "MACD signal (EMA9 of MACD) / close",
    "macd_hist_rel": "MACD histogram (MACD - signal) / close",
    "bb_upper_rel": "Bollinger upper band (SMA20 + 2 sd) / close - 1",
    "bb_lower_rel": "Bollinger lower band (SMA20 - 2 sd) / close - 1",
    "bb_pctb": "Bollinger %b, (close - lower) / (upper - lower)",
    "bb_width": "Bollinger width, (upper - lower) / SMA20",
    "ema_20_rel": "EMA 20 / close - 1",
    "ema_50_rel": "EMA 50 / close - 1",
    "sma_20_rel": "SMA 20 / close - 1",
    "sma_50_rel": "SMA 50 / close - 1",
    "volume_ma_20_ratio": "volume / SMA20(volume): relative volume",
    "log_volume": "log(1 + base volume); not comparable across assets (units differ)",
    "volume_change": "log(volume_t / volume_{t-1}); NaN when either is zero",
    "log_quote_volume": "log(1 + quote volume); quote volume is volume x typical price where the "
    "exchange gives none (exchanges give no market cap)",
    "quote_volume_change": "log(quote_volume_t / quote_volume_{t-1}); NaN when either is zero",
    "rvol_20": "realized volatility: population sd of 20 one-bar log returns, annualized (365 days)",
    "atr_14_rel": "ATR 14 (Wilder) / close",
    # momentum over days (pointwise from the full history: exact whatever the block window)
    "ret_7d": "simple return over the bars spanning 7 days, close_t / close_{t-7d} - 1",
    "ret_30d": "simple return over the bars spanning 30 days",
    "ret_90d": "simple return over the bars spanning 90 days",
    # perpetual futures (NaN where the data do not exist)
    "funding_rate": "last funding rate published at or before the bar's close",
    "funding_rate_7d": "mean funding rate over the 7 days up to the bar's close",
    "oi_change_24h": "log change of open interest over the 24 hours up to the bar's close",
    "perp_basis": "perp close / spot close - 1 for the same bar",
    # options (features.option_features, by underlying)
    "atm_iv_7d": "ATM implied vol, 7 days, latest snapshot at or before the close",
    "atm_iv_30d": "ATM implied vol, 30 days",
    "rr25_30d": "25-delta risk reversal, 30 days",
    "bf25_30d": "25-delta butterfly, 30 days",
    "term_slope": "implied-vol term-structure slope",
    "pc_oi_ratio": "put/call open-interest ratio",
    # sentiment (market.sentiment)
    "sentiment": "latest sentiment value (e.g. Crypto Fear & Greed, 0..100) at or before the close",
    # support/resistance (entasis.signals.levels, through entasis.features.extensions)
    "support_dist_atr": "(close - nearest support level below it) / mean true range of 14 bars; NaN when there is none",
    "resistance_dist_atr": "(nearest resistance above the close - close) / mean true range of 14 bars; NaN when none",
    # cross-sectional: per bar, across the spot universe of the same exchange and timeframe
    # (entasis.features.cross; NaN on perpetuals and where fewer than 2 assets have the input)
    "xs_rank_ret_7d": "percentile rank (0 lowest .. 1 highest, ties averaged) of ret_7d across the universe",
    "xs_rank_ret_30d": "percentile rank of ret_30d across the universe",
    "xs_rank_ret_90d": "percentile rank of ret_90d across the universe",
    "xs_rank_rvol_20": "percentile rank of rvol_20 across the universe",
    "rel_btc_ret_7d": "ret_7d minus BTC's ret_7d in the same bar",
    "rel_btc_ret_30d": "ret_30d minus BTC's ret_30d in the same bar",
    "rel_mkt_ret_7d": "ret_7d minus the equal-weighted mean ret_7d of the universe",
    "rel_mkt_ret_30d": "ret_30d minus the equal-weighted mean ret_30d of the universe",
    # market regime: the same value for every asset of the universe in a bar
    "mkt_ret_1": "equal-weighted mean one-bar return of the universe",
    "mkt_ret_7d": "equal-weighted mean ret_7d of the universe",
    "mkt_rvol_20": "equal-weighted mean rvol_20 of the universe (the volatility regime)",
    "mkt_breadth_50": "share of the universe whose close is above its SMA 50",
    "btc_qv_share": "BTC's share of the universe's quote volume in the bar",
}

FEATURE_COLUMNS: list[str] = list(FEATURES)
CANDLE_FEATURES: list[str] = FEATURE_COLUMNS[: FEATURE_COLUMNS.index("atr_14_rel") + 1]
MOMENTUM_DAYS: tuple[int, ...] = (7, 30, 90)
MOMENTUM_FEATURES: list[str] = [f"ret_{d}d" for d in MOMENTUM_DAYS]
PERP_FEATURES: list[str] = ["funding_rate", "funding_rate_7d", "oi_change_24h", "perp_basis"]
OPTION_FEATURES: list[str] = ["atm_iv_7d", "atm_iv_30d", "rr25_30d", "bf25_30d", "term_slope", "pc_oi_ratio"]
SENTIMENT_FEATURES: list[str] = ["sentiment"]
LEVEL_FEATURES: list[str] = ["support_dist_atr", "resistance_dist_atr"]
CROSS_FEATURES: list[str] = FEATURE_COLUMNS[FEATURE_COLUMNS.index("xs_rank_ret_7d"):]
# What one series' compute() fills (the cross-sectional columns stay NaN until the second pass).
SERIES_FEATURES: list[str] = [c for c in FEATURE_COLUMNS if c not in CROSS_FEATURES]

WARMUP_COLUMN = "warmup"

# Bump when a definition changes: the build then recomputes every row (the state's config hash changes).
FEATURE_VERSION = "3"


# A bar needs this many bars of history (itself included) before it leaves warm-up: twice the
# longest window (50), so the EMA seeds weigh under 2%; and at least 24h plus one bar.
BASE_MIN_HISTORY = 100
# Warm-up read before each block (see entasis.features.compute): long enough that the EMA/Wilder
# seeds have decayed below float precision, (49/51)^950 < 1e-16.
BASE_WARMUP_BARS = 1000
BASE_BLOCK_BARS = 16_384


def output_columns(horizons: Iterable[int]) -> list[str]:
    """Every column of a features.bars row (and of a universe frame with its cross-sectional pass), in order."""
    return [*KEY_COLUMNS, *FEATURE_COLUMNS, WARMUP_COLUMN, *label_columns(horizons)]


def series_columns(horizons: Iterable[int]) -> list[str]:
    """The columns ``compute`` makes for one series: ``output_columns`` less the cross-sectional ones."""
    return [*KEY_COLUMNS, *SERIES_FEATURES, WARMUP_COLUMN, *label_columns(horizons)]


def timeframe_seconds(timeframe: str) -> int:
    """Bar length of a timeframe features are built for (:data:`entasis.domain.PIPELINE_TIMEFRAMES`)."""
    return domain.timeframe_seconds(timeframe, domain.PIPELINE_TIMEFRAMES)


def bars_per_day(timeframe: str) -> int:
    """Bars in 24 hours: 1 on 1d, 24 on 1h; h-day horizons are h * this many bars."""
    return 86_400 // timeframe_seconds(timeframe)


def horizon_bars(horizon_days: int, timeframe: str) -> int:
    return int(horizon_days) * bars_per_day(timeframe)


def bars_per_year(timeframe: str) -> float:
    """Crypto trades every day: 365 days a year."""
    return 365.0 * 86_400 / timeframe_seconds(timeframe)


def annualizer(timeframe: str) -> float:
    return math.sqrt(bars_per_year(timeframe))


def min_history(timeframe: str) -> int:
    return max(BASE_MIN_HISTORY, bars_per_day(timeframe) + 1)


def history_bars(timeframe: str) -> int:
    """Bars of history a pointwise feature reaches back (ret_90d): an incremental read starts this far back."""
    return max(MOMENTUM_DAYS) * bars_per_day(timeframe)


def warmup_bars(timeframe: str) -> int:
    return max(BASE_WARMUP_BARS, 2 * bars_per_day(timeframe))


def block_bars(timeframe: str) -> int:
    return max(BASE_BLOCK_BARS, 8 * warmup_bars(timeframe))


def underlying_of(symbol: str) -> str:
    """'BTC/USDT' and 'BTC/USDT:USDT' -> 'BTC' (the key of option features)."""
    return symbol.split("/", 1)[0]


def pair_of(symbol: str) -> str:
    """'BTC/USDT:USDT' -> 'BTC/USDT': the spot pair a perp tracks (and a spot pair itself)."""
    return symbol.split(":", 1)[0]


def is_perp(symbol: str) -> bool:
    return ":" in symbol


def perp_of(symbol: str) -> str:
    """The linear perpetual's ccxt symbol for a pair: 'BTC/USDT' -> 'BTC/USDT:USDT'."""
    pair = pair_of(symbol)
    return f"{pair}:{pair.split('/', 1)[1]}"
