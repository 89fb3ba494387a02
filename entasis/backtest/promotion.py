"""Champion / challenger promotion: the decisions, their reasons, and their record.

The rule (:func:`decide`), on the most recent out-of-sample window:

* A challenger replaces the champion only if its log-loss is not worse than the champion's by more
  than ``margin`` **and** it beats the naive baselines under the one rule
  :func:`entasis.backtest.evaluation.beats_baseline`: log-loss strictly below the lowest baseline
  log-loss (accuracy is reported beside it, not part of the verdict).
* When the model (asset or pooled, horizon) has no champion yet, the first challenger becomes
  champion anyway so that predictions flow; it is marked ``unproven=true`` unless it beats the
  baselines. A later challenger that is promoted under the rule (so beats the baselines) carries
  ``unproven=false``: the mark is cleared.
* A leak blocks promotion, also of a first model: when the walk-forward's leakage check fails, or the
  challenger's training flagged ``edge_suspicious`` (test accuracy beats the best naive baseline by
  more than :data:`entasis.models.train.SUSPICIOUS_EDGE`), the challenger is kept out and no
  "unproven" champion is made from it; the reason names the check.

How the window is scored (:func:`evaluate_and_promote`): a registered version was trained on data up
to its training date, so scoring the fitted artifact on "recent" data would be in-sample for it.
Instead the challenger's and the champion's *configurations* (the ensemble's saved parameters) are
each refit walk-forward over the last ``window_days`` of labelled data (refit every ``refit_days``,
purged as everywhere), beside the baselines, on the same folds and rows. Every decision is upserted
into ``ml.promotion_decisions`` and written as tags on the challenger version (``promotion_decision``,
``promotion_reason``, ``unproven`` and the ``wf_*`` comparison with the baselines).

Rollback on live accuracy lives in :mod:`entasis.monitor.rollback` (it reuses :class:`Decision` and
the same decisions table).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from entasis.backtest.folds import BacktestError, LeakageError
from entasis.backtest.runner import Inputs, blank_unknown_labels, load_db_inputs
from entasis.backtest.store import read_decisions, record_backtest, record_decision
from entasis.backtest.walkforward import walk_forward
from entasis.domain import POOLED, target_column
from entasis.registry import models as reg
from entasis.store.db import connect

if TYPE_CHECKING:
    import pandas as pd

    from entasis.backtest.runner import Inputs
    from entasis.backtest.walkforward import WalkForwardResult
    from entasis.config import Settings

log = logging.getLogger(__name__)


class PromotionError(RuntimeError):
    """Promotion or rollback cannot be decided (no challenger, no data for the window, ...)."""


@dataclass
class Scores:
    accuracy: float
    log_loss: float


@dataclass
class Decision:
    """The outcome of a promotion or rollback check; ``promoted`` says whether @champion moved to the
    challenger, ``reason`` says why in words an analyst can read."""

    model_name: str
    asset: str
    horizon: int
    action: str                      # promote | keep | rollback | no_rollback
    promoted: bool
    reason: str
    unproven: bool | None = None
    challenger_version: str | None = None
    champion_version: str | None = None
    new_champion_version: str | None = None
    challenger: Scores | None = None
    champion: Scores | None = None
    best_baseline: str | None = None
    best_baseline_accuracy: float | None = None
    best_baseline_log_loss: float | None = None
    beats_baseline: bool | None = None
    live_accuracy: float | None = None
    margin: float | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    backtest_run_id: str | None = None
    decided_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rolled_back(self) -> bool:
        return self.action == "rollback"

    def row(self) -> dict[str, Any]:
        """The ml.promotion_decisions row."""
        return {
            "model_name": self.model_name, "decided_at": self.decided_at, "action": self.action,
            "asset": self.asset, "horizon": int(self.horizon), "challenger_version": self.challenger_version,
            "champion_version": self.champion_version, "new_champion_version": self.new_champion_version,
            "promoted": bool(self.promoted), "unproven": self.unproven, "reason": self.reason,
            "challenger_accuracy": self.challenger.accuracy if self.challenger else None,
            "challenger_log_loss": self.challenger.log_loss if self.challenger else None,
            "champion_accuracy": self.champion.accuracy if self.champion else None,
            "champion_log_loss": self.champion.log_loss if self.champion else None,
            "best_baseline": self.best_baseline, "best_baseline_accuracy": self.best_baseline_accuracy,
            "best_baseline_log_loss": self.best_baseline_log_loss, "live_accuracy": self.live_accuracy,
            "margin": self.margin, "window_start": self.window_start, "window_end": self.window_end,
            "backtest_run_id": self.backtest_run_id, "details": json.loads(json.dumps(self.details, default=str)),
        }


# -- the rule ----------------------------------------------------------------------------------------
_MARGIN_TOLERANCE = 1e-12


def decide(challenger: Scores, champion: Scores | None, baselines: Mapping[str, Scores], *,
           margin: float = 0.01) -> tuple[str, bool, bool | None, str, dict[str, Any]]:
    """(action, promoted, unproven, reason, facts) for one challenger. Pure; see the module docstring."""
    if margin < 0:
        raise BacktestError(f"margin must be >= 0; got {margin}")
    if not baselines:
        raise BacktestError("the promotion rule needs at least one baseline score")
    from entasis.backtest.evaluation import beats_baseline

    verdict = beats_baseline({"log_loss": challenger.log_loss, "accuracy": challenger.accuracy},
                             {k: {"log_loss": v.log_loss, "accuracy": v.accuracy} for k, v in baselines.items()})
    best_ll_name = verdict.get("best_baseline") or min(baselines, key=lambda k: baselines[k].log_loss)
    best_acc_name = verdict.get("best_accuracy_baseline") or max(baselines, key=lambda k: baselines[k].accuracy)
    best_acc = baselines[best_acc_name].accuracy
    best_ll = baselines[best_ll_name].log_loss
    beats = bool(verdict["beats_baseline"])
    facts = {"best_baseline": best_ll_name, "best_baseline_accuracy": baselines[best_ll_name].accuracy,
             "best_accuracy_baseline": best_acc_name, "best_accuracy": best_acc,
             "best_log_loss_baseline": best_ll_name, "best_baseline_log_loss": best_ll, "beats_baseline": beats}
    vs_base = (f"log-loss {challenger.log_loss:.4f} vs {best_ll:.4f} ({best_ll_name}) decides; accuracy "
               f"{challenger.accuracy:.4f} vs {best_acc:.4f} ({best_acc_name})")
    if champion is None:
        if beats:
            return ("promote", True, False,
                    f"first model for this asset and horizon; promoted, and it beats the naive baselines ({vs_base})",
                    facts)
        return ("promote", True, True,
                f"first model for this asset and horizon; promoted as champion but UNPROVEN: it does not beat the "
                f"naive baselines ({vs_base})", facts)
    worse_by = challenger.log_loss - champion.log_loss
    # "worse by exactly the margin" passes: 1.03 - 1.02 is 0.010000000000000009 in binary floating point,
    # so differences within 1e-12 of the margin count as equal to it
    if worse_by > margin + _MARGIN_TOLERANCE:
        return ("keep", False, None,
                f"kept the champion: challenger log-loss {challenger.log_loss:.4f} is worse than the champion's "
                f"{champion.log_loss:.4f} by {worse_by:.4f} > margin {margin:.4f}", facts)
    if not beats:
        return ("keep", False, None,
                f"kept the champion: challenger does not beat the best naive baseline on log-loss ({vs_base})", facts)
    return ("promote", True, False,
            f"promoted: challenger log-loss {challenger.log_loss:.4f} vs champion {champion.log_loss:.4f} "
            f"(margin {margin:.4f}) and it beats the naive baselines ({vs_base})", facts)


# -- evaluation on the most recent window ------------------------------------------------------------
def spec_of_version(name: str, version: str, settings: Settings | None = None) -> dict[str, Any]:
    """A walk-forward model spec (kind + saved parameters) of a registered version's ensemble."""
    py = reg.load(name, version=version, settings=settings)
    inner = py.unwrap_python_model()
    model = getattr(inner, "ensemble", None)
    if model is None:
        raise PromotionError(f"{name} v{version}: the registered artifact holds no ensemble")
    return {"name": model.kind, **model.get_params(), "_assets": list(model.assets)}


