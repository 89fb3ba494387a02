"""A retry of a mapped train task (same horizon, same data interval, same settings) finds the version
the failed attempt registered and registers nothing new; another interval or horizon trains again."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from entasis import jobs
from entasis.config import get_settings
from entasis.models.synthetic import synthetic_bars
from entasis.models.train import train_and_register
from entasis.registry import models as reg

UNTIL = dt.datetime(2024, 6, 30, 2, 0, tzinfo=dt.UTC)


def test_retry_reuses_the_registered_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTASIS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ENTASIS_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ENTASIS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    frame = synthetic_bars(n_days=300, signal=1.0, n_noise=2, seed=3, planted="label",
                           symbols=("BTC/USDT", "ETH/USDT"))
    # what the first attempt of jobs.train did before it failed: train, register, tag with the train key
    (r,) = train_and_register(frame, horizons=[7], models=["lgbm"], vol=False,
                              member_params={"lgbm": {"n_estimators": 20, "n_jobs": 1}})
    reg.set_version_tags(r.model_name, r.version, {jobs.TRAIN_KEY_TAG: jobs._train_key(UNTIL, 7)})
    before = [mv.version for mv in reg.versions(r.model_name)]

    out = jobs.train(until=UNTIL, horizon=7)  # the retry: no database is read, nothing is trained
    assert out == [{"model_name": r.model_name, "asset": None, "horizon": 7, "version": r.version,
                    "run_id": r.run_id, "reused": True}]
    assert [mv.version for mv in reg.versions(r.model_name)] == before
    # a different interval, horizon or setting is a different training
    assert jobs._already_trained(jobs._train_key(UNTIL + dt.timedelta(days=7), 7), 7) is None
    assert jobs._already_trained(jobs._train_key(UNTIL, 14), 14) is None
    key = jobs._train_key(UNTIL, 7)
    monkeypatch.setenv("ENTASIS_TRAIN__SEED", "43")
    get_settings.cache_clear()
    assert jobs._train_key(UNTIL, 7) != key
    get_settings.cache_clear()


@pytest.mark.parametrize(("conf", "end", "expect"), [
    (None, UNTIL, UNTIL),                                                    # scheduled run: its interval end
    ({}, UNTIL, UNTIL),
    ({"reason": "drift"}, UNTIL, UNTIL),
    ({"until": "2024-07-03T03:30:00+00:00"}, UNTIL, dt.datetime(2024, 7, 3, 3, 30, tzinfo=dt.UTC)),  # monitor's
    ({"until": "2024-07-03T05:30:00+02:00"}, None, dt.datetime(2024, 7, 3, 3, 30, tzinfo=dt.UTC)),   # to UTC
    ({"until": ""}, UNTIL, UNTIL),
])
def test_cutoff_table(conf: dict[str, str] | None, end: dt.datetime | None, expect: dt.datetime) -> None:
    got = jobs.cutoff(conf, end)
    assert got == expect and got.utcoffset() == dt.timedelta(0)


def test_cutoff_refuses_to_guess() -> None:
    with pytest.raises(ValueError, match="refusing to guess"):
        jobs.cutoff(None, None)
    with pytest.raises(ValueError, match="no time zone"):
        jobs.cutoff({"until": "2024-07-03T03:30:00"}, UNTIL)
