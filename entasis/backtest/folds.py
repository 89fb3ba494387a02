"""Walk-forward folds: when each model is refit, on which rows, and which rows it then predicts.

The test range ``[start, end]`` is cut into consecutive blocks of ``refit_days``; before each block the
models are refit on the training window that ends where the block starts, minus a purge:

* **purge** — a row at ``t`` carries a label computed from prices up to ``t + h`` (h = horizon in days).
  A training row is kept only when its label window ``[t, t + h]`` ends strictly before the test block
  starts: ``t + h < test_start``. Otherwise the model would train on returns that the test block is
  scored on.
* **embargo** — ``embargo_days`` more days dropped before the block (default 0): insurance against
  serial correlation of features beyond the label window. (After the test block nothing is trained on
  in a walk-forward, so no embargo is needed on that side.)

So the training cut-off is ``train_end = test_start − (h + embargo) days`` (exclusive), and
``window='expanding'`` trains on everything before it while ``window='rolling'`` keeps only the last
``train_days``. :func:`check_purge` verifies the rows actually used, and raises :class:`LeakageError`
(the walk-forward calls it for every fold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from entasis.domain import utc_timestamp

if TYPE_CHECKING:
    import pandas as pd


class BacktestError(ValueError):
    """Bad backtest input: the message names the parameter or column at fault."""


class LeakageError(RuntimeError):
    """The evaluation is not honest: a training label overlaps its test block, or results are implausible."""


Window = Literal["expanding", "rolling"]


@dataclass(frozen=True)
class Fold:
    """One refit: train on ``[train_start, train_end)``, predict ``[test_start, test_end)``."""

    index: int
    train_start: pd.Timestamp | None   # None: from the first row (expanding window)
    train_end: pd.Timestamp            # exclusive; = test_start − (horizon + embargo) days
    test_start: pd.Timestamp
    test_end: pd.Timestamp             # exclusive

    def train_mask(self, ts: pd.Series | np.ndarray) -> np.ndarray:
        t = _ts_array(ts)
        m = t < np.datetime64(self.train_end.tz_convert(None).to_datetime64())
        if self.train_start is not None:
            m &= t >= np.datetime64(self.train_start.tz_convert(None).to_datetime64())
        return np.asarray(m)

    def test_mask(self, ts: pd.Series | np.ndarray) -> np.ndarray:
        t = _ts_array(ts)
        lo = np.datetime64(self.test_start.tz_convert(None).to_datetime64())
        hi = np.datetime64(self.test_end.tz_convert(None).to_datetime64())
        return np.asarray((t >= lo) & (t < hi))


def _ts_array(ts: pd.Series | np.ndarray) -> np.ndarray:
    """UTC timestamps as naive datetime64[ns] for fast comparisons."""
    import pandas as pd

    s = pd.to_datetime(pd.Series(np.asarray(ts)) if not isinstance(ts, pd.Series) else ts, utc=True)
    return np.asarray(s.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]"))


def utc(value: object, *, what: str) -> pd.Timestamp:
    """:func:`entasis.domain.utc_timestamp` (naive refused, a bare date is that UTC day), as a BacktestError."""
    try:
        return utc_timestamp(value, what)
    except ValueError as e:
        raise BacktestError(str(e)) from None


def make_folds(start: object, end: object, *, horizon: int, refit_days: int = 7,
               window: Window = "expanding", train_days: int | None = None, embargo_days: int = 0,
               data_start: object | None = None) -> list[Fold]:
    """Consecutive test blocks of ``refit_days`` covering ``[start, end]`` (``end`` inclusive)."""
    import pandas as pd

    t0, t1 = utc(start, what="start"), utc(end, what="end")
    if t1 < t0:
        raise BacktestError(f"end {t1.date()} is before start {t0.date()}")
    if horizon <= 0:
        raise BacktestError(f"horizon must be a positive number of days; got {horizon}")
    if refit_days <= 0:
        raise BacktestError(f"refit_days must be positive; got {refit_days}")
    if embargo_days < 0:
        raise BacktestError(f"embargo_days must be >= 0; got {embargo_days}")
    if window not in ("expanding", "rolling"):
        raise BacktestError(f"window must be 'expanding' or 'rolling'; got {window!r}")
    if window == "rolling" and (train_days is None or train_days <= 0):
        raise BacktestError("a rolling window needs train_days > 0")
    gap = pd.Timedelta(days=horizon + embargo_days)
    step = pd.Timedelta(days=refit_days)
    stop = t1 + pd.Timedelta(microseconds=1)  # end is inclusive
    lower = utc(data_start, what="data_start") if data_start is not None else None
    folds: list[Fold] = []
    ts = t0
    while ts <= t1:
        te = min(ts + step, stop)
        train_end = ts - gap
        if window == "rolling":
            assert train_days is not None
            tr_start: pd.Timestamp | None = train_end - pd.Timedelta(days=train_days)
        else:
            tr_start = lower
        folds.append(Fold(len(folds), tr_start, train_end, ts, te))
        ts = ts + step
    return folds


def check_purge(fold: Fold, train_ts: pd.Series | np.ndarray, horizon: int) -> None:
    """Raise :class:`LeakageError` when a training row's label window [t, t+h] reaches the test block."""
    import pandas as pd

    t = _ts_array(train_ts)
    if t.size == 0:
        return
    last = pd.Timestamp(t.max()).tz_localize("UTC")
    if last + pd.Timedelta(days=horizon) >= fold.test_start:
        raise LeakageError(
            f"fold {fold.index}: training row at {last} has a {horizon}-day label window ending "
            f"{last + pd.Timedelta(days=horizon)}, which overlaps the test block starting {fold.test_start}")
    first_test = fold.test_start
    if (t >= np.datetime64(first_test.tz_convert(None).to_datetime64())).any():
        raise LeakageError(f"fold {fold.index}: training rows inside the test block starting {first_test}")


def split_valid(ts: np.ndarray, horizon: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Inner train / validation masks over training timestamps: the last ``fraction`` of distinct days is
    validation, and inner-train rows are purged so their labels end before validation starts.
    ``fraction=0`` keeps every row for training (no early stopping; an ensemble that calibrates fails)."""
    t = _ts_array(ts)
    if not 0 <= fraction < 1:
        raise BacktestError(f"valid_fraction must be in [0, 1); got {fraction}")
    uniq = np.unique(t)
    if fraction == 0 or uniq.size < 4:  # no validation split: every training row is fit on
        return np.ones(t.size, dtype=bool), np.zeros(t.size, dtype=bool)
    cut = uniq[min(int(round(uniq.size * (1 - fraction))), uniq.size - 1)]
    valid = t >= cut
    inner = t + np.timedelta64(horizon, "D") < cut
    return inner, valid


def fold_table(folds: Sequence[Fold]) -> pd.DataFrame:
    """The folds as a frame (for reports and the runs table)."""
    import pandas as pd

    return pd.DataFrame([{"fold": f.index, "train_start": f.train_start, "train_end": f.train_end,
                          "test_start": f.test_start, "test_end": f.test_end} for f in folds])
