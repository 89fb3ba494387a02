"""Promotion and rollback against a real MLflow registry (SQLite under ENTASIS_HOME) and real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from entasis.backtest.promotion import (
    Scores,
    decide,
    evaluate_and_promote,
    recorded_decisions,
)
from entasis.monitor.rollback import check_live_accuracy_and_rollback
from tests.unit.backtest.synth import make_market

NAME = "entasis-pooled-7d"
NOISE = ["noise_0", "noise_1"]
SIGNAL = ["sig", "sig_known", "past_ret"]
BASE = {"majority": Scores(0.40, 1.05), "persistence": Scores(0.42, 1.07)}


# -- the rule itself -------------------------------------------------------------------------------
def test_rule_first_model_is_promoted_unproven() -> None:
    action, promoted, unproven, reason, facts = decide(Scores(0.41, 1.06), None, BASE)
    assert (action, promoted, unproven) == ("promote", True, True)
    assert "UNPROVEN" in reason and facts["best_baseline"] == "majority"     # the lowest log-loss
    assert facts["best_accuracy_baseline"] == "persistence"
    # a tie with the best baseline's log-loss does not beat it
    assert decide(Scores(0.50, 1.05), None, BASE)[:3] == ("promote", True, True)
    # a first model that does beat the baselines carries no mark
    assert decide(Scores(0.45, 1.00), None, BASE)[:3] == ("promote", True, False)


def test_rule_keeps_a_worse_challenger_and_promotes_a_better_one() -> None:
    champ = Scores(0.44, 1.00)
    a, p, _, reason, _ = decide(Scores(0.46, 1.02), champ, BASE, margin=0.01)
    assert (a, p) == ("keep", False) and "worse than the champion" in reason
    # within the margin and beating both baselines: promoted, mark cleared
    assert decide(Scores(0.46, 1.005), champ, BASE, margin=0.01)[:3] == ("promote", True, False)
    # better than the champion but not better than the baselines' log-loss: kept
    a, p, _, reason, _ = decide(Scores(0.46, 1.06), Scores(0.40, 1.10), BASE)
    assert (a, p) == ("keep", False) and "log-loss" in reason and "baseline" in reason
    # log-loss decides (the one rule of entasis.backtest.evaluation): lower accuracy does not veto it
    a, p, _, reason, _ = decide(Scores(0.41, 1.00), Scores(0.40, 1.10), BASE)
    assert (a, p) == ("promote", True) and "log-loss" in reason


# -- the registry round trip -----------------------------------------------------------------------
def _register(frame: pd.DataFrame, features: list[str], rf: dict[str, Any]) -> str:
    """Fit a one-member ensemble and register it as the next @challenger of the pooled 7-day model."""
    import mlflow

    from entasis.models.ensemble import EnsembleModel
    from entasis.registry import models as reg
    from entasis.registry.pyfunc import log_pyfunc
    from entasis.registry.tracking import ensure_experiment

    # the fixed-weight, uncalibrated form: a noise model stays worse than the baselines (a stacked one
    # would fall back to the base rates and could tie them by chance)
    ens = EnsembleModel(members=["rf"], weights="default", calibrate=False, features=features,
                        member_params={"rf": {"n_jobs": 1, "lags": [1], "roll": [3], **rf}})
    ens.fit(frame[frame["ts"] < "2020-08-01"], "y_cls_7d")
    with mlflow.start_run(experiment_id=ensure_experiment()):
        info = log_pyfunc(ens, spec={"horizon": 7, "asset": "pooled"}, registered_model_name=NAME)
    v = str(info.registered_model_version)
    reg.set_alias(NAME, reg.CHALLENGER, v)
    return v


def _check_mlflow_logging(frame: pd.DataFrame, prices: pd.DataFrame) -> None:
    """A walk-forward inside an active MLflow run logs its pooled metrics and the report there."""
    import mlflow

    from entasis.backtest import run_walk_forward
    from entasis.registry.tracking import client, ensure_experiment
    from tests.unit.backtest.synth import tiny

    with mlflow.start_run(experiment_id=ensure_experiment()) as run:
        res = run_walk_forward(horizon=7, start="2020-09-01", end="2020-09-30", frame=frame, prices=prices,
                               models=[tiny("lgbm")], record=False, refit_days=30, n_boot=100, min_train_rows=100)
    c = client()
    got = c.get_run(run.info.run_id)
    assert got.data.metrics["bt7d_lgbm_accuracy"] == pytest.approx(res.metrics["lgbm"]["pooled"]["accuracy"])
    assert got.data.tags["backtest_7d_run_id"] == res.run_id
    files = {f.path.rsplit("/", 1)[-1] for f in c.list_artifacts(run.info.run_id, f"backtest/{res.run_id}")}
    assert {"report.html", "equity.png", "confusion.png"} <= files


def test_promotion_lifecycle_and_rollback(db_url: str) -> None:
    from entasis.registry import models as reg
    from entasis.store.db import connect

    frame, prices = make_market(strength=2.0, n_days=330, seed=5)
    opts: dict[str, Any] = {"frame": frame, "prices": prices, "window_days": 60, "refit_days": 30,
                            "min_train_rows": 100, "n_boot": 200, "leak_threshold": 0.6}
    # the full-bootstrap forest (max_samples=None): with RandomForestModel's default quarter draws the
    # 15-tree noise model averages so close to the base rates that it can edge past them on log-loss
    small = {"n_estimators": 15, "max_depth": 4, "min_samples_leaf": 20, "max_samples": None}
    _check_mlflow_logging(frame, prices)  # shares this test's MLflow store (set up once: it is slow)

    # 1. first model (noise features only): champion, marked unproven
    v1 = _register(frame, NOISE, small)
    d1 = evaluate_and_promote(None, 7, **opts)
    assert d1.promoted and d1.unproven is True and d1.action == "promote"
    assert str(reg.get_version_by_alias(NAME, reg.CHAMPION).version) == v1  # type: ignore[union-attr]
    tags1 = reg.get_version_tags(NAME, v1)
    assert tags1["unproven"] == "true" and tags1["promotion_decision"] == "promote"
    assert tags1["wf_beats_baseline"] == "false" and "wf_accuracy_edge_ci" in tags1
    assert tags1["wf_best_baseline"].startswith("baseline:")

    # 2. an overfit challenger on the same noise: much worse log-loss, the champion is kept
    v2 = _register(frame, NOISE, {"n_estimators": 2, "max_depth": None, "min_samples_leaf": 1})
    d2 = evaluate_and_promote(None, 7, **opts)
    assert not d2.promoted and d2.action == "keep" and "worse than the champion" in d2.reason
    assert d2.challenger is not None and d2.champion is not None
    assert d2.challenger.log_loss > d2.champion.log_loss + 0.01
    assert str(reg.get_version_by_alias(NAME, reg.CHAMPION).version) == v1  # type: ignore[union-attr]
    assert reg.get_version_tags(NAME, v2)["promotion_decision"] == "keep"

    # 3. a challenger that uses the real signal beats champion and baselines: promoted, mark cleared
    v3 = _register(frame, SIGNAL, small)
    d3 = evaluate_and_promote(None, 7, **opts)
    assert d3.promoted and d3.unproven is False and d3.beats_baseline
    assert d3.champion_version == v1 and d3.new_champion_version == v3
    assert str(reg.get_version_by_alias(NAME, reg.CHAMPION).version) == v3  # type: ignore[union-attr]
    assert reg.get_version_tags(NAME, v3)["unproven"] == "false"

    rows = recorded_decisions(NAME)
    assert [r["action"] for r in rows] == ["promote", "keep", "promote"]
    assert [r["challenger_version"] for r in rows] == [v1, v2, v3]
    assert rows[0]["unproven"] is True and rows[2]["unproven"] is False
    assert all(r["reason"] and r["backtest_run_id"] for r in rows)
    with connect() as conn:
        champ = conn.execute("SELECT version, unproven FROM ml.champions WHERE asset = 'pooled' AND horizon = 7"
                             ).fetchone()
        n_runs = conn.execute("SELECT count(*) FROM ml.backtest_runs").fetchone()
    assert champ == (v3, False)
    assert n_runs is not None and n_runs[0] >= 2

    # 4. live accuracy of v3 collapses for longer than the check window: roll back to v1
    _live(f"{NAME}/{v3}", n_days=20, hit_rate=0.2)
    kw: dict[str, Any] = {"threshold": 0.4, "days": 5, "window_days": 10, "min_predictions": 5}
    d4 = check_live_accuracy_and_rollback(None, 7, **kw)
    assert d4.action == "rollback" and d4.new_champion_version == v1 and d4.champion_version == v3
    assert d4.live_accuracy is not None and d4.live_accuracy < 0.4
    assert str(reg.get_version_by_alias(NAME, reg.CHAMPION).version) == v1  # type: ignore[union-attr]
    # 5. v1 has no live record yet: nothing to judge, no rollback
    d5 = check_live_accuracy_and_rollback(None, 7, **kw)
    assert d5.action == "no_rollback" and "not enough" in d5.reason
    assert [r["action"] for r in recorded_decisions(NAME)][-2:] == ["rollback", "no_rollback"]


def _live(model_version: str, *, n_days: int, hit_rate: float) -> None:
    """Reconciled ml.predictions rows (2 assets a day) with the given share of correct ones."""
    from entasis.store.db import connect
    from entasis.store.upsert import upsert_frame

    rng = np.random.default_rng(0)
    t0 = datetime(2021, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n_days):
        for asset in ("AAA/USDT", "BBB/USDT"):
            ok = bool(rng.random() < hit_rate)
            rows.append({"asset": asset, "horizon": 7, "as_of": t0 + timedelta(days=i), "model_version": model_version,
                         "predicted_class": 2, "p_bearish": 0.2, "p_neutral": 0.3, "p_bullish": 0.5,
                         "confidence": 50.0, "confidence_level": "medium", "target_date": t0 + timedelta(days=i + 7),
                         "published_at": t0 + timedelta(days=i), "actual_class": 2 if ok else 0,
                         "realized_return": 0.05 if ok else -0.05, "correct": ok})
    with connect() as conn:
        upsert_frame(conn, "ml.predictions", pd.DataFrame(rows), ["asset", "horizon", "as_of", "model_version"])
