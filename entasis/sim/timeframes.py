"""Bucket alignment and Bybit's interval names, shared by the simulator and server.

Buckets are aligned the way Binance aligns klines: to the Unix epoch for fixed lengths and to Monday
00:00 UTC for weeks. Monthly candles are not supported (neither generated nor served).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# The timeframe table, its units and grid origins are entasis.domain's (one definition for every stage).
from entasis.domain import timeframe_ms, timeframe_origin_ms

#: Bybit v5 ``interval`` values and the timeframe each one means.
BYBIT_INTERVALS: dict[str, str] = {
    "1": "1m", "3": "3m", "5": "5m", "15": "15m", "30": "30m", "60": "1h", "120": "2h", "240": "4h",
    "360": "6h", "720": "12h", "D": "1d", "W": "1w",
}


def bucket_start(ts_ms: NDArray[np.int64] | int, timeframe: str) -> NDArray[np.int64] | int:
    """Open time of the bar of ``timeframe`` containing each timestamp (ms)."""
    size = timeframe_ms(timeframe)
    off = timeframe_origin_ms(timeframe)
    return ((np.asarray(ts_ms, dtype=np.int64) - off) // size) * size + off if not isinstance(ts_ms, int) \
        else ((ts_ms - off) // size) * size + off


def ceil_to(ts_ms: int, timeframe: str) -> int:
    """Smallest bar boundary at or after ``ts_ms``."""
    start = int(bucket_start(ts_ms, timeframe))
    return start if start == ts_ms else start + timeframe_ms(timeframe)
