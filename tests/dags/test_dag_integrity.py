"""Every DAG file imports cleanly, touches no connection or database at parse time, stays light,
and carries tags, retries, docs and a static UTC start date."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
HEAVY = ("torch", "pyspark", "ccxt", "mlflow", "xgboost", "lightgbm", "sklearn", "talib")


@pytest.fixture(scope="module")
def dagbag() -> object:
    """Parse dags/ with every way of reaching a connection or database made to fail loudly."""
    import psycopg
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.connection import Connection

    touched: list[str] = []

    def no_conn(*args: object, **kwargs: object) -> None:
        touched.append(f"connection lookup {args}")
        raise AssertionError("a DAG read a connection at parse time")

    def no_db(*args: object, **kwargs: object) -> None:
        touched.append("psycopg.connect")
        raise AssertionError("a DAG opened a database connection at parse time")

    mp = pytest.MonkeyPatch()
    mp.setattr(Connection, "get", classmethod(lambda cls, *a, **k: no_conn(*a, **k)))
    mp.setattr(psycopg, "connect", no_db)
    mp.setenv("ENTASIS_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    try:
        bag = DagBag(dag_folder=str(DAGS_DIR), safe_mode=False)
    finally:
        mp.undo()
    bag.touched = touched  # type: ignore[attr-defined]
    return bag


def test_dags_folder_exists() -> None:
    assert DAGS_DIR.is_dir()


def test_no_import_errors_and_nothing_touched(dagbag: object) -> None:
    assert dagbag.import_errors == {}  # type: ignore[attr-defined]
    assert dagbag.touched == []  # type: ignore[attr-defined]
    if DAG_FILES:
        assert len(dagbag.dags) >= len(DAG_FILES)  # type: ignore[attr-defined]


def test_every_dag_is_well_formed(dagbag: object) -> None:
    for dag_id, dag in dagbag.dags.items():  # type: ignore[attr-defined]
        assert dag.tags, f"{dag_id} has no tags"
        retries = dag.default_args.get("retries")
        assert retries is not None and 2 <= retries <= 4, f"{dag_id}: default_args retries must be 2-4"
        assert dag.doc_md and len(dag.doc_md.strip()) > 40, f"{dag_id} lacks doc_md"
        assert dag.start_date is not None, f"{dag_id} lacks start_date"
        assert dag.start_date.utcoffset() == dt.timedelta(0), f"{dag_id}: start_date must be UTC"
        assert dag.max_active_runs is not None and dag.max_active_runs <= 4, f"{dag_id}: bound max_active_runs"
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} has fewer than 2 retries"


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_parse_imports_no_heavy_libraries(path: Path) -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"print('HEAVY=' + ','.join(sorted(x for x in {HEAVY!r} if x in sys.modules)))\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'plugins'}:{REPO}")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    heavy = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert heavy, out.stdout[-2000:]
    assert heavy[-1] == "HEAVY=", f"{path.name} imports {heavy[-1][6:]} at parse time"


def test_every_task_and_run_has_a_timeout(dagbag: object) -> None:
    for dag_id, dag in dagbag.dags.items():  # type: ignore[attr-defined]
        assert dag.dagrun_timeout is not None and dag.dagrun_timeout > dt.timedelta(0), f"{dag_id}: no dagrun_timeout"
        for task in dag.tasks:
            t = task.execution_timeout
            assert t is not None and t > dt.timedelta(0), f"{dag_id}.{task.task_id} has no execution_timeout"
            assert t <= dag.dagrun_timeout, f"{dag_id}.{task.task_id}: execution_timeout exceeds the dagrun_timeout"


def _outlet_uris(task: object) -> set[str]:
    return {getattr(o, "uri", "") for o in getattr(task, "outlets", [])}


def test_train_is_mapped_per_horizon_and_champion_is_announced_by_one_gate(dagbag: object) -> None:
    dag = dagbag.dags["entasis_train"]  # type: ignore[attr-defined]
    tasks = {t.task_id: t for t in dag.tasks}
    for tid in ("train", "backtest", "promote"):
        assert tasks[tid].is_mapped, f"entasis_train.{tid} must be mapped per horizon"
    owners = [tid for tid, t in tasks.items() if "entasis://ml/champion" in _outlet_uris(t)]
    assert owners == ["announce_champion"]
    assert {u.task_id for u in tasks["announce_champion"].upstream_list} == {"promote"}


def test_candles_asset_is_emitted_only_by_its_gate(dagbag: object) -> None:
    dag = dagbag.dags["entasis_ingest"]  # type: ignore[attr-defined]
    owners = [t.task_id for t in dag.tasks if "entasis://market/candles" in _outlet_uris(t)]
    assert owners == ["announce_candles"]


def test_monitor_triggers_retrain_from_its_own_interval(dagbag: object) -> None:
    op = dagbag.dags["entasis_monitor"].get_task("trigger_retrain")  # type: ignore[attr-defined]
    assert op.logical_date == "{{ data_interval_end.isoformat() }}"
    assert op.conf["until"] == "{{ data_interval_end.isoformat() }}"
    assert "run_id" in op.trigger_run_id and op.skip_when_already_exists