def evaluate_versions(specs: Mapping[str, Mapping[str, Any]], frame: pd.DataFrame, *, horizon: int,
                      window_days: int, refit_days: int, prices: pd.DataFrame | None = None,
                      timeframe: str = "1d", **options: Any) -> WalkForwardResult:
    """Walk-forward the given labelled specs over the last ``window_days`` of labelled rows."""
    import pandas as pd

    target = target_column(horizon)
    lab = frame[pd.to_numeric(frame[target], errors="coerce").notna()] if target in frame.columns else frame.iloc[:0]
    if lab.empty:
        raise PromotionError(f"no labelled rows for {target}: cannot score a recent window")
    end = pd.to_datetime(lab["ts"], utc=True).max()
    start = end - pd.Timedelta(days=window_days - 1)
    models = []
    seen: dict[str, str] = {}
    for label, spec in specs.items():
        key = json.dumps({k: v for k, v in spec.items() if not k.startswith("_")}, sort_keys=True, default=str)
        if key in seen:  # identical configuration: one evaluation serves both labels
            continue
        seen[key] = label
        models.append({**{k: v for k, v in spec.items() if not k.startswith("_")}, "label": label})
    options.setdefault("leakage", "warn")
    return walk_forward(frame, horizon=horizon, start=start, end=end, models=models, prices=prices,
                        timeframe=timeframe, refit_days=refit_days, **options)


