"""docker/ uses exactly the settings the real-server tests use (the images are not built here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from entasis.deploy.airflow_stack import AirflowStack
from entasis.deploy.mlflow_server import server_command

DOCKER = Path(__file__).resolve().parents[3] / "docker"
REPO = DOCKER.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DOCKER / "docker-compose.yml").read_text()))


def test_workers_run_in_production_mode_with_every_shared_server(compose: dict[str, Any]) -> None:
    env = compose["x-entasis-env"]
    assert env["ENTASIS_DEPLOYMENT"] == "production"
    for key in ("ENTASIS_DATABASE_URL", "ENTASIS_MLFLOW_TRACKING_URI", "ENTASIS_MLFLOW__ARTIFACT_ROOT",
                "ENTASIS_MLFLOW__S3_ENDPOINT_URL", "ENTASIS_SPARK_MASTER", "AIRFLOW_CONN_ENTASIS_DB"):
        assert env.get(key), key
    assert env["ENTASIS_MLFLOW__ARTIFACT_ROOT"].startswith("s3://")
    assert env["ENTASIS_SPARK_MASTER"].startswith("spark://")
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "spark-master", "spark-worker"):
        assert compose["services"][name]["environment"] is env, name


def test_airflow_settings_match_the_tested_stack(compose: dict[str, Any], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env = compose["x-entasis-env"]
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://u@h:5/airflow")
    tested = AirflowStack(home=tmp_path, store_url="postgresql://u@h:5/entasis").env()
    same = ["AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "AIRFLOW__API__WORKERS", "AIRFLOW__CORE__PARALLELISM"]
    for key in same:
        assert str(env[key]) == tested[key], key
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"):
        assert env.get(key) and tested.get(key), key
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("/airflow")


def test_mlflow_server_command_matches_the_tested_one(compose: dict[str, Any]) -> None:
    cmd = compose["services"]["mlflow"]["command"].split()
    tested = server_command(backend_store_uri="postgresql+psycopg2://x/mlflow", artifacts_destination="s3://b/")
    flags = {a for a in tested if a.startswith("--")} - {"--host", "--port"}
    assert flags <= set(cmd), flags - set(cmd)
    assert cmd[cmd.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://")
    assert cmd[cmd.index("--artifacts-destination") + 1] == compose["x-entasis-env"]["ENTASIS_MLFLOW__ARTIFACT_ROOT"]
    assert compose["services"]["mlflow"]["image"] == compose["x-airflow"]["image"]  # has psycopg2 and boto3


def test_spark_image_carries_entasis_and_the_drivers_pyspark(compose: dict[str, Any]) -> None:
    req = (REPO / "requirements.txt").read_text()
    pin = re.search(r"^pyspark==(\S+)$", req, re.M)
    assert pin is not None
    docker = (DOCKER / "Dockerfile").read_text()
    assert f"--force-reinstall --no-deps pyspark=={pin.group(1)}" in docker
    assert "FROM airflow AS spark" in docker  # same Python packages and entasis as the Airflow workers
    assert "ARG ENTASIS_BUILD_ID" in docker and "ENV ENTASIS_BUILD_ID=${ENTASIS_BUILD_ID}" in docker
    assert "ENTASIS_DEPLOYMENT=production" in docker
    for name in ("spark-master", "spark-worker"):
        svc = compose["services"][name]
        assert svc["build"]["target"] == "spark" and svc["build"]["dockerfile"] == "docker/Dockerfile"
        assert svc["command"][0] == "entasis-spark-class"
    assert compose["x-airflow"]["build"]["target"] == "airflow"
    assert "not built" in (DOCKER / "README.md").read_text().lower()
