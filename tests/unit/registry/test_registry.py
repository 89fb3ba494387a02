"""The MLflow registry: names, pyfunc from raw rows, aliases, champion history, rollback, retention, S3."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from entasis.config import get_settings, load_settings
from entasis.deploy.airflow_stack import free_port
from entasis.domain import PROBA_COLUMNS
from entasis.models.datasets import Split, split_frame
from entasis.models.ensemble import EnsembleModel
from entasis.models.volatility import VolatilityModel
from entasis.registry import models as reg
from entasis.registry.pyfunc import log_pyfunc
from entasis.registry.tracking import artifact_root, configure, ensure_experiment, tracking_uri

from ..models._synth import FEATS, TARGET, TINY, frame


@pytest.fixture(scope="module")
def split() -> Split:
    return split_frame(frame(1.5, n_days=300), 7)


@pytest.fixture(scope="module")
def ensemble(split: Split) -> EnsembleModel:
    e = EnsembleModel(members=["rf", "lgbm"], features=FEATS,
                      member_params={"rf": {**TINY["rf"], "n_estimators": 20}, "lgbm": TINY["lgbm"]})
    return e.fit(split.train, TARGET, valid=split.valid, history=split.frame)


@pytest.fixture(scope="module")
def mlflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the module (creating one costs seconds); tests use distinct model names."""
    return tmp_path_factory.mktemp("mlflow_home")


