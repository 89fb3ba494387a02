"""Timeframe names, their length in milliseconds and bucket alignment, shared by the simulator and server.

Buckets are aligned the way Binance aligns klines: to the Unix epoch for fixed lengths and to Monday
00:00 UTC for weeks. Monthly candles are not supported (neither generated nor served).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
#: 1970-01-05 was the first Monday after the epoch; weekly buckets start on Mondays.
WEEK_ORIGIN_MS = 4 * DAY_MS

TIMEFRAME_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": WEEK_MS,
}

#: Bybit v5 ``interval`` values and the timeframe each one means.
BYBIT_INTERVALS: dict[str, str] = {
    "1": "1m", "3": "3m", "5": "5m", "15": "15m", "30": "30m", "60": "1h", "120": "2h", "240": "4h",
    "360": "6h", "720": "12h", "D": "1d", "W": "1w",
}


def timeframe_ms(timeframe: str) -> int:
    """Length of one bar; a clear error for names we do not generate."""
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise ValueError(
            f"unknown timeframe {timeframe!r}; expected one of {', '.join(TIMEFRAME_MS)}"
        ) from None


def origin_ms(timeframe: str) -> int:
    return WEEK_ORIGIN_MS if timeframe == "1w" else 0


def bucket_start(ts_ms: NDArray[np.int64] | int, timeframe: str) -> NDArray[np.int64] | int:
    """Open time of the bar of ``timeframe`` containing each timestamp (ms)."""
    size = timeframe_ms(timeframe)
    off = origin_ms(timeframe)
    return ((np.asarray(ts_ms, dtype=np.int64) - off) // size) * size + off if not isinstance(ts_ms, int) \
        else ((ts_ms - off) // size) * size + off


def ceil_to(ts_ms: int, timeframe: str) -> int:
    """Smallest bar boundary at or after ``ts_ms``."""
    start = int(bucket_start(ts_ms, timeframe))
    return start if start == ts_ms else start + timeframe_ms(timeframe)
