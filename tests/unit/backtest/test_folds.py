"""Walk-forward folds: block layout, purge and embargo, rolling windows, the purge check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from entasis.backtest.folds import BacktestError, Fold, LeakageError, check_purge, make_folds, split_valid

DAYS = pd.Series(pd.date_range("2020-06-01", "2021-03-01", freq="1D", tz="UTC"))


def test_blocks_cover_the_range_once() -> None:
    folds = make_folds("2021-01-01", "2021-01-31", horizon=7, refit_days=7)
    assert [f.test_start.day for f in folds] == [1, 8, 15, 22, 29]
    covered = np.zeros(len(DAYS), dtype=int)
    for f in folds:
        covered += f.test_mask(DAYS)
    in_range = (DAYS >= "2021-01-01") & (DAYS <= "2021-01-31")
    assert (covered[in_range.to_numpy()] == 1).all()       # every test day exactly once, end inclusive
    assert (covered[~in_range.to_numpy()] == 0).all()


@pytest.mark.parametrize("horizon,embargo", [(7, 0), (14, 0), (30, 5)])
def test_purge_and_embargo(horizon: int, embargo: int) -> None:
    folds = make_folds("2021-01-01", "2021-02-28", horizon=horizon, refit_days=10, embargo_days=embargo)
    for f in folds:
        train = DAYS[f.train_mask(DAYS)]
        # the label window [t, t+h] of every training row ends before the block starts, with the embargo on top
        assert (train + pd.Timedelta(days=horizon + embargo) < f.test_start).all()
        assert train.max() == f.test_start - pd.Timedelta(days=horizon + embargo + 1)
        check_purge(f, train, horizon)  # no error


def test_rolling_window_length() -> None:
    folds = make_folds("2021-01-01", "2021-01-20", horizon=7, refit_days=7, window="rolling", train_days=60)
    for f in folds:
        train = DAYS[f.train_mask(DAYS)]
        assert len(train) == 60
        assert train.min() == f.train_end - pd.Timedelta(days=60)
    expanding = make_folds("2021-01-01", "2021-01-20", horizon=7)
    assert DAYS[expanding[0].train_mask(DAYS)].min() == DAYS.min()


def test_purge_check_catches_overlap() -> None:
    start = pd.Timestamp("2021-01-10", tz="UTC")
    leaky = Fold(0, None, start - pd.Timedelta(days=3), start, start + pd.Timedelta(days=7))
    train = DAYS[leaky.train_mask(DAYS)]
    with pytest.raises(LeakageError, match="overlaps the test block"):
        check_purge(leaky, train, horizon=7)
    # a training row inside the block is caught even with a zero horizon
    with pytest.raises(LeakageError):
        check_purge(leaky, pd.Series([start]), horizon=0)


def test_split_valid_purges_between_inner_and_valid() -> None:
    ts = DAYS[:200].to_numpy()
    inner, valid = split_valid(ts, horizon=7, fraction=0.2)
    cut = pd.Timestamp(ts[valid].min())
    assert valid.sum() == 40
    assert (pd.to_datetime(ts[inner]) + pd.Timedelta(days=7) < cut).all()
    assert not (inner & valid).any()
    assert (~inner & ~valid).sum() == 7  # the purged days are context only
    all_in, none = split_valid(ts, horizon=7, fraction=0.0)
    assert all_in.all() and not none.any()
    with pytest.raises(BacktestError, match="valid_fraction"):
        split_valid(ts, horizon=7, fraction=1.0)


@pytest.mark.parametrize("kw,msg", [
    ({"start": "2021-02-01", "end": "2021-01-01"}, "before start"),
    ({"window": "rolling"}, "train_days"),
    ({"refit_days": 0}, "refit_days"),
    ({"horizon": 0}, "horizon"),
    ({"start": "not a date"}, "start"),
])
def test_bad_parameters_named(kw: dict[str, object], msg: str) -> None:
    args: dict[str, object] = {"start": "2021-01-01", "end": "2021-02-01", "horizon": 7, **kw}
    with pytest.raises(BacktestError, match=msg):
        make_folds(**args)  # type: ignore[arg-type]
