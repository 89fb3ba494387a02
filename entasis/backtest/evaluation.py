"""The one evaluation module: what "beats the baseline" means everywhere.

Training (``entasis.models.train``), the walk-forward (``entasis.backtest.walkforward``), promotion
(``entasis.backtest.promotion``), the monitor and ``ml.model_status`` all score with these pieces and
nothing else:

* baselines: :class:`~entasis.backtest.baselines.FoldBaselines` and
  :func:`~entasis.backtest.baselines.rule_signals` — per-asset majority of the training labels (its
  probabilities are the training class frequencies), trailing-365 majority of the labels known at t,
  persistence, always-bullish, momentum, and the Laplace-smoothed trailing class frequencies;
* metrics: :func:`~entasis.backtest.metrics.classification_metrics` (accuracy, balanced accuracy,
  log-loss, Brier, one ECE, per-class scores), checked against scikit-learn in the tests;
* one moving-block bootstrap: :func:`~entasis.backtest.metrics.block_bootstrap_diff`;
* one rule, :func:`beats_baseline`: **log-loss decides** (a proper scoring rule: it cannot be gamed by
  pushing predictions away from the base rates). A model beats the baselines when its log-loss is
  strictly below the lowest baseline log-loss on the same rows. Accuracy and balanced accuracy are
  reported beside it (the best baseline on each), never part of the verdict;
* one live-accuracy definition: the SQL view ``ml.live_outcomes`` (migration
  ``0505_live_outcomes.sql``) — reconciled predictions per model version, asset, horizon and target
  day — read by rollback (:func:`live_daily`), the monitor and ``ml.model_status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.backtest.baselines import (
    BASELINES,
    PROBABILISTIC,
    FoldBaselines,
    baseline_name,
    is_baseline,
    rule_signals,
    trailing_counts,
)
from entasis.backtest.metrics import (
    block_bootstrap_diff,
    brier,
    classification_metrics,
    default_block,
    ece,
    log_loss,
    reliability,
    row_log_loss,
    scalar,
)

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

__all__ = [
    "BASELINES", "PROBABILISTIC", "FoldBaselines", "baseline_name", "beats_baseline", "block_bootstrap_diff",
    "brier", "classification_metrics", "default_block", "ece", "is_baseline", "live_daily", "log_loss",
    "reliability", "row_log_loss", "rule_signals", "scalar", "trailing_counts",
]

LIVE_VIEW = "ml.live_outcomes"


def beats_baseline(model: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The verdict and the facts shown beside it (stored as registry tags and promotion details).

    ``model`` and each baseline need ``log_loss`` (``accuracy`` / ``balanced_accuracy`` optional).
    ``beats_baseline`` is ``model.log_loss < min(baseline.log_loss)``: a tie does not beat. With no
    baselines, or a model without a finite log-loss, it is False.
    """
    ll = model.get("log_loss")
    scored = {k: v for k, v in baselines.items() if v.get("log_loss") is not None
              and np.isfinite(float(v["log_loss"]))}
    if not scored or ll is None or not np.isfinite(float(ll)):
        return {"beats_baseline": False}
    best_ll = min(scored, key=lambda k: (float(scored[k]["log_loss"]), k))
    out: dict[str, Any] = {
        "test_log_loss": round(float(ll), 6),
        "best_baseline": best_ll,
        "best_baseline_log_loss": round(float(scored[best_ll]["log_loss"]), 6),
        "log_loss_edge": round(float(scored[best_ll]["log_loss"]) - float(ll), 6),
        "beats_baseline": bool(float(ll) < float(scored[best_ll]["log_loss"])),
    }
    for metric in ("accuracy", "balanced_accuracy"):
        if model.get(metric) is None:
            continue
        have = {k: float(v[metric]) for k, v in scored.items() if v.get(metric) is not None}
        if not have:
            continue
        best = max(have, key=lambda k: (have[k], k))
        out[f"test_{metric}"] = round(float(model[metric]), 6)
        out[f"best_{metric}_baseline"] = best
        out[f"best_baseline_{metric}"] = round(have[best], 6)
        out[f"{metric}_edge"] = round(float(model[metric]) - have[best], 6)
    return out


