"""monitoring/: promtool validates and unit-tests the alert rules; the rules and the Grafana dashboard use
only series the API exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[3] / "monitoring"
PROMQL_WORDS = {"on", "by", "and", "or", "unless", "sum", "count", "rate", "increase", "time", "histogram_quantile",
                "le", "without", "group_left", "group_right", "ignoring", "bool", "avg", "max", "min", "d", "m", "h",
                "s", "label_values"}


def _promtool() -> str:
    exe = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if exe is None:
        pytest.skip("promtool not installed (make sysdeps installs Debian's prometheus package)")
    return exe


def test_promtool_check_rules() -> None:
    out = subprocess.run([_promtool(), "check", "rules", "alerts.yml"], cwd=MONITORING, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 9 rules found" in out.stdout


def test_promtool_unit_tests_every_rule() -> None:
    out = subprocess.run([_promtool(), "test", "rules", "tests/alerts_test.yml"], cwd=MONITORING,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    tested = {t["alertname"] for case in yaml.safe_load((MONITORING / "tests" / "alerts_test.yml").read_text())["tests"]
              for t in case["alert_rule_test"]}
    rules = {r["alert"] for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert rules == {"ModelAccuracyLow", "ModelStale", "InferenceLatencyHigh", "DataStale", "DriftHigh",
                     "FlashCrash", "ApiListenerDown"}
    assert tested == rules


def _exported_names() -> set[str]:
    """Every series name /metrics can carry, from the real exposition code."""
    from prometheus_client import CollectorRegistry

    from entasis.api.analytics import HitRate
    from entasis.api.metrics import WorkerGauges, exposition, families, latency_histogram

    t = datetime(2024, 1, 1, tzinfo=UTC)
    snap = {"live": {("A/B", h): HitRate(20, 0.4, 20, 0.4, 0.5) for h in (7, 14, 30)}, "counts": {("A/B", 0): 1},
            "champions": {("A/B", 7): {"trained_at": t, "unproven": False}}, "candles": {"A/B": t},
            "timeframe": "1d", "drift": {"f": 0.1}, "drift_as_of": t,
            "crashes": {("binance", "A/B"): (1, t, 0.2)}}
    reg = CollectorRegistry()
    latency_histogram(reg).labels("GET", "/", "200").observe(0.01)
    WorkerGauges(reg).observe(True, 5)
    text = exposition(families(snap, [7, 14, 30]), reg).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def _names_in(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)      # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)    # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)   # ranges
    expr = re.sub(r"\b(on|by|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    return {w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr) if w not in PROMQL_WORDS}


def test_rules_and_dashboard_use_only_exported_series() -> None:
    exported = _exported_names()
    assert {"model_accuracy_7d", "model_accuracy_14d", "model_accuracy_30d", "baseline_accuracy_7d",
            "predictions_total", "entasis_api_request_duration_seconds_bucket", "model_last_trained_timestamp",
            "data_last_candle_timestamp", "feature_drift_psi", "model_champion_unproven",
            "flash_crash_alerts_total", "flash_crash_last_detected_timestamp", "flash_crash_last_depth",
            "entasis_api_generation_listener_up", "entasis_api_serving_generation"} <= exported
    exprs = [r["expr"] for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(dash["panels"]) >= 10 and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    used = set().union(*(_names_in(e) for e in exprs))
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
