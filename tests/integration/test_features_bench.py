"""Smoke run of bench/features.py at a tiny size, Spark (workers writing to PostgreSQL) included:
the table, the stage rows compared, and the JSON lines."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.spark


def test_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_features", ROOT / "bench" / "features.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--symbols", "2", "--years", "0.3", "--repeat", "1", "--spark-repeat", "1"])
    out = capsys.readouterr().out
    assert "our layer / raw TA-Lib" in out and "array core only" in out and "spark / one process" in out
    # the Spark workers and the one-process run wrote the same stage rows, every row of the input
    assert "stage rows written: one process 5,256, spark 5,256; identical sampled rows: True" in out
    lines = [json.loads(x) for x in out.strip().splitlines()[-2:]]
    assert lines == res and [x["bench"] for x in lines] == ["features_compute_vs_talib", "features_spark_vs_pandas"]
    for x in lines:
        assert {"metric", "reference", "ratio", "target", "met"} <= set(x) and isinstance(x["met"], bool)
        assert x["metric"] > 0 and x["reference"] > 0
        assert x["met"] == (x["ratio"] <= float(x["target"].split()[1].rstrip("x")))
    core = lines[0]  # the array core's time and ratio, beside the target figure
    assert core["array_core_s"] > 0 and core["array_core_ratio"] > 0
    assert core["floor_s"] > 0 and core["floor_ratio"] > 0 and "floor:" in out
