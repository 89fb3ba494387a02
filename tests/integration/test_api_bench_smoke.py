"""bench/api.py at smoke size against a seeded store: it runs all four servers (the product's default number of
workers, each waited for through /healthz) and ends with its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from entasis.config import Settings
from tests.unit.api import seed

REPO = Path(__file__).resolve().parents[2]


def test_api_bench_smoke(pg_server: str, _template: str) -> None:
    name = f"apibench_{uuid.uuid4().hex[:8]}"
    url = seed.seeded_clone(pg_server, _template, name)
    try:
        out = subprocess.run([sys.executable, str(REPO / "bench" / "api.py"), "--database-url", url, "--smoke"],
                             cwd=REPO, capture_output=True, text=True,
                             timeout=300, check=False)
    finally:
        seed.drop(pg_server, name)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["bench"] == "api" and isinstance(line["met"], bool)
    assert line["workers"] == Settings().api.workers  # the product default unless --workers says otherwise
    assert f"{line['workers']} uvicorn worker(s)" in out.stdout
    assert set(line) >= {"metric", "reference", "ratio", "target", "cached", "uncached", "reference_run"}
    for run in ("cached", "cached_per_request_generation", "uncached", "reference_run"):
        assert line[run]["requests"] == 60 and line[run]["errors"] == 0
        assert 0 < line[run]["p50_ms"] <= line[run]["p99_ms"] <= line[run]["max_ms"]
        assert line[run]["server_cpu_us"] >= 0
    assert line["metric"] == line["cached"]["p99_ms"]
    assert line["met"] == (line["cached"]["p99_ms"] <= 20 and line["uncached"]["p99_ms"] <= 100)
    assert abs(line["ratio"] - line["metric"] / line["reference"]) < 0.01 * line["ratio"] + 1e-3
    assert "reference" in out.stdout and "uncached" in out.stdout   # the printed table
