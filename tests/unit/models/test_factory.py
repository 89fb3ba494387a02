"""The factory sits above base and the model modules: no import cycle, clear errors by name."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import entasis.models.base as base
from entasis.models.base import Model, ModelError
from entasis.models.ensemble import MEMBER_CLASSES, member_class
from entasis.models.factory import MODEL_CLASSES, available_models, build_model, load_model, model_class
from entasis.models.trees import RandomForestModel


def _entasis_imports(path: Path) -> set[str]:
    """Every entasis module a file imports, at top level or inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("entasis"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("entasis"))
    return out


def test_base_imports_none_of_its_subclasses_or_the_factory() -> None:
    imported = _entasis_imports(Path(base.__file__))
    for mod in ("trees", "lstm", "ensemble", "factory"):
        assert f"entasis.models.{mod}" not in imported


def test_model_modules_do_not_import_the_factory() -> None:
    root = Path(base.__file__).parent
    for mod in ("trees", "lstm", "ensemble", "datasets", "stacking", "weights"):
        assert "entasis.models.factory" not in _entasis_imports(root / f"{mod}.py"), mod


def test_importing_base_loads_no_model_module_and_the_factory_no_heavy_package() -> None:
    code = ("import sys, entasis.models.base; "
            "assert not {'entasis.models.trees','entasis.models.lstm','entasis.models.ensemble'} & set(sys.modules); "
            "import entasis.models.factory; "
            "heavy = {'torch','xgboost','lightgbm'} & set(sys.modules); assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_every_kind_is_built_by_its_own_name() -> None:
    assert available_models() == ["ensemble", "lgbm", "lstm", "rf", "xgb"]
    for name in available_models():
        assert build_model(name).kind == name
        assert model_class(name) is MODEL_CLASSES[name]
    assert set(MEMBER_CLASSES) == set(MODEL_CLASSES) - {"ensemble"}
    assert all(member_class(k) is MODEL_CLASSES[k] for k in MEMBER_CLASSES)


def test_unknown_names_and_bad_params_are_named() -> None:
    with pytest.raises(ModelError, match="unknown model 'svm'.*ensemble, lgbm, lstm, rf, xgb"):
        build_model("svm")
    with pytest.raises(ModelError, match="unknown ensemble member 'ensemble'"):
        member_class("ensemble")
    with pytest.raises(ModelError, match="bad parameters for member 'rf'"):
        build_model("ensemble", members=("rf",), member_params={"rf": {"nope": 1}}).min_history  # noqa: B018


def test_load_errors_name_the_path_and_kind(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is not a saved model"):
        load_model(tmp_path)
    (tmp_path / base.SPEC_FILE).write_text(json.dumps({"kind": "svm", "params": {}}))
    with pytest.raises(ModelError, match=f"{tmp_path}.*unknown model 'svm'"):
        load_model(tmp_path)
    (tmp_path / base.SPEC_FILE).write_text(json.dumps({"params": {}}))
    with pytest.raises(ModelError, match="no model kind"):
        load_model(tmp_path)
    (tmp_path / base.SPEC_FILE).write_text(json.dumps({"kind": "xgb", "params": {}}))
    with pytest.raises(ModelError, match="holds a 'xgb' model, not 'rf'"):
        RandomForestModel.load(tmp_path)
    with pytest.raises(ModelError, match="concrete class"):
        Model.load(tmp_path)


@pytest.mark.parametrize("name", ["lstm", "rf", "xgb", "lgbm"])
def test_fitted_models_survive_pickling_with_identical_forecasts(name: str) -> None:
    """The walk-forward's worker processes send fitted members back by pickle (the LSTM's network class is
    built inside a function, so it travels as its state dict)."""
    import pickle

    from entasis.models.datasets import split_frame

    from ._synth import FEATS, TARGET, TINY, frame

    df = frame(0.6, n_days=200)
    sp = split_frame(df, 7)
    m = build_model(name, features=FEATS, **TINY[name]).fit(sp.train, TARGET, valid=sp.valid, history=sp.frame)
    again = pickle.loads(pickle.dumps(m))
    a = m.predict_proba(sp.test, history=sp.frame).to_numpy()
    b = again.predict_proba(sp.test, history=sp.frame).to_numpy()
    assert np.isfinite(a).all(axis=1).sum() > 50
    np.testing.assert_array_equal(a, b)
