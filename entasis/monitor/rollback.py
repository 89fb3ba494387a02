"""Roll ``@champion`` back when its live, reconciled accuracy stays low (the monitor's rollback rule).

Live accuracy is the one aggregation of the project (:func:`entasis.backtest.evaluation.live_scores`,
SQL ``ml.live_scores`` over the view ``ml.live_outcomes``), for the champion's own version
(``model_version = '<name>/<version>'``; every asset of a pooled model together). At each of the last
``days`` days ``d`` — anchored at ``as_of``, else at the newest reconciled target day of that version, not
the wall clock — the window is the target days in ``(d − window_days, d]``. When the accuracy is below
``threshold`` on every one of those days, each with at least ``min_predictions`` reconciled outcomes,
``@champion`` moves back to the previous champion (``entasis.registry.models.rollback``). Accuracy
exactly at the threshold is not below it; a window with fewer outcomes than ``min_predictions`` means
nothing is judged. Every check is recorded in ``ml.promotion_decisions`` and as tags on the version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from entasis.backtest.evaluation import live_last_day, live_scores
from entasis.backtest.folds import BacktestError
from entasis.backtest.promotion import Decision
from entasis.backtest.store import record_decision
from entasis.domain import POOLED
from entasis.publish.champions import record_champion
from entasis.registry import models as reg
from entasis.store.db import connect

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.config import Settings


def rolling_live_accuracy(conn: psycopg.Connection, *, model_version: str, horizon: int, asset: str | None = None,
                          days: int, window_days: int, as_of: datetime | None = None) -> pd.DataFrame:
    """Live scores of one model version over ``(d − window_days, d]`` for each of the ``days`` days ``d``
    ending at ``as_of`` (default: the version's newest reconciled target day), oldest first. Columns:
    day, n, n_correct, accuracy, log_loss (accuracy / log_loss None where n = 0). Empty when the version
    has no reconciled prediction and no ``as_of`` is given."""
    import pandas as pd

    if days < 1:
        raise BacktestError(f"days must be >= 1; got {days}")
    end = as_of if as_of is not None else live_last_day(conn, asset=asset, horizon=horizon,
                                                         model_version=model_version)
    if end is None:
        return pd.DataFrame(columns=["day", "n", "n_correct", "accuracy", "log_loss"])
    e = pd.Timestamp(end)
    e = e.tz_localize("UTC") if e.tzinfo is None else e.tz_convert("UTC")
    e = e.floor("D")
    ends = [(e - pd.Timedelta(days=i)).to_pydatetime() for i in range(days - 1, -1, -1)]
    out = live_scores(conn, ends, window_days=window_days, asset=asset, horizon=horizon, model_version=model_version)
    return out.rename(columns={"window_end": "day"})


def check_live_accuracy_and_rollback(asset: str | None, horizon: int, *, threshold: float = 0.40,
                                     days: int = 14, window_days: int = 30, min_predictions: int = 10,
                                     as_of: datetime | None = None, dry_run: bool = False, record: bool = True,
                                     settings: Settings | None = None, now: datetime | None = None) -> Decision:
    """Roll @champion back when its live, reconciled accuracy stays below ``threshold`` for ``days`` days."""
    if not 0 < threshold < 1:
        raise BacktestError(f"threshold must be in (0, 1); got {threshold}")
    if days < 1 or window_days < 1 or min_predictions < 1:
        raise BacktestError("days, window_days and min_predictions must be >= 1")
    name = reg.model_name(asset, horizon)
    scope = POOLED if asset is None else asset
    decided_at = now or datetime.now(UTC)
    champ = reg.get_version_by_alias(name, reg.CHAMPION, settings)
    base: dict[str, Any] = {"model_name": name, "asset": scope, "horizon": int(horizon), "decided_at": decided_at}
    if champ is None:
        d = Decision(**base, action="no_rollback", promoted=False, reason=f"{name} has no @champion")
        _record(d, settings, record)
        return d
    v = str(champ.version)
    with connect(settings) as conn:
        roll = rolling_live_accuracy(conn, model_version=f"{name}/{v}", horizon=horizon, asset=asset, days=days,
                                     window_days=window_days, as_of=as_of)
    details: dict[str, Any] = {"threshold": threshold, "days": days, "window_days": window_days,
                               "min_predictions": min_predictions,
                               "rolling": [{"day": str(r.day.date()), "n": int(r.n),
                                            "accuracy": None if r.accuracy is None else round(float(r.accuracy), 4),
                                            "log_loss": None if r.log_loss is None else round(float(r.log_loss), 4)}
                                           for r in roll.itertuples()]}
    latest = float(roll["accuracy"].iloc[-1]) if len(roll) and roll["accuracy"].iloc[-1] is not None else None
    enough = len(roll) == days and bool((roll["n"] >= min_predictions).all())
    below = enough and all(float(a) < threshold for a in roll["accuracy"])
    common: dict[str, Any] = {**base, "challenger_version": None, "champion_version": v, "live_accuracy": latest,
                              "details": details}
    if not enough:
        d = Decision(**common, action="no_rollback", promoted=False, new_champion_version=v,
                     reason=(f"not enough reconciled predictions of v{v}: need >= {min_predictions} in each "
                             f"{window_days}-day window on each of the last {days} days"))
    elif not below:
        best = max(float(a) for a in roll["accuracy"])
        d = Decision(**common, action="no_rollback", promoted=False, new_champion_version=v,
                     reason=(f"live accuracy of v{v} reached {best:.3f} >= threshold {threshold:.3f} within the "
                             f"last {days} days; champion kept"))
    else:
        prev = None
        try:
            if not dry_run:
                _, prev = reg.rollback(name, settings)
            else:
                prev = "(dry run)"
            d = Decision(**common, action="rollback", promoted=False, new_champion_version=prev,
                         reason=(f"live accuracy of v{v} stayed below {threshold:.3f} for {days} days "
                                 f"(latest {latest:.3f} over {window_days} days); @champion rolled back to v{prev}"))
        except reg.RegistryError as e:
            d = Decision(**common, action="no_rollback", promoted=False, new_champion_version=v,
                         reason=f"live accuracy of v{v} stayed below {threshold:.3f} for {days} days but {e}")
    if not dry_run:
        reg.set_version_tags(name, v, {"live_accuracy": "" if latest is None else round(latest, 6),
                                       "live_check": d.action, "live_check_reason": d.reason[:5000],
                                       "live_checked_at": decided_at.isoformat(timespec="seconds")}, settings)
        _record(d, settings, record)
        if d.action == "rollback" and record and d.new_champion_version:
            _mirror_rollback(name, d, settings)
    return d


def _record(d: Decision, settings: Settings | None, record: bool) -> None:
    if not record:
        return
    with connect(settings) as conn:
        record_decision(conn, d.row())


def _mirror_rollback(name: str, d: Decision, settings: Settings | None) -> None:
    """Copy the restored champion into ml.champions (publish stage's table)."""
    tags = reg.get_version_tags(name, str(d.new_champion_version), settings)
    with connect(settings) as conn:
        record_champion(conn, asset=None if d.asset == POOLED else d.asset, horizon=d.horizon, model_name=name,
                        version=str(d.new_champion_version), promoted_at=d.decided_at,
                        trained_at=reg.version_trained_at(name, str(d.new_champion_version), settings),
                        unproven=str(tags.get("unproven", "false")).lower() == "true",
                        tags={"decision": "rollback", "reason": d.reason[:500]})


__all__ = ["check_live_accuracy_and_rollback", "rolling_live_accuracy"]
