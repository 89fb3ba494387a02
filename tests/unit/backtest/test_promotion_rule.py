"""The promotion rule at its edges (issue 17): exact margins, ties, no champion, no baselines.

``decide`` is pure: log-loss decides (a proper scoring rule); the challenger may be worse than the
champion by at most ``margin`` and must beat the best naive baseline outright (a tie does not beat).
"""

from __future__ import annotations

import math

import pytest

from entasis.backtest.folds import BacktestError
from entasis.backtest.promotion import Scores, decide

BASE = {"majority": Scores(accuracy=0.42, log_loss=1.05), "trailing_freq": Scores(accuracy=0.41, log_loss=1.04)}


def S(ll: float, acc: float = 0.45) -> Scores:  # noqa: N802 - a table reads better with a short name
    return Scores(accuracy=acc, log_loss=ll)


# (case, challenger, champion, baselines, margin) -> (action, promoted, unproven)
TABLE = [
    ("first model beats the best baseline", S(1.03), None, BASE, 0.01, ("promote", True, False)),
    ("first model ties the best baseline: unproven", S(1.04), None, BASE, 0.01, ("promote", True, True)),
    ("first model worse than the baselines: unproven", S(1.10), None, BASE, 0.01, ("promote", True, True)),
    ("first model with a NaN log-loss: unproven", S(math.nan), None, BASE, 0.01, ("promote", True, True)),
    ("tie with the champion, beats baselines", S(1.03), S(1.03), BASE, 0.01, ("promote", True, False)),
    ("better than the champion, beats baselines", S(1.02), S(1.03), BASE, 0.01, ("promote", True, False)),
    # 1.03 - 1.02 is 0.010000000000000009 in binary floating point: exactly the margin must still pass
    ("worse than the champion by exactly the margin (rounds badly)", S(1.03), S(1.02), BASE, 0.01,
     ("promote", True, False)),
    ("worse by exactly 0.1 + 0.2 - 0.3 style margins", S(0.3 + 1e-9 + 0.7), S(0.7 + 1e-9 + 0.29), BASE, 0.01,
     ("promote", True, False)),
    ("worse than the champion by margin + 1e-9", S(1.03 + 1e-9), S(1.02), BASE, 0.01, ("keep", False, None)),
    ("zero margin: a tie with the champion passes", S(1.03), S(1.03), BASE, 0.0, ("promote", True, False)),
    ("zero margin: worse by 1e-9 keeps", S(1.03 + 1e-9), S(1.03), BASE, 0.0, ("keep", False, None)),
    ("better than the champion but ties the best baseline", S(1.04), S(1.06), BASE, 0.01, ("keep", False, None)),
    ("better than the champion but worse than a baseline", S(1.045), S(1.06), BASE, 0.01, ("keep", False, None)),
    ("NaN challenger against a champion keeps", S(math.nan), S(1.03), BASE, 0.01, ("keep", False, None)),
    ("one baseline only", S(1.0), S(1.0), {"majority": S(1.01, 0.5)}, 0.01, ("promote", True, False)),
]


@pytest.mark.parametrize(("case", "challenger", "champion", "baselines", "margin", "expected"), TABLE,
                         ids=[t[0] for t in TABLE])
def test_promotion_boundary_table(case, challenger, champion, baselines, margin, expected) -> None:
    action, promoted, unproven, reason, facts = decide(challenger, champion, baselines, margin=margin)
    assert (action, promoted, unproven) == expected, reason
    assert facts["best_baseline"] == min(baselines, key=lambda k: baselines[k].log_loss)
    assert reason  # every decision says why


def test_best_baseline_is_chosen_by_log_loss_not_accuracy() -> None:
    *_, facts = decide(S(1.03), None, BASE)
    assert facts["best_log_loss_baseline"] == "trailing_freq" and facts["best_accuracy_baseline"] == "majority"


@pytest.mark.parametrize(("baselines", "margin", "message"), [
    ({}, 0.01, "at least one baseline"),
    (BASE, -0.001, "margin must be >= 0"),
])
def test_bad_inputs_fail_clearly(baselines, margin, message) -> None:
    with pytest.raises(BacktestError, match=message):
        decide(S(1.0), S(1.0), baselines, margin=margin)


# -- the training's leak flag the promotion rule refuses (entasis.models.train.is_edge_suspicious) --------
@pytest.mark.parametrize(("comparison", "suspicious"), [
    ({"accuracy_edge": 0.05}, False),                  # exactly the plausible edge: not suspicious
    ({"accuracy_edge": 0.050001}, True),               # just above it (tags carry 6 decimals)
    ({"accuracy_edge": 0.0499999}, False),
    ({"accuracy_edge": 0.01}, False),                  # a real edge on real data: about a point
    ({"accuracy_edge": -0.2}, False),
    ({"accuracy_edge": 0.6}, True),                    # a label copy
    ({"accuracy_edge": "0.3"}, True),                  # as read back from a registry tag
    ({"accuracy_edge": math.nan}, False),
    ({"accuracy_edge": None}, False),
    ({}, False),                                       # no accuracy compared (e.g. no baselines)
    ({"accuracy_edge": "n/a"}, False),
])
def test_edge_suspicious_boundary(comparison, suspicious) -> None:
    from entasis.models.train import SUSPICIOUS_EDGE, is_edge_suspicious

    assert SUSPICIOUS_EDGE == 0.05
    assert is_edge_suspicious(comparison) is suspicious