@pytest.fixture
def home(mlflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("ENTASIS_HOME", str(mlflow_home))
    monkeypatch.delenv("ENTASIS_MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    configure()
    yield mlflow_home
    get_settings.cache_clear()


def _register(ensemble: EnsembleModel, name: str, n: int = 1, vol: VolatilityModel | None = None) -> list[str]:
    import mlflow

    exp = ensure_experiment()
    out = []
    for _ in range(n):
        with mlflow.start_run(experiment_id=exp):
            info = log_pyfunc(ensemble, spec={"horizon": 7}, vol=vol, registered_model_name=name)
        out.append(str(info.registered_model_version))
    return out


def test_model_names() -> None:
    assert reg.model_name(None, 7) == "entasis-pooled-7d"
    assert reg.model_name("BTC/USDT", 14) == "entasis-BTC-USDT-14d"
    assert reg.model_name("BTC/USDT:USDT", 30) == "entasis-BTC-USDT-USDT-30d"
    assert reg.parse_model_name("entasis-BTC-USDT-14d") == ("BTC-USDT", 14)
    assert reg.parse_model_name("entasis-pooled-7d") == (None, 7)
    with pytest.raises(reg.RegistryError):
        reg.parse_model_name("other-model")
    with pytest.raises(reg.RegistryError):
        reg.model_name(None, 0)


def test_default_store_is_sqlite_under_home(home: Path) -> None:
    assert tracking_uri() == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    assert artifact_root() == (home.resolve() / "mlartifacts").as_uri()
    s = load_settings(mlflow={"tracking_uri": "http://mlflow:5000", "artifact_root": "s3://b/p/"})
    assert tracking_uri(s) == "http://mlflow:5000" and artifact_root(s) == "s3://b/p"


def test_pyfunc_predicts_from_raw_rows(home: Path, ensemble: EnsembleModel, split: Split) -> None:
    vol = VolatilityModel(features=FEATS, n_jobs=1, n_estimators=30).fit(split.train, "y_vol_7d", valid=split.valid)
    name = reg.model_name("PYF/USDT", 7)
    (v,) = _register(ensemble, name, vol=vol)
    reg.set_alias(name, reg.CHAMPION, v)
    model = reg.load_champion("PYF/USDT", 7)
    raw = split.frame.reset_index(drop=True)  # raw features.bars rows: keys, features, labels, all of it
    out = model.predict(raw)
    ref = ensemble.predict(raw)
    assert len(out) == len(raw)
    np.testing.assert_array_equal(out[list(PROBA_COLUMNS)].to_numpy(), ref[list(PROBA_COLUMNS)].to_numpy())
    assert (out["confidence_level"].dropna().isin(["high", "medium", "low"])).all()
    np.testing.assert_allclose(out["vol_forecast"].to_numpy(), vol.predict(raw), equal_nan=True)
    bundle = reg.load_bundle(name)
    assert bundle.ensemble.weights == ensemble.weights and bundle.spec["horizon"] == 7
    assert bundle.spec["features"] == FEATS and bundle.vol is not None
    # Rows without enough history are NaN, never guessed.
    first = out.groupby("symbol").head(ensemble.min_history - 1)
    assert first[list(PROBA_COLUMNS)].isna().all().all()
    # The registered artifact holds no pickle.
    art = Path(model.metadata.get_model_info().model_uri.replace("models:/", ""))
    assert art.name.startswith("m-")
    store = home / "mlartifacts"
    files = [p.name for p in store.rglob("*") if p.is_file()]
    assert "lstm.pt" not in files and not any(f.endswith((".pkl", ".pickle")) for f in files)
    assert "python_model.pkl" not in files and "pyfunc_entry.py" in files


def test_champion_history_and_rollback(home: Path, ensemble: EnsembleModel) -> None:
    name = reg.model_name("RB/USDT", 7)
    v1, v2, v3 = _register(ensemble, name, 3)
    with pytest.raises(reg.RegistryError, match="no @champion"):
        reg.rollback(name)
    reg.set_alias(name, reg.CHAMPION, v1)
    with pytest.raises(reg.RegistryError, match="no earlier champion"):
        reg.rollback(name)
    reg.set_alias(name, reg.CHAMPION, v2)
    reg.set_alias(name, reg.CHAMPION, v2)  # idempotent: no duplicate history entry
    reg.set_alias(name, reg.CHAMPION, v3)
    assert reg.champion_history(name) == [v1, v2, v3]
    assert reg.rollback(name) == (v3, v2)
    assert reg.alias_version(name, reg.CHAMPION) == v2
    assert reg.rollback(name) == (v2, v1)
    assert reg.alias_version(name, reg.CHAMPION) == v1
    assert reg.get_version_by_alias(name, "nonexistent") is None


def test_retention_keeps_newest_five_and_never_the_champion(home: Path, ensemble: EnsembleModel) -> None:
    name = reg.model_name("RET/USDT", 7)
    vs = _register(ensemble, name, 8)
    reg.set_alias(name, reg.CHAMPION, vs[0])
    reg.set_alias(name, reg.CHAMPION, vs[1])  # v1 is now the rollback target
    reg.set_alias(name, reg.CHALLENGER, vs[-1])
    deleted = reg.apply_retention(name)
    left = [str(mv.version) for mv in reg.versions(name)]
    assert left == [*reversed(vs[3:]), vs[1], vs[0]]  # newest 5 + champion + previous champion
    assert sorted(deleted) == sorted(vs[2:3])
    assert reg.apply_retention(name) == []
    # Without a champion, exactly the newest keep_versions survive.
    other = reg.model_name("RET2/USDT", 7)
    vs2 = _register(ensemble, other, 6)
    reg.apply_retention(other)
    assert [str(mv.version) for mv in reg.versions(other)] == list(reversed(vs2[1:]))


def test_version_tags_roundtrip(home: Path, ensemble: EnsembleModel) -> None:
    name = reg.model_name("TAG/USDT", 7)
    (v,) = _register(ensemble, name)
    reg.set_version_tags(name, v, {"beats_baseline": True, "test_accuracy": 0.51, "extra": {"a": 1}})
    tags = reg.get_version_tags(name, v)
    assert tags["beats_baseline"] == "true" and tags["test_accuracy"] == "0.51" and tags["extra"] == '{"a": 1}'


def test_trained_at_is_the_versions_tag_else_its_creation_time(home: Path) -> None:
    from entasis.registry.tracking import client

    c = client()
    name = "entasis-TRAINED-AT-7d"
    c.create_registered_model(name)
    tagged = c.create_model_version(name, source="file:///nonexistent/never-loaded")
    plain = c.create_model_version(name, source="file:///nonexistent/never-loaded")
    reg.set_version_tags(name, tagged.version, {"trained_at": "2023-04-01T06:00:00+00:00"})
    assert reg.version_trained_at(name, tagged.version) == datetime(2023, 4, 1, 6, tzinfo=UTC)
    created = reg.version_trained_at(name, plain.version)
    assert created is not None and int(created.timestamp() * 1000) == plain.creation_timestamp
    # promoting later moves neither
    reg.set_alias(name, reg.CHAMPION, tagged.version)
    assert reg.version_trained_at(name, tagged.version) == datetime(2023, 4, 1, 6, tzinfo=UTC)
    reg.set_version_tags(name, plain.version, {"trained_at": "2023-04-01 06:00"})  # no zone: refused, named
    with pytest.raises(reg.RegistryError, match=rf"{name} v{plain.version}: .*trained_at"):
        reg.version_trained_at(name, plain.version)


def test_cli_models_list_and_rollback(home: Path, ensemble: EnsembleModel) -> None:
    from entasis.cli import app

    name = reg.model_name("CLI/USDT", 7)
    v1, v2 = _register(ensemble, name, 2)
    reg.set_alias(name, reg.CHAMPION, v1)
    reg.set_alias(name, reg.CHAMPION, v2)
    reg.set_version_tags(name, v2, {"test_accuracy": 0.52, "best_baseline_accuracy": 0.5, "beats_baseline": True})
    runner = CliRunner()
    res = runner.invoke(app, ["models", "list", "--name", name])
    assert res.exit_code == 0, res.output
    assert name in res.output and f"@champion=v{v2}" in res.output and "52.0%" in res.output
    res = runner.invoke(app, ["models", "rollback", "--asset", "CLI/USDT", "--horizon", "7"])
    assert res.exit_code == 0, res.output
    assert f"from v{v2} back to v{v1}" in res.output
    assert reg.alias_version(name, reg.CHAMPION) == v1
    res = runner.invoke(app, ["models", "rollback", "entasis-nothing-7d"])
    assert res.exit_code == 1 and "entasis-nothing-7d" in res.output


def test_s3_artifact_root_through_moto_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              ensemble: EnsembleModel, split: Split) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                     "ENTASIS_HOME": str(tmp_path / "h"), "ENTASIS_MLFLOW__ARTIFACT_ROOT": "s3://entasis-art/mlflow",
                     "ENTASIS_MLFLOW__S3_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
        get_settings.cache_clear()
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="entasis-art")
        configure()
        name = reg.model_name("S3/USDT", 7)
        (v,) = _register(ensemble, name)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="entasis-art").get("Contents", [])]
        assert any(k.startswith("mlflow/entasis-train/") and k.endswith("spec.json") for k in keys), keys
        assert not (tmp_path / "h" / "mlartifacts").exists()
        reg.set_alias(name, reg.CHAMPION, v)
        out = reg.load_champion("S3/USDT", 7).predict(split.test.reset_index(drop=True))
        ref = ensemble.predict(split.test.reset_index(drop=True))
        np.testing.assert_array_equal(out[list(PROBA_COLUMNS)].to_numpy(), ref[list(PROBA_COLUMNS)].to_numpy())
    finally:
        server.stop()
        get_settings.cache_clear()
        monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)


def test_load_champion_without_champion_is_a_clear_error(home: Path, ensemble: EnsembleModel) -> None:
    name = reg.model_name("NOCH/USDT", 7)
    _register(ensemble, name)
    with pytest.raises(reg.RegistryError, match="no @champion"):
        reg.load_champion("NOCH/USDT", 7)
    with pytest.raises(reg.RegistryError, match="no registered model"):
        reg.versions("entasis-missing-7d")


def test_pyfunc_input_must_be_a_dataframe(home: Path, ensemble: EnsembleModel, split: Split) -> None:
    name = reg.model_name("TYPE/USDT", 7)
    (v,) = _register(ensemble, name)
    reg.set_alias(name, reg.CHALLENGER, v)
    model = reg.load(name, alias=reg.CHALLENGER)
    assert isinstance(model.predict(split.test.head(5).reset_index(drop=True)), pd.DataFrame)
