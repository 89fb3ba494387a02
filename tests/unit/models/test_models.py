"""Every member learns a planted signal out of sample, finds nothing in noise, and round-trips on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.domain import PROBA_COLUMNS
from entasis.models.base import Model, ModelError
from entasis.models.datasets import split_frame
from entasis.models.factory import available_models, build_from_config, build_model, load_model
from entasis.models.lstm import LSTMModel
from entasis.models.scoring import classification_metrics
from entasis.models.trees import RandomForestModel

from ._synth import FEATS, TARGET, TINY, labels

MEMBERS = ["lstm", "rf", "xgb", "lgbm"]


def _fit_score(name: str, df: pd.DataFrame) -> tuple[Model, dict[str, float], np.ndarray]:
    sp = split_frame(df, 7)
    m = build_model(name, features=FEATS, **TINY[name]).fit(sp.train, TARGET, valid=sp.valid, history=sp.frame)
    p = m.predict_proba(sp.test, history=sp.frame).to_numpy()
    y = labels(sp.test)
    ok = ~np.isnan(y) & ~np.isnan(p).any(axis=1)
    freq = np.bincount(y[ok].astype(int), minlength=3) / ok.sum()
    ref = {"best_constant_accuracy": float(freq.max()),
           "prior_entropy": float(-np.sum(freq[freq > 0] * np.log(freq[freq > 0])))}
    return m, {**classification_metrics(p[ok], y[ok].astype(int)), **ref}, p


@pytest.fixture(scope="module")
def fitted(planted: pd.DataFrame) -> dict[str, tuple[Model, dict[str, float], np.ndarray]]:
    return {name: _fit_score(name, planted) for name in MEMBERS}


@pytest.mark.parametrize("name", MEMBERS)
def test_member_learns_planted_signal_out_of_sample(fitted: dict, name: str) -> None:
    _, m, _ = fitted[name]
    assert m["n"] > 100
    # Well above chance: 10+ points over the best constant guess and a clearly lower log-loss
    # than even the test set's own class frequencies (an oracle prior).
    assert m["accuracy"] > m["best_constant_accuracy"] + 0.10, m
    assert m["log_loss"] < m["prior_entropy"] - 0.08, m


@pytest.mark.parametrize("name", MEMBERS)
def test_member_finds_nothing_in_noise(noise: pd.DataFrame, name: str) -> None:
    _, m, _ = _fit_score(name, noise)
    assert m["accuracy"] < m["best_constant_accuracy"] + 0.05, m
    assert m["log_loss"] > m["prior_entropy"] - 0.02, m


@pytest.mark.parametrize("name", MEMBERS)
def test_save_load_gives_identical_predictions(fitted: dict, planted: pd.DataFrame, name: str,
                                               tmp_path: Path) -> None:
    model, _, _ = fitted[name]
    model.save(tmp_path / name)
    again = load_model(tmp_path / name)
    assert type(again) is type(model)
    assert again.get_params() == model.get_params()
    a = model.predict_proba(planted)
    b = again.predict_proba(planted)
    assert list(a.columns) == list(PROBA_COLUMNS)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    assert a.notna().all(axis=1).sum() > 1000


def test_saved_files_are_native_formats(fitted: dict, tmp_path: Path) -> None:
    for name, expect in {"lstm": "lstm.pt", "rf": "rf.skops", "xgb": "xgb.ubj", "lgbm": "lgbm.txt"}.items():
        fitted[name][0].save(tmp_path / name)
        files = {p.name for p in (tmp_path / name).iterdir()}
        assert {expect, "scaler.npz", "spec.json"} <= files, files
        assert not any(f.endswith((".pkl", ".pickle", ".joblib")) for f in files)


def test_lstm_cpu_training_is_reproducible(planted: pd.DataFrame) -> None:
    sp = split_frame(planted, 7)
    params = {**TINY["lstm"], "max_epochs": 3}
    a = build_model("lstm", features=FEATS, **params).fit(sp.train, TARGET, valid=sp.valid, history=sp.frame)
    b = build_model("lstm", features=FEATS, **params).fit(sp.train, TARGET, valid=sp.valid, history=sp.frame)
    assert a.history_["train_loss"] == b.history_["train_loss"]
    np.testing.assert_array_equal(a.predict_proba(sp.test, history=sp.frame).to_numpy(),
                                  b.predict_proba(sp.test, history=sp.frame).to_numpy())
    c = build_model("lstm", features=FEATS, **{**params, "seed": 7}).fit(sp.train, TARGET, valid=sp.valid,
                                                                         history=sp.frame)
    assert c.history_["train_loss"] != a.history_["train_loss"]


def test_lstm_records_losses_and_stops_early(fitted: dict) -> None:
    model = fitted["lstm"][0]
    h = model.history_
    assert len(h["train_loss"]) == len(h["valid_loss"]) == len(h["lr"])
    assert 1 <= len(h["train_loss"]) <= TINY["lstm"]["max_epochs"]
    assert all(np.isfinite(h["train_loss"]))


def test_lstm_spec_defaults_follow_the_original_architecture() -> None:
    m = LSTMModel()
    assert (m.hidden, m.dropout, m.dense, m.lr, m.weight_decay, m.batch_size, m.max_epochs, m.patience,
            m.lr_patience, m.lr_factor, m.min_lr, m.seq_len) == (
        [128, 64, 32], 0.2, 16, 1e-3, 1e-5, 32, 100, 10, 5, 0.5, 1e-6, 90)


def test_factory_builds_from_config_and_names_unknown_models() -> None:
    assert set(MEMBERS) <= set(available_models())
    m = build_from_config({"name": "xgb", "n_estimators": 12, "max_depth": 2})
    assert m.kind == "xgb" and m.get_params()["n_estimators"] == 12
    with pytest.raises(ModelError, match="unknown model 'svm'"):
        build_model("svm")
    with pytest.raises(ModelError, match="bad parameters for model 'rf'"):
        build_model("rf", no_such_param=1)
    with pytest.raises(ModelError, match="'name'"):
        build_from_config({"n_estimators": 3})


def test_unfitted_model_refuses_to_predict_or_save(planted: pd.DataFrame, tmp_path: Path) -> None:
    m = build_model("rf", features=FEATS)
    with pytest.raises(ModelError, match="not fitted"):
        m.predict_proba(planted)
    with pytest.raises(ModelError, match="unfitted"):
        m.save(tmp_path / "x")
    with pytest.raises(ModelError, match="not a saved model"):
        load_model(tmp_path)


def test_pooled_model_uses_asset_ids_and_tolerates_unseen_symbols(fitted: dict, planted: pd.DataFrame) -> None:
    model = fitted["lgbm"][0]
    assert model.assets == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    other = planted[planted["symbol"] == "BTC/USDT"].assign(symbol="DOGE/USDT")
    p = model.predict_proba(other)
    assert p.notna().all(axis=1).sum() == len(other) - model.min_history + 1


def test_per_asset_model_has_no_asset_inputs(planted: pd.DataFrame) -> None:
    btc = planted[planted["symbol"] == "BTC/USDT"]
    m = RandomForestModel(features=FEATS, pooled=False, **TINY["rf"]).fit(btc, TARGET)
    assert m.assets == []
    assert not any(c.startswith("asset=") for c in m.column_names())
