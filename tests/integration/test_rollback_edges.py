"""The rollback rule at its edges, against a real MLflow registry and real PostgreSQL: a partial dip
(below the threshold on all but one day) does not roll back; accuracy exactly at the threshold is not
below it; ``min_predictions`` is inclusive; a lone champion cannot roll back and says why; a dry run
leaves ``@champion`` and ``ml.champions`` alone; a real rollback is mirrored in ``ml.champions``.

Versions are registered without artifacts (the rule never loads the model); the live record is
written as reconciled ``ml.predictions`` rows with an exact number of correct outcomes per day.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from entasis.monitor.rollback import check_live_accuracy_and_rollback

NAME = "entasis-pooled-7d"
KW: dict[str, Any] = {"threshold": 0.4, "days": 5, "window_days": 10, "min_predictions": 20}
T0 = datetime(2021, 1, 1, tzinfo=UTC)


def _versions(n: int) -> list[str]:
    """Register ``n`` versions; the last is @champion, the ones before it were champions in turn."""
    from entasis.registry import models as reg
    from entasis.registry.tracking import client

    c = client()
    c.create_registered_model(NAME)
    out = []
    for _ in range(n):
        mv = c.create_model_version(NAME, source="file:///nonexistent/never-loaded")
        out.append(str(mv.version))
        reg.set_alias(NAME, reg.CHAMPION, out[-1])
    return out


def _live(version: str, correct_per_day: list[int], per_day: int = 2) -> None:
    """Reconciled predictions of ``version``: ``per_day`` a day, ``correct_per_day[i]`` of them right."""
    from entasis.store.db import connect
    from entasis.store.upsert import upsert_frame

    rows = []
    for i, k in enumerate(correct_per_day):
        for j in range(per_day):
            ok = j < k
            rows.append({"asset": f"A{j}/USDT", "horizon": 7, "as_of": T0 + timedelta(days=i),
                         "model_version": f"{NAME}/{version}", "predicted_class": 2, "p_bearish": 0.2,
                         "p_neutral": 0.3, "p_bullish": 0.5, "confidence": 50.0, "confidence_level": "medium",
                         "target_date": T0 + timedelta(days=i + 7), "published_at": T0 + timedelta(days=i),
                         "actual_class": 2 if ok else 0, "realized_return": 0.05 if ok else -0.05, "correct": ok})
    with connect() as conn:
        upsert_frame(conn, "ml.predictions", pd.DataFrame(rows), ["asset", "horizon", "as_of", "model_version"])


def _champion() -> str:
    from entasis.registry import models as reg

    mv = reg.get_version_by_alias(NAME, reg.CHAMPION)
    assert mv is not None
    return str(mv.version)


def _mirrored() -> Any:
    from entasis.store.db import connect

    with connect() as conn:
        return conn.execute("SELECT version FROM ml.champions WHERE asset = 'pooled' AND horizon = 7").fetchone()


# 20 days, 2 predictions a day: a 10-day window holds 20 outcomes; 8 right is exactly 0.4.
COLLAPSED = [0] * 20
EXACTLY_AT = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0] * 2  # every 10-day window: 8 of 20 right = 0.400
PARTIAL_DIP = [0] * 15 + [2, 2, 1, 1, 2]  # last window 8/20 = 0.40 (not below); the 4 before it below


@pytest.mark.parametrize(("pattern", "action", "why"), [
    (COLLAPSED, "rollback", "stayed below"),
    (EXACTLY_AT, "no_rollback", "reached 0.400 >= threshold"),
    (PARTIAL_DIP, "no_rollback", "reached 0.400 >= threshold"),
])
def test_rollback_table(db_url: str, pattern: list[int], action: str, why: str) -> None:
    v1, v2 = _versions(2)
    _live(v2, pattern)
    d = check_live_accuracy_and_rollback(None, 7, now=T0 + timedelta(days=40), **KW)
    assert d.action == action and why in d.reason, d.reason
    assert _champion() == (v1 if action == "rollback" else v2)
    if action == "rollback":
        assert d.new_champion_version == v1 and _mirrored() == (v1,)


def test_a_rollback_records_the_restored_versions_own_trained_at(db_url: str) -> None:
    from entasis.publish.champions import record_champion
    from entasis.registry import models as reg
    from entasis.store.db import connect

    v1, v2 = _versions(2)
    reg.set_version_tags(NAME, v1, {"trained_at": "2020-12-01T00:00:00+00:00"})
    with connect() as conn:  # v2 serving, as its promotion recorded it
        record_champion(conn, asset=None, horizon=7, model_name=NAME, version=v2, promoted_at=T0,
                        trained_at=T0 - timedelta(days=2))
    _live(v2, COLLAPSED)
    d = check_live_accuracy_and_rollback(None, 7, now=T0 + timedelta(days=40), **KW)
    assert d.action == "rollback" and _mirrored() == (v1,)
    with connect() as conn:
        row = conn.execute("SELECT trained_at, promoted_at FROM ml.champions").fetchone()
    assert row == (datetime(2020, 12, 1, tzinfo=UTC), d.decided_at)


@pytest.mark.parametrize(("need", "judged"), [(20, True), (21, False)])
def test_min_predictions_is_inclusive(db_url: str, need: int, judged: bool) -> None:
    v1, v2 = _versions(2)
    _live(v2, COLLAPSED)  # exactly 20 outcomes in every window
    d = check_live_accuracy_and_rollback(None, 7, **{**KW, "min_predictions": need})
    assert (d.action == "rollback") is judged
    if not judged:
        assert "not enough reconciled predictions" in d.reason
        assert _champion() == v2


def test_lone_champion_cannot_roll_back_and_says_why(db_url: str) -> None:
    (v1,) = _versions(1)
    _live(v1, COLLAPSED)
    d = check_live_accuracy_and_rollback(None, 7, **KW)
    assert d.action == "no_rollback"
    assert "stayed below" in d.reason and "no earlier champion" in d.reason
    assert _champion() == v1


def test_dry_run_leaves_champion_and_mirror_alone(db_url: str) -> None:
    from entasis.backtest.promotion import recorded_decisions

    v1, v2 = _versions(2)
    _live(v2, COLLAPSED)
    before = _mirrored()
    d = check_live_accuracy_and_rollback(None, 7, dry_run=True, **KW)
    assert d.action == "rollback"  # what would happen
    assert _champion() == v2 and _mirrored() == before
    assert recorded_decisions(NAME) == []
    # the same check for real rolls back and is recorded and mirrored
    d = check_live_accuracy_and_rollback(None, 7, **KW)
    assert d.action == "rollback" and _champion() == v1 and _mirrored() == (v1,)
    assert [r["action"] for r in recorded_decisions(NAME)] == ["rollback"]


def test_no_champion_at_all(db_url: str) -> None:
    from entasis.registry.tracking import client

    client().create_registered_model(NAME)
    d = check_live_accuracy_and_rollback(None, 7, **KW)
    assert d.action == "no_rollback" and "has no @champion" in d.reason
