"""The fast tree inference (issue 14) forecasts exactly what the context path forecast before it.

Why: the tree members now read a predict call's rows once into a shared row view and call XGBoost's
``inplace_predict``, LightGBM on the numpy array and the forest tree by tree; none of that may move a
forecast. The reference is the pre-issue-14 path (own context per member, scikit-learn's joblib
``predict_proba``, an XGBoost ``DMatrix``), kept in bench/inference.py as ``context_path_proba``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import pytest

from entasis.models import trees
from entasis.models.base import ModelError
from entasis.models.datasets import Split, asset_onehot, prepare_predict, split_frame
from entasis.models.ensemble import EnsembleModel
from entasis.models.factory import build_model
from entasis.models.trees import RandomForestModel, TabularModel, predict_threads, row_view
from entasis.models.weights import apply_temperature
from tests.bench_loader import load_bench

from ._synth import FEATS, TARGET, TINY, frame

TREES = ("rf", "xgb", "lgbm")


@pytest.fixture(scope="module")
def reference() -> Any:
    return load_bench("inference").context_path_proba


@pytest.fixture(scope="module")
def split() -> Split:
    return split_frame(frame(0.8, seed=5, n_days=300), 7)


@pytest.fixture(scope="module")
def members(split: Split) -> dict[str, TabularModel]:
    out = {}
    for name in TREES:
        m = build_model(name, features=FEATS, **TINY[name]).fit(split.train, TARGET, valid=split.valid)
        assert isinstance(m, TabularModel)
        out[name] = m
    return out


def _awkward(split: Split) -> pd.DataFrame:
    """Test rows shuffled, some flagged warmup, some feature values missing, one symbol never trained on."""
    rows = split.test.drop(columns=[c for c in split.test.columns if c.startswith("y_")])
    rows = rows.sample(frac=1.0, random_state=3).copy()
    rows["warmup"] = False
    rows.loc[rows.index[::7], "warmup"] = True
    rows.loc[rows.index[::5], FEATS[0]] = np.nan
    new = rows[rows["symbol"] == rows["symbol"].iloc[0]].iloc[:20].copy()
    new["symbol"] = "NEW/USDT"
    new.index = new.index + 10_000_000
    return pd.concat([rows, new])


@pytest.mark.parametrize("name", TREES)
def test_member_forecasts_equal_the_context_path_exactly(members: dict[str, TabularModel], split: Split,
                                                         reference: Any, name: str) -> None:
    m = members[name]
    for rows in (split.test, _awkward(split)):
        new = m.predict_proba(rows, history=split.frame)
        old = reference(m, rows)
        assert list(new.index) == list(rows.index) and list(new.columns) == list(old.columns)
        np.testing.assert_array_equal(new.to_numpy(), old.to_numpy())
    awk = _awkward(split)
    p = m.predict_proba(awk).to_numpy()
    assert np.isnan(p[awk["warmup"].to_numpy()]).all()          # warmup rows: NaN, never guessed
    assert np.isfinite(p[~awk["warmup"].to_numpy()]).all()      # unseen symbol and NaN features: forecast
    np.testing.assert_allclose(p[~awk["warmup"].to_numpy()].sum(axis=1), 1.0, rtol=1e-12)


def test_threaded_forest_gives_the_one_thread_sums(split: Split, reference: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """n_jobs=2 splits rows over threads: every row keeps the tree-order sum (scikit-learn's threads add trees
    in finishing order, so against them only to rounding)."""
    one = build_model("rf", features=FEATS, n_estimators=40, n_jobs=1).fit(split.train, TARGET)
    two = build_model("rf", features=FEATS, n_estimators=40, n_jobs=2).fit(split.train, TARGET)
    assert isinstance(two, RandomForestModel)
    monkeypatch.setattr(trees, "ROWS_PER_THREAD", 16)
    assert predict_threads(2, len(split.test)) == min(2, os.cpu_count() or 1)
    a = one.predict_proba(split.test).to_numpy()
    b = two.predict_proba(split.test).to_numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(b, reference(two, split.test).to_numpy(), rtol=1e-12, atol=0)


def test_predict_threads_by_batch_size() -> None:
    cores = os.cpu_count() or 1
    assert predict_threads(-1, 10) == 1                      # a small batch: one thread whatever n_jobs says
    assert predict_threads(1, 10**6) == 1
    assert predict_threads(-1, 10**6) == cores
    assert predict_threads(0, 10**6) == cores
    assert predict_threads(2, 2 * trees.ROWS_PER_THREAD) == min(2, cores)
    assert predict_threads(2, 2 * trees.ROWS_PER_THREAD - 1) == 1


@pytest.fixture(scope="module")
def ensemble(split: Split) -> EnsembleModel:
    params = {**TINY, "lgbm": {**TINY["lgbm"], "asset_id": False}}   # a member with another matrix
    e = build_model("ensemble", members=["lstm", *TREES], weights="default", features=FEATS, member_params=params)
    assert isinstance(e, EnsembleModel)
    return e.fit(split.train, TARGET, valid=split.valid, history=split.frame)


def test_ensemble_forecasts_equal_the_members_context_paths(ensemble: EnsembleModel, split: Split,
                                                            reference: Any) -> None:
    rows = _awkward(split)
    old_raw = {n: (reference(m, rows) if n in TREES else m.predict_proba(rows, history=split.frame)).to_numpy()
               for n, m in ensemble.models.items()}
    raw = ensemble.member_proba(rows, history=split.frame, calibrated=False)
    assert list(raw) == list(old_raw)
    for n in raw:
        np.testing.assert_array_equal(raw[n], old_raw[n])
    mix = ensemble.combine(rows, old_raw)
    ok = ~np.isnan(mix).any(axis=1)
    new = ensemble.predict_proba(rows, history=split.frame).to_numpy()
    np.testing.assert_array_equal(new[ok], mix[ok])
    assert np.isnan(new[~ok]).all() and ok.sum() > 50
    out = ensemble.predict(rows, history=split.frame, members=True)
    for n, p in old_raw.items():
        cal = apply_temperature(p, ensemble.temperatures[n])
        np.testing.assert_array_equal(out[[f"{n}_p_bearish", f"{n}_p_neutral", f"{n}_p_bullish"]].to_numpy(), cal)


def test_members_with_equal_inputs_share_one_matrix(ensemble: EnsembleModel, split: Split) -> None:
    tree_members = [ensemble.models[n] for n in TREES]
    assert all(isinstance(m, TabularModel) for m in tree_members)
    view = row_view(split.test, FEATS)
    xs = [m.view_matrix(view) for m in tree_members if isinstance(m, TabularModel)]
    assert xs[0] is xs[1]                      # rf and xgb: same features, scaler and assets
    assert xs[2] is not xs[0] and xs[2].shape[1] == len(FEATS) and xs[0].shape[1] == len(FEATS) + 3
    np.testing.assert_array_equal(xs[2], xs[0][:, : len(FEATS)])
    assert all(x.dtype == np.float32 and x.flags["C_CONTIGUOUS"] for x in xs)


def test_members_on_different_features_read_their_own_columns(split: Split, reference: Any) -> None:
    params = {"rf": {**TINY["rf"], "features": FEATS[:2]}, "xgb": {**TINY["xgb"], "features": FEATS[::-1]},
              "lgbm": {**TINY["lgbm"], "lags": [1]}}   # lgbm reads an earlier bar: its own context path
    e = build_model("ensemble", members=list(TREES), weights="default", calibrate=False, features=FEATS,
                    member_params=params)
    assert isinstance(e, EnsembleModel)
    e.fit(split.train, TARGET, valid=split.valid, history=split.frame)
    lag = e.models["lgbm"]
    assert isinstance(lag, TabularModel) and not lag.reads_rows_only
    raw = e.member_proba(split.test, history=split.frame, calibrated=False)
    for n in ("rf", "xgb"):
        np.testing.assert_array_equal(raw[n], reference(e.models[n], split.test).to_numpy())
    np.testing.assert_array_equal(raw["lgbm"], lag.predict_proba(split.test, history=split.frame).to_numpy())
    assert np.isfinite(raw["lgbm"]).all()
    with pytest.raises(ModelError, match="reads earlier bars"):
        lag.view_proba(row_view(split.test, FEATS))
    with pytest.raises(ModelError, match=r"no fitted member\(s\) \['lstm'\]"):
        e.member_proba(split.test, members=["rf", "lstm"])
    only = e.member_proba(split.test, members=["xgb"])
    assert list(only) == ["xgb"]


def test_row_view_refuses_what_the_context_path_refuses(members: dict[str, TabularModel], split: Split,
                                                        reference: Any) -> None:
    m = members["xgb"]
    rows = split.test.copy()
    dup = pd.concat([rows, rows.iloc[[3]].set_axis([10**9])])
    with pytest.raises(ModelError, match=r"duplicate \(symbol, ts\)"):
        m.predict_proba(dup)
    with pytest.raises(ModelError, match=f"rows is missing column\\(s\\): {FEATS[1]}"):
        m.predict_proba(rows.drop(columns=[FEATS[1]]))
    with pytest.raises(ModelError, match="non-unique index"):
        m.predict_proba(pd.concat([rows.iloc[:3], rows.iloc[:3]]))
    # the same instant in another time zone is the same bar
    other_tz = rows.iloc[[0]].copy()
    other_tz["ts"] = other_tz["ts"].dt.tz_convert("Asia/Tokyo")
    with pytest.raises(ModelError, match="duplicate"):
        m.predict_proba(pd.concat([rows.iloc[[0]], other_tz.set_axis([10**9])]))
    # a text / bool feature column is coerced exactly as the context path coerces it
    odd = rows.copy()
    odd[FEATS[0]] = odd[FEATS[0]].map(lambda v: f"{v!r}").astype(object)
    odd[FEATS[2]] = odd[FEATS[2]] > 0
    np.testing.assert_array_equal(m.predict_proba(odd).to_numpy(), reference(m, odd).to_numpy())
    empty = m.predict_proba(rows.iloc[:0])
    assert empty.shape == (0, 3)


def test_design_matrix_is_the_matrix_predict_proba_feeds(members: dict[str, TabularModel], split: Split) -> None:
    """``design_matrix`` (what SHAP explainers and bench/train read) gives the estimator's own inputs: on the
    last-bar view the context path's scaled features + asset one-hot, bit for bit, rows in input order; on a
    lagged view its context matrix; and the probabilities of that matrix are predict_proba's."""
    lagged = build_model("lgbm", features=FEATS, lags=[1, 3], roll=[5], **TINY["lgbm"]).fit(
        split.train, TARGET, valid=split.valid, history=split.frame)
    assert isinstance(lagged, TabularModel) and not lagged.reads_rows_only
    rows = _awkward(split)
    for m in (*members.values(), lagged):
        pos, x = m.design_matrix(rows, history=split.frame)
        p = m.predict_proba(rows, history=split.frame).to_numpy()
        assert x.dtype == np.float32 and x.shape == (len(pos), len(m.column_names()))
        np.testing.assert_array_equal(p[pos], m.predict_proba_matrix(x))
        assert np.isnan(np.delete(p, pos, axis=0)).all() and len(pos) == np.isfinite(p).all(axis=1).sum()
        if m.reads_rows_only:
            assert list(pos) == sorted(pos)                  # input order
            prep = prepare_predict(features=FEATS, scaler=m.scaler, min_history=1, rows=rows, history=None)
            s = prep.samples["rows"]
            ref = np.hstack([prep.z[s], asset_onehot(prep.ctx.symbols[s], m.assets)])
            order = np.argsort(prep.ctx.positions_of("rows", rows.index, s))
            assert x.tobytes() == np.ascontiguousarray(ref[order], dtype=np.float32).tobytes()
    with pytest.raises(ModelError, match="reads earlier bars"):
        lagged.view_matrix(row_view(rows, FEATS))           # a last-bar matrix would not be its inputs
    pos, x = members["rf"].design_matrix(rows.iloc[:0])
    assert pos.shape == (0,) and x.shape[0] == 0
    pos, x = lagged.design_matrix(rows.iloc[:2])             # no history: not enough bars, nothing eligible
    assert pos.shape == (0,) and x.shape == (0, len(lagged.column_names()))
