"""The soak's random fault stream and its table comparison rules."""

from __future__ import annotations

import pytest

from entasis.sim.faults import KINDS
from entasis.soak.faults import DEFAULT_MIX, RandomFaults
from entasis.soak.runner import VOLATILE, SoakPlan, _revisions, _schedule


def test_fault_rate_and_kinds() -> None:
    f = RandomFaults(0.1, seed=3)
    fired = [f.fire("binance:/api/v3/klines", {}) for _ in range(20_000)]
    n = sum(1 for x in fired if x)
    assert 1700 < n < 2300  # ~10%
    assert f.requests == 20_000 and sum(f.injected.values()) == n
    assert set(f.injected) == set(DEFAULT_MIX)
    assert set(DEFAULT_MIX) <= set(KINDS)
    assert all(len(x) <= 1 for x in fired)


def test_same_seed_same_faults_and_zero_rate_none() -> None:
    a, b = RandomFaults(0.2, seed=5), RandomFaults(0.2, seed=5)
    seq_a = [[f.kind for f in a.fire("*", {})] for _ in range(500)]
    seq_b = [[f.kind for f in b.fire("*", {})] for _ in range(500)]
    assert seq_a == seq_b
    z = RandomFaults(0.0, seed=5)
    assert not any(z.fire("*", {}) for _ in range(1000))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 2.0])
def test_bad_rate_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="fault rate"):
        RandomFaults(rate, seed=1)


def test_armed_faults_still_fire_beside_random_ones() -> None:
    f = RandomFaults(0.0, seed=1)
    f.add("binance:/api/v3/klines", "500", times=1)
    assert [x.kind for x in f.fire("binance:/api/v3/klines", {})] == ["500"]
    assert f.fire("binance:/api/v3/klines", {}) == []


def test_schedule_is_hourly_with_publish_every_6h_and_monitor_daily() -> None:
    plan = SoakPlan(days=1)
    sched = _schedule(plan)
    assert len(sched) == 24
    runs = [r for _, rs in sched for r in rs]
    assert sum(d == "entasis_ingest" for d, _ in runs) == 24
    assert sum(d == "entasis_features" for d, _ in runs) == 24
    assert sum(d == "entasis_publish" for d, _ in runs) == 4
    assert sum(d == "entasis_monitor" for d, _ in runs) == 1
    assert all(at.minute == 5 for d, at in runs if d == "entasis_ingest")
    assert all(b < plan.start + __import__("datetime").timedelta(days=1) for _, b in _revisions(plan).values())


def test_only_wall_clock_and_fault_bookkeeping_columns_are_left_out() -> None:
    allowed = {"last_run", "status", "message", "updated_at", "detected_at", "resolved_at", "built_at"}
    assert {c for cols in VOLATILE.values() for c in cols} <= allowed
    assert "market.candles" not in VOLATILE and "features.bars" not in VOLATILE
    assert "ml.predictions" not in VOLATILE


def test_report_never_carries_the_planted_secret() -> None:
    import json

    from entasis.soak.runner import plan_dict

    d = plan_dict(SoakPlan(days=1, secret="Pl4nted-unit-secret"))
    assert "Pl4nted-unit-secret" not in json.dumps(d, default=str)
    assert d["secret_planted"] is True and plan_dict(SoakPlan())["secret_planted"] is False