def _scores(result: WalkForwardResult, label: str) -> Scores:
    m = result.metrics[label][POOLED]
    return Scores(accuracy=float(m["accuracy"]), log_loss=float(m["log_loss"]))


def _version_tags(result: WalkForwardResult, label: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The challenger's comparison with the baselines, as registry tags (prefixed wf_)."""
    s = _scores(result, label)
    best_acc = facts["best_accuracy_baseline"]
    best_ll = facts["best_log_loss_baseline"]
    a = result.comparison(label, best_acc, "accuracy", POOLED)
    ll = result.comparison(label, best_ll, "log_loss", POOLED)
    return {
        "wf_accuracy": round(s.accuracy, 6), "wf_log_loss": round(s.log_loss, 6),
        "wf_best_baseline": best_ll, "wf_best_accuracy_baseline": best_acc,
        "wf_best_baseline_accuracy": round(float(facts["best_accuracy"]), 6),
        "wf_best_log_loss_baseline": best_ll,
        "wf_best_baseline_log_loss": round(float(facts["best_baseline_log_loss"]), 6),
        "wf_accuracy_edge": round(a["estimate"], 6), "wf_accuracy_edge_ci": f"[{a['lo']:.4f}, {a['hi']:.4f}]",
        "wf_log_loss_edge": round(ll["estimate"], 6), "wf_log_loss_edge_ci": f"[{ll['lo']:.4f}, {ll['hi']:.4f}]",
        "wf_beats_baseline": bool(facts["beats_baseline"]), "wf_backtest_run_id": result.run_id,
        "wf_window": f"{result.config['start'][:10]}/{result.config['end'][:10]}",
    }


def evaluate_and_promote(asset: str | None, horizon: int, *, challenger_version: str | int | None = None,
                         inputs: Inputs | None = None, frame: pd.DataFrame | None = None,
                         prices: pd.DataFrame | None = None, window_days: int = 180, refit_days: int = 30,
                         margin: float = 0.01, timeframe: str = "1d", exchange: str | None = None,
                         record: bool = True, settings: Settings | None = None,
                         now: datetime | None = None, result: WalkForwardResult | None = None,
                         **options: Any) -> Decision:
    """Score the @challenger (or ``challenger_version``) and the @champion on the most recent window,
    apply :func:`decide`, move @champion when promoted, and record the decision (table + tags).

    Data: ``inputs`` / ``frame`` (+ ``prices``) when given, else the database (the challenger's assets).
    ``options`` go to the walk-forward (e.g. ``min_train_rows``, ``n_boot``). ``result``: a walk-forward
    already run and recorded (the train DAG's backtest task, labels ``challenger_v<N>`` /
    ``champion_v<M>``) to decide on instead of running one here.
    """
    if margin < 0:  # before any walk-forward or record, also when the challenger is already champion
        raise BacktestError(f"margin must be >= 0; got {margin}")
    name = reg.model_name(asset, horizon)
    scope = POOLED if asset is None else asset
    ch_mv = reg.get_version_by_alias(name, reg.CHALLENGER, settings) if challenger_version is None else None
    ch_v = str(challenger_version) if challenger_version is not None else (str(ch_mv.version) if ch_mv else None)
    if ch_v is None:
        raise PromotionError(f"{name} has no @challenger version to evaluate")
    champ_mv = reg.get_version_by_alias(name, reg.CHAMPION, settings)
    champ_v = str(champ_mv.version) if champ_mv is not None else None
    decided_at = now or datetime.now(UTC)
    if champ_v == ch_v:
        d = Decision(model_name=name, asset=scope, horizon=int(horizon), action="keep", promoted=False,
                     reason=f"challenger v{ch_v} is already the champion", challenger_version=ch_v,
                     champion_version=champ_v, new_champion_version=champ_v, margin=margin, decided_at=decided_at)
        _record(d, settings, record)
        return d
    ch_label, champ_label = f"challenger_v{ch_v}", f"champion_v{champ_v}"
    given = result is not None
    if result is None:
        specs = {ch_label: spec_of_version(name, ch_v, settings)}
        if champ_v is not None:
            specs[champ_label] = spec_of_version(name, champ_v, settings)
        if inputs is None:
            inputs = _load_inputs(asset, specs[ch_label], frame=frame, prices=prices, timeframe=timeframe,
                                  exchange=exchange, decided_at=decided_at, settings=settings)
        result = evaluate_versions(specs, inputs.frame, horizon=horizon, window_days=window_days,
                                   refit_days=refit_days, prices=inputs.prices, timeframe=timeframe, **options)
    if ch_label not in result.models and champ_label not in result.models:
        raise PromotionError(f"{name}: the walk-forward {result.run_id} scored neither {ch_label} nor {champ_label}")
    ch_eval = ch_label if ch_label in result.models else champ_label
    ch_scores = _scores(result, ch_eval)
    champ_scores = None
    if champ_v is not None:
        champ_scores = _scores(result, champ_label if champ_label in result.models else ch_eval)
    base_scores = {b.removeprefix("baseline:"): Scores(float(result.metrics[b][POOLED]["accuracy"]),
                                                       float(result.metrics[b][POOLED]["log_loss"]))
                   for b in result.baselines}
    action, promoted, unproven, reason, facts = decide(ch_scores, champ_scores, base_scores, margin=margin)
    facts_full = {**facts, "best_baseline": "baseline:" + facts["best_baseline"],
                  "best_accuracy_baseline": "baseline:" + facts["best_accuracy_baseline"],
                  "best_log_loss_baseline": "baseline:" + facts["best_log_loss_baseline"]}
    leaks = list(result.leakage.get("problems") or [])
    ch_tags = reg.get_version_tags(name, ch_v, settings)
    edge_suspicious = str(ch_tags.get("edge_suspicious", "")).lower() == "true"  # set by training (models.train)
    if edge_suspicious:
        leaks.append(f"training flagged v{ch_v} edge_suspicious (test accuracy beats the best baseline by "
                     f"{ch_tags.get('accuracy_edge', '?')}, more than the plausible edge)")
    if leaks:  # a leak blocks promotion, also of a first model (no "unproven" champion from a leak)
        action, promoted, unproven = "keep", False, None
        reason = "kept the champion: the evaluation failed its leakage check: " + "; ".join(leaks)
        if champ_v is None:
            reason = "not promoted (no champion yet): the evaluation failed its leakage check: " + "; ".join(leaks)
    d = Decision(model_name=name, asset=scope, horizon=int(horizon), action=action, promoted=promoted,
                 reason=reason, unproven=unproven, challenger_version=ch_v, champion_version=champ_v,
                 new_champion_version=ch_v if promoted else champ_v, challenger=ch_scores, champion=champ_scores,
                 best_baseline=facts["best_baseline"], best_baseline_accuracy=facts["best_baseline_accuracy"],
                 best_baseline_log_loss=facts["best_baseline_log_loss"], beats_baseline=facts["beats_baseline"],
                 margin=margin, window_start=_dt(result.config["start"]), window_end=_dt(result.config["end"]),
                 backtest_run_id=result.run_id, decided_at=decided_at,
                 details={"best_log_loss_baseline": facts["best_log_loss_baseline"],
                          "window_days": window_days, "refit_days": refit_days,
                          "baselines": {k: asdict(v) for k, v in base_scores.items()},
                          "leakage": leaks, "edge_suspicious": edge_suspicious})
    tags = {**_version_tags(result, ch_eval, facts_full), "promotion_decision": action,
            "promotion_reason": reason[:5000], "promotion_decided_at": decided_at.isoformat(timespec="seconds")}
    if promoted:
        tags["unproven"] = bool(unproven)
        reg.set_alias(name, reg.CHAMPION, ch_v, settings)
    reg.set_version_tags(name, ch_v, tags, settings)
    if record and not given and inputs is not None:  # a given result was recorded by whoever ran it
        with connect(settings) as conn:
            record_backtest(conn, result, exchange=inputs.exchange, predictions=False)
    _record(d, settings, record)
    if promoted and record:
        _mirror_champion(d, settings)
    log.info("%s: %s — %s", name, action, reason)
    return d


def _load_inputs(asset: str | None, spec: Mapping[str, Any], *, frame: pd.DataFrame | None,
                 prices: pd.DataFrame | None, timeframe: str, exchange: str | None, decided_at: datetime,
                 settings: Settings | None) -> Inputs:
    """The frame given, else features.bars of the asset (or the pooled model's assets) known at decision time."""
    import pandas as pd

    if frame is not None:
        return Inputs(frame, prices, None, exchange, "frame")
    assets = [asset] if asset is not None else (list(spec.get("_assets") or []) or None)
    with connect(settings) as conn:
        got = load_db_inputs(conn, assets=assets, timeframe=timeframe, end=pd.Timestamp(decided_at),
                             exchange=exchange, funding=False, settings=settings)
    # score only outcomes known at decision time: a re-run for a past date decides the same way
    return Inputs(blank_unknown_labels(got.frame, decided_at, timeframe), got.prices, None, got.exchange, got.source)


def _dt(s: str) -> datetime:
    import pandas as pd

    return pd.Timestamp(s).to_pydatetime()


def _record(d: Decision, settings: Settings | None, record: bool) -> None:
    if not record:
        return
    with connect(settings) as conn:
        record_decision(conn, d.row())


def _mirror_champion(d: Decision, settings: Settings | None) -> None:
    """Copy the new champion into ml.champions (publish stage's table) so analysts see it in SQL."""
    try:
        from entasis.publish.champions import record_champion
    except ImportError:  # pragma: no cover - the publish stage is part of the package
        return

    with connect(settings) as conn:
        record_champion(conn, asset=None if d.asset == POOLED else d.asset, horizon=d.horizon,
                        model_name=d.model_name, version=str(d.new_champion_version), promoted_at=d.decided_at,
                        trained_at=reg.version_trained_at(d.model_name, str(d.new_champion_version), settings),
                        unproven=bool(d.unproven),
                        test_accuracy=d.challenger.accuracy if d.challenger and d.action == "promote" else None,
                        best_baseline=d.best_baseline,
                        best_baseline_accuracy=d.best_baseline_accuracy if d.action == "promote" else None,
                        beats_baseline=d.beats_baseline if d.action == "promote" else None,
                        tags={"decision": d.action, "reason": d.reason[:500]})


def recorded_decisions(model_name: str | None = None, settings: Settings | None = None) -> Sequence[dict[str, Any]]:
    """ml.promotion_decisions rows as dicts, oldest first (for the CLI and tests)."""
    with connect(settings) as conn:
        return list(read_decisions(conn, model_name).to_dict("records"))


__all__ = ["Decision", "LeakageError", "PromotionError", "Scores", "decide", "evaluate_and_promote",
           "evaluate_versions"]
