"""Extension point: per-series feature modules outside ``compute`` (e.g. support/resistance distance).

How to add one (the catalogue stays the one contract):
1. add its columns to ``catalog.FEATURES`` (after the built-in per-series groups, before the
   cross-sectional ones) and a migration in 0300-0399 that adds them to features.bars;
2. write a pure function ``fn(series) -> {column: array}`` in its own module, where ``series`` has
   ``ts_ns, o, h, low, c, v, qv`` (numpy, sorted, one row per bar) and ``timeframe``;
3. register it here: ``SERIES_EXTENSIONS.append(fn)`` at import of this module (``_load`` below).

Rules the build relies on: the function is causal (a bar's value uses that bar and earlier ones
only: the look-ahead tests truncate the series and compare) and reaches back at most
``catalog.history_bars(timeframe)`` bars, so an incremental build (which reads that much history
before its first rewritten bar) gives the same bits as a full one. Columns it does not return are NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

SeriesFn = Callable[[Any], dict[str, np.ndarray]]
SERIES_EXTENSIONS: list[SeriesFn] = []


def extension_features(series: Any) -> dict[str, np.ndarray]:
    """Every registered extension's columns for one series (later registrations win on a clash)."""
    out: dict[str, np.ndarray] = {}
    for fn in SERIES_EXTENSIONS:
        for name, arr in fn(series).items():
            a = np.asarray(arr, dtype=np.float64)
            if a.shape != series.c.shape:
                raise ValueError(f"feature extension {getattr(fn, '__name__', fn)!r}: column {name!r} has "
                                 f"{a.shape[0] if a.ndim else 0} values for {len(series.c)} bars")
            out[name] = a
    return out


def _load() -> None:
    """The registered extensions: support/resistance distances (entasis.signals.levels)."""
    from entasis.signals.levels import level_features

    if level_features not in SERIES_EXTENSIONS:
        SERIES_EXTENSIONS.append(level_features)


_load()