def live_daily(conn: psycopg.Connection, *, model_version: str | None = None, horizon: int | None = None,
               asset: str | None = None) -> pd.DataFrame:
    """Rows of ``ml.live_outcomes`` (model_version, asset, horizon, day, n, n_correct), oldest first."""
    import pandas as pd

    where, params = [], []
    for col, val in (("model_version", model_version), ("horizon", horizon), ("asset", asset)):
        if val is not None:
            where.append(f"{col} = %s")
            params.append(val)
    sql = f"SELECT model_version, asset, horizon, day, n, n_correct FROM {LIVE_VIEW}"  # noqa: S608 - fixed names
    if where:
        sql += " WHERE " + " AND ".join(where)
    with conn.cursor() as cur:
        cur.execute(sql + " ORDER BY day", params)  # type: ignore[arg-type]
        df = pd.DataFrame(cur.fetchall(), columns=["model_version", "asset", "horizon", "day", "n", "n_correct"])
    df["day"] = pd.to_datetime(df["day"], utc=True)
    return df


def score_window(predictions: pd.DataFrame, *, horizon: int, start: object | None = None, end: object | None = None,
                 n_boot: int = 2000, seed: int = 42) -> dict[str, Any]:
    """Scores of every model and baseline on the common scored rows of a walk-forward's predictions
    whose ``ts`` lies in ``[start, end]`` (e.g. the confirm window), with each model's Δ vs the best
    baseline (log-loss: lowest; accuracy / balanced accuracy: highest) and its moving-block CI."""
    import pandas as pd

    p = predictions[predictions["scored"]]
    if start is not None:
        p = p[p["ts"] >= pd.Timestamp(str(start), tz="UTC")]
    if end is not None:
        p = p[p["ts"] <= pd.Timestamp(str(end), tz="UTC")]
    if p.empty:
        return {"n": 0, "models": {}, "baselines": {}}
    names = list(dict.fromkeys(p["model"]))
    per: dict[str, pd.DataFrame] = {m: g.sort_values(["ts", "symbol"], kind="stable")
                                    for m, g in p.groupby("model", sort=False)}
    first = per[names[0]]
    y = first["actual_class"].to_numpy().astype(np.int64)
    day = first["ts"].dt.tz_convert(None).to_numpy(dtype="datetime64[D]").astype(np.int64)
    probs = {m: per[m][["p_bearish", "p_neutral", "p_bullish"]].to_numpy(dtype=np.float64) for m in names}
    cls = {m: per[m]["predicted_class"].to_numpy().astype(np.int64) for m in names}
    mets = {m: classification_metrics(probs[m], y, cls[m]) for m in names}
    base = [m for m in names if is_baseline(m)]
    best = {"log_loss": min(base, key=lambda b: mets[b]["log_loss"]),
            "accuracy": max(base, key=lambda b: mets[b]["accuracy"]),
            "balanced_accuracy": max(base, key=lambda b: mets[b]["balanced_accuracy"])}
    block = default_block(horizon, int(np.unique(day).size))
    cnt = np.bincount(y, minlength=3).astype(np.float64)
    wrow = y.size / (np.count_nonzero(cnt) * cnt[y])
    out: dict[str, Any] = {"n": int(y.size), "block_days": block, "best_baseline": best, "models": {},
                           "baselines": {}}
    for m in names:
        row: dict[str, Any] = {k: mets[m].get(k) for k in ("n", "accuracy", "balanced_accuracy", "log_loss",
                                                            "brier", "ece")}
        if not is_baseline(m):
            hit = (cls[m] == y).astype(np.float64)
            for metric, b in best.items():
                hb = (cls[b] == y).astype(np.float64)
                if metric == "log_loss":
                    diff = row_log_loss(probs[m], y) - row_log_loss(probs[b], y)
                elif metric == "accuracy":
                    diff = hit - hb
                else:
                    diff = (hit - hb) * wrow
                row[f"d_{metric}_vs_best"] = {"baseline": b, **block_bootstrap_diff(day, diff, block=block,
                                                                                   n_boot=n_boot, seed=seed)}
        out["baselines" if is_baseline(m) else "models"][m.removeprefix("baseline:")] = row
    return out
