"""A shared MLflow server as production runs it: ``mlflow server`` with a PostgreSQL backend store and
S3 artifacts (a moto S3 server here, MinIO in docker/). Training in one process and publishing in
another, both with ENTASIS_DEPLOYMENT=production, see the same @champion and the same predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from entasis.deploy.airflow_stack import free_port
from entasis.deploy.mlflow_server import MlflowServer

REPO = Path(__file__).resolve().parents[2]
BUCKET = "entasis-mlflow"

TRAIN = r"""
import json, sys
from entasis.models.synthetic import synthetic_bars
from entasis.models.train import train_and_register
from entasis.registry import models as reg
frame = synthetic_bars(n_days=360, signal=1.0, n_noise=2, seed=5, planted="label", symbols=("BTC/USDT", "ETH/USDT"))
(r,) = train_and_register(frame, horizons=[7], models=["lgbm"],
                          member_params={"lgbm": {"n_estimators": 30, "n_jobs": 1}}, vol=False)
reg.set_alias(r.model_name, reg.CHAMPION, r.version)
bundle = reg.load_bundle(r.model_name, version=r.version)
p = bundle.ensemble.predict_proba(frame.tail(60).reset_index(drop=True), history=frame)
print("RESULT=" + json.dumps({"name": r.model_name, "version": r.version, "run_id": r.run_id,
                              "proba": p.round(12).fillna(-1).to_numpy().tolist()}))
"""

PUBLISH = r"""
import json
from entasis.models.synthetic import synthetic_bars
from entasis.registry import models as reg
from entasis.registry.tracking import tracking_uri, artifact_root
frame = synthetic_bars(n_days=360, signal=1.0, n_noise=2, seed=5, planted="label", symbols=("BTC/USDT", "ETH/USDT"))
name = reg.model_name(None, 7)
v = reg.alias_version(name, reg.CHAMPION)
bundle = reg.load_bundle(name)  # @champion
p = bundle.ensemble.predict_proba(frame.tail(60).reset_index(drop=True), history=frame)
mv = reg.get_version_by_alias(name, reg.CHAMPION)
print("RESULT=" + json.dumps({"version": v, "source": mv.source, "tracking": tracking_uri(),
                              "root": artifact_root(), "tags": reg.get_version_tags(name, v),
                              "proba": p.round(12).fillna(-1).to_numpy().tolist()}))
"""


@pytest.fixture
def server(pg_server: str, db_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    from moto.server import ThreadedMotoServer

    s3_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    moto.start()
    db = f"mlflow_{uuid.uuid4().hex[:8]}"
    try:
        yield from _serve(moto, s3_port, db, pg_server, db_url, tmp_path)
    finally:
        moto.stop()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _serve(moto: Any, s3_port: int, db: str, pg_server: str, db_url: str, tmp_path: Path
           ) -> Iterator[dict[str, Any]]:
    import boto3
    from psycopg.conninfo import make_conninfo

    from entasis.deploy.airflow_stack import sqlalchemy_url

    endpoint = f"http://127.0.0.1:{s3_port}"
    creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in creds.items()
                                                     if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    backend = sqlalchemy_url(make_conninfo(pg_server, dbname=db))
    mlf = MlflowServer(backend_store_uri=backend, artifacts_destination=f"s3://{BUCKET}/", port=free_port(),
                       log_path=tmp_path / "mlflow.log", env={**creds, "MLFLOW_S3_ENDPOINT_URL": endpoint})
    try:
        mlf.start(timeout=180)
        # exactly the worker settings docker/docker-compose.yml gives every Airflow component
        env = {**os.environ, **creds, "ENTASIS_DEPLOYMENT": "production", "ENTASIS_DATABASE_URL": db_url,
               "ENTASIS_MLFLOW_TRACKING_URI": mlf.url, "ENTASIS_MLFLOW__ARTIFACT_ROOT": f"s3://{BUCKET}/",
               "ENTASIS_MLFLOW__S3_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint,
               "ENTASIS_HOME": str(tmp_path / "worker_home"), "ENTASIS_BUILD_ID": "build-1234abcd"}
        yield {"server": mlf, "env": env, "s3": s3, "backend_db": db, "pg": pg_server, "home": tmp_path / "worker_home"}
    finally:
        mlf.stop()


def _run(code: str, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                         cwd=str(REPO))
    assert out.returncode == 0, out.stderr[-4000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT=")]
    assert line, out.stdout[-2000:] + out.stderr[-2000:]
    return dict(json.loads(line[-1][len("RESULT="):]))


def test_train_and_publish_processes_share_the_champion(server: dict[str, Any]) -> None:
    trained = _run(TRAIN, server["env"])
    published = _run(PUBLISH, server["env"])
    # the second process found the first one's @champion through the server, and the same model in S3
    assert published["version"] == trained["version"]
    assert published["tracking"] == server["server"].url
    assert published["root"] == f"s3://{BUCKET}"
    assert published["proba"] == trained["proba"]
    assert any(x != -1 for row in published["proba"] for x in row)
    # lineage: the build id baked into images and the package version
    assert published["tags"]["code_version"] == "build-1234abcd"
    keys = [o["Key"] for o in server["s3"].list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(k.startswith("entasis-train/") and k.endswith("spec.json") for k in keys), keys[:20]
    # the registry lives in PostgreSQL: the version and the alias are rows in the backend store
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(make_conninfo(server["pg"], dbname=server["backend_db"])) as conn:
        versions = conn.execute("SELECT name, version FROM model_versions").fetchall()
        alias = conn.execute("SELECT name, alias, version FROM registered_model_aliases "
                             "WHERE alias = 'champion'").fetchall()
        run_tags = dict(conn.execute("SELECT key, value FROM tags WHERE run_uuid = %s",
                                     (trained["run_id"],)).fetchall())
    assert (trained["name"], int(trained["version"])) in [(n, int(v)) for n, v in versions]
    assert [(n, int(v)) for n, _, v in alias] == [(trained["name"], int(trained["version"]))]
    assert run_tags["entasis.code_version"] == "build-1234abcd"
    assert run_tags["entasis.package_version"].startswith("entasis==")
    # nothing fell back to local state on the workers
    assert not (server["home"] / "mlflow.db").exists() and not (server["home"] / "mlartifacts").exists()
    assert not (server["home"] / "pgdata").exists()
