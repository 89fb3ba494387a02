"""Promotion at its edges through ``evaluate_and_promote`` (issue 17): real MLflow registry, real PostgreSQL.

Challengers are trained and registered by the real training entry point (``train_and_register``),
so they carry the training's ``edge_suspicious`` tag. A feature that copies the label makes it true and
trips the walk-forward's leakage check: such a challenger is never promoted, with or without a
champion (a leak does not become an "unproven" first champion). A genuinely weak feature trips
neither. The challenger already champion is a no-op that says so; no baselines and a negative margin
are refused with a clear error before anything is recorded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import pytest

from entasis.backtest.folds import BacktestError
from entasis.backtest.promotion import evaluate_and_promote, recorded_decisions
from entasis.models.train import SUSPICIOUS_EDGE, train_and_register
from entasis.registry import models as reg
from tests.unit.backtest.synth import make_market

NAME = "entasis-pooled-7d"
LGBM = {"lgbm": {"n_estimators": 20, "num_leaves": 7, "learning_rate": 0.2, "n_jobs": 1, "lags": [1],
                 "roll": [3]}}
WEAK = ["sig_known", "past_ret"]
LEAKY = ["label_copy", "past_ret"]


@pytest.fixture(scope="module")
def market() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame, prices = make_market(symbols=("AAA/USDT", "BBB/USDT", "CCC/USDT"), strength=0.4, n_days=600, seed=11)
    frame["label_copy"] = frame["y_cls_7d"].astype("float64")  # the label itself, as a "feature"
    return frame, prices


def _train(frame: pd.DataFrame, features: list[str]) -> dict[str, Any]:
    """Train and register the next @challenger (real training code); its version tags."""
    (r,) = train_and_register(frame, horizons=[7], models=["lgbm"], features=features, member_params=LGBM,
                              vol=False)
    assert r.version is not None and reg.alias_version(NAME, reg.CHALLENGER) == r.version
    return {"version": r.version, **reg.get_version_tags(NAME, r.version)}


def _opts(market: tuple[pd.DataFrame, pd.DataFrame], **kw: Any) -> dict[str, Any]:
    frame, prices = market
    return {"frame": frame, "prices": prices, "window_days": 60, "refit_days": 30, "min_train_rows": 100,
            "n_boot": 100, **kw}


def _champions() -> list[tuple[Any, ...]]:
    from entasis.store.db import connect

    with connect() as conn:
        return conn.execute("SELECT asset, horizon, version, unproven, promoted_at, tags FROM ml.champions "
                            "ORDER BY asset, horizon").fetchall()


def _trained_at() -> Any:
    from entasis.store.db import connect

    with connect() as conn:
        row = conn.execute("SELECT trained_at FROM ml.champions").fetchone()
    assert row is not None
    return row[0]


def test_a_label_copy_is_never_promoted_even_without_a_champion(
        db_url: str, market: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    leaky = _train(market[0], LEAKY)
    assert leaky["edge_suspicious"] == "true" and float(leaky["accuracy_edge"]) > 0.3

    d = evaluate_and_promote(None, 7, **_opts(market))
    assert (d.action, d.promoted, d.unproven) == ("keep", False, None)
    assert d.reason.startswith("not promoted (no champion yet): the evaluation failed its leakage check")
    assert "edge_suspicious" in d.reason and "implausible out of sample" in d.reason  # both checks fired
    assert d.details["edge_suspicious"] is True and len(d.details["leakage"]) == 2
    assert reg.get_version_by_alias(NAME, reg.CHAMPION) is None
    assert _champions() == []
    (row,) = recorded_decisions(NAME)
    assert row["promoted"] is False and row["champion_version"] is None and "leakage" in row["reason"]
    tags = reg.get_version_tags(NAME, leaky["version"])
    assert tags["promotion_decision"] == "keep" and "unproven" not in tags

    # bad inputs are refused before any walk-forward and before anything is recorded
    with pytest.raises(BacktestError, match=r"margin must be >= 0; got -0\.001"):
        evaluate_and_promote(None, 7, **_opts(market, margin=-0.001))
    with pytest.raises(BacktestError, match="at least one baseline"):
        evaluate_and_promote(None, 7, **_opts(market, baselines=[]))
    assert len(recorded_decisions(NAME)) == 1 and _champions() == []
    assert reg.get_version_by_alias(NAME, reg.CHAMPION) is None


def test_edges_with_a_champion(db_url: str, market: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    # a genuinely weak feature: not suspicious in training, not a leak in the walk-forward; first champion
    weak = _train(market[0], WEAK)
    assert weak["edge_suspicious"] == "false" and float(weak["accuracy_edge"]) <= SUSPICIOUS_EDGE
    d1 = evaluate_and_promote(None, 7, **_opts(market))
    assert d1.action == "promote" and d1.promoted and d1.details["leakage"] == []
    assert d1.details["edge_suspicious"] is False
    champions = _champions()
    assert [(c[0], c[1], c[2]) for c in champions] == [("pooled", 7, weak["version"])]
    assert _trained_at() == datetime.fromisoformat(weak["trained_at"])  # the version's own, not the decision's

    # the challenger is already the champion: a no-op that says so; @champion and ml.champions unchanged
    again = evaluate_and_promote(None, 7, **_opts(market))
    assert (again.action, again.promoted) == ("keep", False)
    assert again.reason == f"challenger v{weak['version']} is already the champion"
    assert again.new_champion_version == weak["version"] and again.backtest_run_id is None  # no walk-forward
    assert _champions() == champions
    with pytest.raises(BacktestError, match="margin must be >= 0"):  # refused on this path too
        evaluate_and_promote(None, 7, **_opts(market, margin=-1e-9))

    # a label copy with a champion present: champion kept, challenger blocked, reason recorded
    leaky = _train(market[0], LEAKY)
    d2 = evaluate_and_promote(None, 7, **_opts(market))
    assert (d2.action, d2.promoted) == ("keep", False)
    assert d2.reason.startswith("kept the champion: the evaluation failed its leakage check")
    assert d2.champion_version == weak["version"] == d2.new_champion_version
    assert reg.alias_version(NAME, reg.CHAMPION) == weak["version"]
    assert _champions() == champions
    # the training flag alone blocks it: with the walk-forward's accuracy check switched off
    d3 = evaluate_and_promote(None, 7, **_opts(market, leak_threshold=None))
    assert not d3.promoted and d3.details["leakage"] == [d3.details["leakage"][0]]
    assert "edge_suspicious" in d3.reason and "implausible" not in d3.reason
    assert d3.challenger is not None and d3.challenger.accuracy > 0.9  # it would have "won" on every score
    assert reg.alias_version(NAME, reg.CHAMPION) == weak["version"] and _champions() == champions
    rows = recorded_decisions(NAME)
    assert [(r["action"], r["challenger_version"]) for r in rows] == [
        ("promote", weak["version"]), ("keep", weak["version"]), ("keep", leaky["version"]),
        ("keep", leaky["version"])]
    assert all("leakage" in r["reason"] for r in rows[2:])
    assert reg.get_version_tags(NAME, leaky["version"])["promotion_decision"] == "keep"
