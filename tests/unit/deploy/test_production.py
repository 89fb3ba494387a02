"""No silent fallbacks with ENTASIS_DEPLOYMENT=production: each missing shared server is named, and
nothing local (embedded PostgreSQL, SQLite MLflow, local artifacts) is started instead."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

from entasis.config import ConfigError, get_settings, load_settings
from entasis.deploy.production import ProductionConfigError, problems, require

REPO = Path(__file__).resolve().parents[3]
FULL = {"deployment": "production", "database": {"url": "postgresql://e@db:5432/entasis"},
        "mlflow": {"tracking_uri": "http://mlflow:5000", "artifact_root": "s3://entasis-mlflow/"}}


def _with(**changes: object) -> dict[str, object]:
    out: dict[str, object] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in FULL.items()}
    for path, value in changes.items():
        section, _, key = path.partition("__")
        if key:
            sec = dict(out[section])  # type: ignore[call-overload]
            if value is None:
                sec.pop(key, None)
            else:
                sec[key] = value
            out[section] = sec
        else:
            out[section] = value
    return out


@pytest.mark.parametrize(("changes", "needs", "expect"), [
    ({}, ("database", "mlflow", "artifacts"), []),                               # everything shared: fine
    ({"deployment": "local", "database__url": None, "mlflow__tracking_uri": None,
      "mlflow__artifact_root": None}, ("database", "mlflow", "artifacts"), []),  # local mode never complains
    ({"database__url": None}, ("database",), ["ENTASIS_DATABASE_URL", "entasis_db"]),
    ({"database__url": None}, ("mlflow", "artifacts"), []),                    # only what the task needs
    ({"mlflow__tracking_uri": None}, ("mlflow",), ["ENTASIS_MLFLOW_TRACKING_URI"]),
    ({"mlflow__tracking_uri": "sqlite:////tmp/mlflow.db"}, ("mlflow",), ["worker-local"]),
    ({"mlflow__tracking_uri": "/tmp/mlruns"}, ("mlflow",), ["worker-local"]),
    ({"mlflow__artifact_root": None}, ("artifacts",), ["ENTASIS_MLFLOW__ARTIFACT_ROOT"]),
    ({"mlflow__artifact_root": "file:///tmp/art"}, ("artifacts",), ["worker-local"]),
    ({"mlflow__artifact_root": "/tmp/art"}, ("artifacts",), ["worker-local"]),
    ({"mlflow__artifact_root": "mlflow-artifacts:/entasis"}, ("artifacts",), []),  # proxied by the MLflow server
    ({"mlflow__artifact_root": "gs://bucket/p"}, ("artifacts",), []),
])
def test_problems_boundary_table(changes: dict[str, object], needs: tuple[str, ...], expect: list[str]) -> None:
    found = problems(needs, load_settings(**_with(**changes)))
    assert len(found) == len(expect) if not expect else len(found) == 1
    for word in expect:
        assert word in found[0]


def test_every_missing_piece_is_named_at_once() -> None:
    s = load_settings(deployment="production")
    with pytest.raises(ProductionConfigError) as err:
        require(settings=s)
    msg = str(err.value)
    assert isinstance(err.value, ConfigError)
    for word in ("ENTASIS_DATABASE_URL", "entasis_db", "ENTASIS_MLFLOW_TRACKING_URI", "ENTASIS_MLFLOW__ARTIFACT_ROOT"):
        assert word in msg
    with pytest.raises(ValueError, match="unknown production requirement"):
        problems(("spark",), s)


def test_deployment_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTASIS_DEPLOYMENT", "prod")
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match="deployment"):
        get_settings()
    monkeypatch.setenv("ENTASIS_DEPLOYMENT", "production")
    get_settings.cache_clear()
    assert get_settings().deployment == "production"


def test_no_embedded_database_and_no_local_mlflow_in_production(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    from entasis.registry.tracking import artifact_root, tracking_uri
    from entasis.store.db import database_url

    home = tmp_path / "worker_home"
    monkeypatch.setenv("ENTASIS_HOME", str(home))
    monkeypatch.setenv("ENTASIS_DEPLOYMENT", "production")
    monkeypatch.delenv("ENTASIS_DATABASE_URL", raising=False)
    monkeypatch.delenv("ENTASIS_MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    with pytest.raises(ProductionConfigError, match="ENTASIS_DATABASE_URL"):
        database_url()
    with pytest.raises(ProductionConfigError, match="ENTASIS_MLFLOW_TRACKING_URI"):
        tracking_uri()
    with pytest.raises(ProductionConfigError, match="ENTASIS_MLFLOW__ARTIFACT_ROOT"):
        artifact_root()
    assert not home.exists()  # no embedded server, no SQLite store, no artifact folder was created
    monkeypatch.setenv("ENTASIS_DEPLOYMENT", "local")
    get_settings.cache_clear()
    assert tracking_uri().startswith("sqlite:///")  # the offline default is untouched


def test_a_task_fails_at_once_naming_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Under Airflow (the plugin importable) the error is AirflowFailException: no retries for misconfiguration."""
    from airflow.sdk.exceptions import AirflowFailException

    from entasis import jobs

    monkeypatch.syspath_prepend(str(REPO / "plugins"))
    monkeypatch.setenv("ENTASIS_DEPLOYMENT", "production")
    monkeypatch.delenv("ENTASIS_DATABASE_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_ENTASIS_DB", raising=False)
    get_settings.cache_clear()
    until = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(AirflowFailException, match="no database: set ENTASIS_DATABASE_URL or the Airflow connection"):
        jobs.ingest_candles(until=until)
    with pytest.raises(AirflowFailException, match="ENTASIS_MLFLOW_TRACKING_URI"):
        jobs.publish(as_of=until)
    assert not (tmp_path / "home").exists()
    # the Airflow connection satisfies the database requirement (and becomes the store URL)
    monkeypatch.setenv("AIRFLOW_CONN_ENTASIS_DB", "postgresql://entasis:pw@db.internal:5432/entasis")
    jobs._use_airflow_store()
    assert get_settings().database_url == "postgresql://entasis:pw@db.internal:5432/entasis"
    monkeypatch.delenv("ENTASIS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    assert "entasis_airflow" in sys.modules
