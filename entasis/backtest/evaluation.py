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
  UTC day — aggregated over a window by one SQL function, ``ml.live_scores`` (migration
  ``0506_live_window.sql``): the target days ``d`` with ``day(end) − window_days < d <= day(end)``,
  accuracy = Σ n_correct / Σ n, log-loss = Σ sum_log_loss / Σ n, NULL (never 0) on an empty window.
  Rollback (``entasis.monitor.rollback``) and the monitor (``entasis.monitor.checks``) call it through
  :func:`live_scores`; ``ml.model_status`` (migration ``0603``) calls it in SQL. Each chooses only where
  its window ends (the monitor: its ``now``; rollback: each of its last days; model_status: the latest
  reconciled target date).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
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
from entasis.domain import PROBA_COLUMNS

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

__all__ = [
    "BASELINES", "PROBABILISTIC", "FoldBaselines", "baseline_name", "beats_baseline", "block_bootstrap_diff",
    "brier", "classification_metrics", "default_block", "ece", "is_baseline", "log_loss",
    "live_last_day", "live_scores", "reliability", "row_log_loss", "rule_signals", "scalar", "trailing_counts",
]

LIVE_VIEW = "ml.live_outcomes"
LIVE_SCORES = "ml.live_scores"
LIVE_COLUMNS = ["n", "n_correct", "accuracy", "log_loss"]


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


# The (asset, horizon, model_version) filter of the live queries; None matches all. Bound with
# :func:`_live_filter_params`.
_LIVE_FILTER = """(%(asset)s::text IS NULL OR asset = %(asset)s::text)
    AND (%(horizon)s::integer IS NULL OR horizon = %(horizon)s::integer)
    AND (%(mv)s::text IS NULL OR model_version = %(mv)s::text)"""


def _live_filter_params(asset: str | None, horizon: int | None, model_version: str | None) -> dict[str, Any]:
    return {"asset": asset, "horizon": None if horizon is None else int(horizon), "mv": model_version}


def live_scores(conn: psycopg.Connection, ends: Sequence[datetime], *, window_days: int,
                asset: str | None = None, horizon: int | None = None, model_version: str | None = None,
                by_key: bool = False) -> pd.DataFrame:
    """Live scores over the window of ``window_days`` target days ending on the UTC day of each of
    ``ends``, from ``ml.live_scores`` (the one aggregation; see the module docstring).

    ``asset`` / ``horizon`` / ``model_version`` filter (None: all). Without ``by_key``: one row per end
    (window_end, n, n_correct, accuracy, log_loss; accuracy and log_loss None when n = 0). With
    ``by_key``: one row per end and (asset, horizon) that has reconciled predictions in the window.
    """
    import pandas as pd

    if isinstance(window_days, bool) or not isinstance(window_days, int | np.integer) or window_days < 1:
        raise ValueError(f"window_days must be a positive whole number of days; got {window_days!r}")
    stamps = []
    for e in ends:
        t = pd.Timestamp(e)  # type: ignore[arg-type]
        if t.tzinfo is None:
            raise ValueError(f"window end {e!r} has no timezone; pass UTC-aware timestamps")
        stamps.append(t.to_pydatetime())
    cols = ["window_end", *(["asset", "horizon"] if by_key else []), *LIVE_COLUMNS]
    if not stamps:
        return pd.DataFrame(columns=cols)
    f = {"ends": stamps, "days": int(window_days), **_live_filter_params(asset, horizon, model_version)}
    if by_key:
        sql = f"""SELECT e.window_end, k.asset, k.horizon, l.n, l.n_correct, l.accuracy, l.log_loss
            FROM unnest(%(ends)s::timestamptz[]) WITH ORDINALITY AS e(window_end, i)
            CROSS JOIN (SELECT DISTINCT asset, horizon FROM {LIVE_VIEW} WHERE {_LIVE_FILTER}) k
            CROSS JOIN LATERAL {LIVE_SCORES}(e.window_end, %(days)s::integer, k.asset, k.horizon, %(mv)s::text) l
            WHERE l.n > 0 ORDER BY e.i, k.asset, k.horizon"""  # noqa: S608 - fixed names, values bound
    else:
        sql = f"""SELECT e.window_end, l.n, l.n_correct, l.accuracy, l.log_loss
            FROM unnest(%(ends)s::timestamptz[]) WITH ORDINALITY AS e(window_end, i)
            CROSS JOIN LATERAL {LIVE_SCORES}(e.window_end, %(days)s::integer, %(asset)s::text,
                                             %(horizon)s::integer, %(mv)s::text) l
            ORDER BY e.i"""  # noqa: S608 - fixed names, values bound
    with conn.cursor() as cur:
        cur.execute(sql, f)  # type: ignore[arg-type]
        df = pd.DataFrame(cur.fetchall(), columns=cols)
    df["window_end"] = pd.to_datetime(df["window_end"], utc=True)
    df["n"] = df["n"].astype("int64")
    df["n_correct"] = df["n_correct"].astype("int64")
    for c in ("accuracy", "log_loss"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def live_last_day(conn: psycopg.Connection, *, asset: str | None = None, horizon: int | None = None,
                  model_version: str | None = None) -> datetime | None:
    """The newest target UTC day with a reconciled prediction (filters as :func:`live_scores`), or None."""
    sql = f"SELECT max(day) FROM {LIVE_VIEW} WHERE {_LIVE_FILTER}"  # noqa: S608 - fixed names, values bound
    row = conn.execute(sql, _live_filter_params(asset, horizon, model_version)).fetchone()  # type: ignore[arg-type]
    return None if row is None else row[0]


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
    probs = {m: per[m][list(PROBA_COLUMNS)].to_numpy(dtype=np.float64) for m in names}
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
