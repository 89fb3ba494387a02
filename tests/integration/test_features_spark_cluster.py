"""The features job on a real Spark standalone cluster writes what local mode writes.

The fixture starts a Master and one Worker on 127.0.0.1 from the pyspark distribution
(``spark-class``), the test runs ``spark_jobs/build_features.py`` against it
(``ENTASIS_SPARK_MASTER=spark://127.0.0.1:PORT``), then the entasis_features DAG's task function
(``entasis.jobs.build_features``, the same entry function) in local mode rebuilds everything: not
one row may change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from entasis.config import get_settings
from entasis.deploy.airflow_stack import free_port
from entasis.features import catalog
from entasis.store.db import connect
from entasis.store.market import table_checksum, write_candles, write_funding
from tests.unit.features._data import candles, funding

pytestmark = pytest.mark.spark
ROOT = Path(__file__).resolve().parents[2]


def _cluster_json(ui: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as r:  # noqa: S310  # local UI
        return dict(json.load(r))


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, dict[str, str]]]:
    """(master URL, master UI port, env for drivers) of a Master + one Worker; torn down after."""
    import pyspark

    from entasis.features.spark_job import ensure_java

    ensure_java()
    home = Path(pyspark.__file__).parent
    tmp = tmp_path_factory.mktemp("spark_cluster")
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(tmp),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    port, ui = free_port(), free_port()
    cls = str(home / "bin" / "spark-class")
    procs: list[subprocess.Popen[bytes]] = []
    with open(tmp / "master.log", "wb") as mlog, open(tmp / "worker.log", "wb") as wlog:
        procs.append(subprocess.Popen(  # noqa: S603  # fixed argv, our own interpreter's pyspark
            [cls, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(ui)], env=env, stdout=mlog, stderr=subprocess.STDOUT))
        master = f"spark://127.0.0.1:{port}"
        procs.append(subprocess.Popen(  # noqa: S603
            [cls, "org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--cores", "2",
             "--memory", "2g", "--webui-port", str(free_port()), "--work-dir", str(tmp / "work")],
            env=env, stdout=wlog, stderr=subprocess.STDOUT))
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if _cluster_json(ui).get("aliveworkers", 0) >= 1:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    logs = (tmp / "master.log").read_text()[-2000:] + (tmp / "worker.log").read_text()[-2000:]
                    raise RuntimeError(f"Spark standalone cluster did not come up:\n{logs}")
                time.sleep(1)
            yield master, ui, env
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in reversed(procs):
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()


def _checksum() -> str:
    with connect() as conn:
        return table_checksum(conn, "features.bars", catalog.KEY_COLUMNS)


def test_job_on_a_standalone_cluster_writes_the_rows_local_mode_writes(
    spark_cluster: tuple[str, int, dict[str, str]], db_url: str, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from entasis import jobs

    master, ui, env = spark_cluster
    if not Path(get_settings().spark.jdbc_jar).exists():
        pytest.skip(f"PostgreSQL JDBC jar not at {get_settings().spark.jdbc_jar}")
    perp = candles(shared_data, "BTCUSDT", "1d", exchange="binanceusdm", symbol="BTC/USDT:USDT").iloc[900:]
    perp[["open", "high", "low", "close"]] *= 1.0004
    frames = [candles(shared_data, "BTCUSDT", "1d"), candles(shared_data, "ETHUSDT", "1d"),
              candles(shared_data, "SOLUSDT", "1h", rows=3000), perp]
    with connect() as conn:
        for df in frames:
            write_candles(conn, df, known=set(df["symbol"]))
        write_funding(conn, funding(shared_data), known={"BTC/USDT:USDT"})

    # the spark-submit entry script, as a separate driver process, on the cluster
    run_env = {**env, "ENTASIS_DATABASE_URL": db_url, "ENTASIS_SPARK_MASTER": master}
    p = subprocess.run([sys.executable, str(ROOT / "spark_jobs" / "build_features.py"), "--full"],  # noqa: S603
                       env=run_env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    n = sum(len(f) for f in frames)
    assert summary["engine"] == "spark" and summary["groups"] == 4 and summary["inserted"] == n
    assert summary["cross_updated"] > 2000  # the second pass ran on the cluster too
    apps = _cluster_json(ui)["completedapps"] + _cluster_json(ui)["activeapps"]
    assert any(a["name"] == "entasis-features" for a in apps)  # it really ran there, not in local mode
    on_cluster = _checksum()

    # the DAG task's function, local mode, full rebuild: identical rows, nothing written
    monkeypatch.setenv("ENTASIS_SPARK_MASTER", "local[2]")
    get_settings.cache_clear()
    local = jobs.build_features(full=True)
    assert local["inserted"] == local["updated"] == local["cross_updated"] == 0 and local["unchanged"] == n
    assert _checksum() == on_cluster
    with connect() as conn:
        basis = conn.execute("SELECT count(perp_basis) FROM features.bars WHERE symbol = 'BTC/USDT'").fetchone()
    assert basis is not None and basis[0] > 1000
    assert pd.notna(on_cluster)
