"""Hit rates, the trailing-majority baseline, the live window and the reliability bins, at their edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from entasis.api.analytics import (
    Outcome,
    baseline_calls,
    class_name,
    hit_rate,
    hit_rate_over_time,
    live_hit_rate,
    live_window,
    majority,
    reliability,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def o(day: int, pred: int, actual: int | None, *, h: int = 7, asset: str = "BTC/USDT", conf: float = 50.0,
      target_day: int | None = None) -> Outcome:
    as_of = T0 + timedelta(days=day)
    target = T0 + timedelta(days=day + h if target_day is None else target_day)
    return Outcome(asset=asset, horizon=h, as_of=as_of, target_date=target, predicted_class=pred,
                   confidence=conf, actual_class=actual)


@pytest.mark.parametrize(("classes", "want"), [
    ([], None),
    ([2], 2),
    ([0, 2], 0),            # tie without neutral: the lower class
    ([0, 1, 2], 1),         # three-way tie: neutral
    ([0, 0, 1, 1], 1),      # tie with neutral: neutral
    ([2, 2, 1, 0, 0], 0),   # tie bearish / bullish at 2: the lower class
    ([2, 2, 2, 1, 1], 2),
])
def test_majority_ties(classes: list[int], want: int | None) -> None:
    assert majority(classes) == want


def test_class_name_rejects_unknown_classes() -> None:
    assert class_name(None) is None and class_name(2) == "bullish"
    with pytest.raises(ValueError, match="0, 1 or 2"):
        class_name(3)


def test_baseline_uses_only_outcomes_known_at_as_of() -> None:
    rows = [
        o(0, 2, 0),               # target day 7
        o(7, 2, 2),               # as_of day 7: day-0 outcome (target 7) is known exactly at as_of
        o(6, 0, 1),               # as_of day 6: nothing known yet (first target is day 7)
        o(14, 1, None),           # as_of 14: outcomes with target 7 (bearish) and 13 (neutral) and 14 (bullish)
    ]
    calls = baseline_calls(rows)
    assert calls[0] is None and calls[2] is None
    assert calls[1] == 0              # target_date == as_of counts as known
    assert calls[3] == 1              # one each of 0, 1, 2 -> tie -> neutral
    # appending a later outcome never changes an earlier call (no look-ahead)
    more = [*rows, o(15, 2, 2)]
    assert baseline_calls(more)[:4] == calls


def test_baseline_keeps_assets_and_horizons_apart() -> None:
    rows = [o(0, 2, 2), o(0, 0, 0, asset="ETH/USDT"), o(0, 0, 0, h=14), o(30, 1, None),
            o(30, 1, None, asset="ETH/USDT")]
    calls = baseline_calls(rows)
    assert calls[3] == 2 and calls[4] == 0


def test_hit_rate_empty_and_partial() -> None:
    assert hit_rate([], []).model is None and hit_rate([], []).baseline is None
    rows = [o(0, 2, 2), o(7, 2, 0), o(14, 1, None)]
    calls = baseline_calls(rows)
    hr = hit_rate(rows, calls)
    assert hr.n_reconciled == 2 and hr.model == 0.5
    assert hr.n_compared == 1 and hr.baseline == 0.0 and hr.model_on_compared == 0.0  # baseline said bullish
    with pytest.raises(ValueError, match="baseline calls"):
        hit_rate(rows, calls[:1])


def test_live_window_is_30_days_up_to_the_last_outcome_exclusive_start() -> None:
    rows = [o(0, 1, 1, target_day=10), o(1, 1, 1, target_day=40), o(2, 1, 0, target_day=41),
            o(3, 1, None, target_day=90)]
    # last reconciled target is day 41; the window is (day 11, day 41]: day 10 is out, day 40 and 41 in
    assert live_window(rows) == [1, 2]
    # exactly 30 days before the end is excluded
    assert live_window([o(0, 1, 1, target_day=11), o(1, 1, 1, target_day=41)]) == [1]
    assert live_window([o(0, 1, None)]) == []
    hr = live_hit_rate(rows, baseline_calls(rows))
    assert hr.n_reconciled == 2 and hr.model == 0.5


def test_hit_rate_over_time_is_expanding_by_target_date() -> None:
    rows = [o(7, 2, 0), o(0, 2, 2), o(20, 1, None)]
    pts = hit_rate_over_time(rows, baseline_calls(rows))
    assert [p["model"] for p in pts] == [1.0, 0.5] and [p["n"] for p in pts] == [1, 2]
    assert pts[0]["baseline"] is None and pts[1]["baseline"] == 0.0


def test_reliability_bins_edges() -> None:
    rows = [o(0, 1, 1, conf=100 / 3), o(1, 1, 0, conf=100.0), o(2, 1, 1, conf=99.999), o(3, 1, None, conf=60)]
    bins = reliability(rows, bins=2)
    assert [b["n"] for b in bins] == [1, 2]          # 1/3 in the first bin, 1.0 and 0.99999 in the last
    assert bins[0]["observed"] == 1.0 and bins[1]["observed"] == 0.5
    assert bins[1]["mean_confidence"] == pytest.approx((1.0 + 0.99999) / 2)
    assert reliability([]) == []
    with pytest.raises(ValueError, match="bins"):
        reliability(rows, bins=0)


def test_live_window_counts_whole_utc_days_as_sql_live_scores() -> None:
    """The edges of ml.live_scores (migration 0506): target UTC day d in (E - 30, E], E the last target's UTC day."""
    end = T0 + timedelta(days=41, hours=6)
    rows = [
        o(0, 1, 1, target_day=41),                                                   # end's day, 00:00: in
        o(1, 1, 1, target_day=11),                                                   # E - 30 exactly: out
        o(2, 1, 1, target_day=12),                                                   # E - 29: in
        Outcome("BTC/USDT", 7, T0, T0 + timedelta(days=11, hours=23), 1, 50.0, 1),   # day E - 30 at 23:00: out
        Outcome("BTC/USDT", 7, T0, end, 1, 50.0, 0),                                 # the latest target
    ]
    # by timestamps, (end - 30 days, end] would take day 11 at 23:00; whole UTC days do not
    assert live_window(rows) == [0, 2, 4]
    # a time given in another zone counts by its UTC day (23:30 at -02:00 is 01:30 UTC the next day)
    from datetime import timezone

    west = timezone(timedelta(hours=-2))
    late = Outcome("BTC/USDT", 7, T0, datetime(2024, 1, 12, 23, 30, tzinfo=west), 1, 50.0, 1)  # UTC 13 Jan = E - 29: in
    assert live_window([*rows, late]) == [0, 2, 4, 5]
    assert live_window(rows, days=0) == []
    assert live_window(rows, days=1) == [0, 4]
