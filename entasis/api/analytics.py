"""Pure read-side figures the API and dashboard show beside each prediction: hit rates, the live
baseline, the rolling live window and the reliability diagram.

They are computed from published rows only (``ml.predictions`` as the reader sees it), never by
re-running a model. The live baseline is the naive rule an analyst could have applied with the same
knowledge: at a prediction's ``as_of`` it predicts the most frequent *realised* class among that
asset and horizon's earlier predictions whose target date had already passed (outcomes known at
``as_of``, so no look-ahead). Its ties go to neutral, then to the lower class; with no known outcome
yet it makes no call, and hit rates compare model and baseline over the same rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from entasis import domain

BASELINE_NAME = "trailing_majority"
LIVE_WINDOW_DAYS = 30  # as ml.model_status: reconciled predictions with target UTC day in the 30 days to the last


@dataclass(frozen=True)
class Outcome:
    """One published prediction, as far as scoring needs it (actual_class None = not yet reconciled)."""

    asset: str
    horizon: int
    as_of: datetime
    target_date: datetime
    predicted_class: int
    confidence: float  # max probability x 100, as published
    actual_class: int | None


def class_name(c: int | None) -> str | None:
    return None if c is None else domain.class_name(c)


def majority(classes: Iterable[int]) -> int | None:
    """Most frequent class; ties go to neutral (1), then to the lower class; None when empty."""
    counts = Counter(classes)
    if not counts:
        return None
    best = max(counts.values())
    tied = [c for c in (1, 0, 2) if counts.get(c, 0) == best]
    return tied[0]


def baseline_calls(rows: Sequence[Outcome]) -> list[int | None]:
    """The trailing-majority baseline's class for each row (same order), from outcomes known at its as_of.

    Rows of different assets or horizons never inform each other.
    """
    out: list[int | None] = [None] * len(rows)
    groups: dict[tuple[str, int], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r.asset, r.horizon), []).append(i)
    for idx in groups.values():
        settled = sorted((rows[i] for i in idx if rows[i].actual_class is not None), key=lambda r: r.target_date)
        counts: Counter[int] = Counter()
        k = 0
        for i in sorted(idx, key=lambda i: rows[i].as_of):
            t = rows[i].as_of
            while k < len(settled) and settled[k].target_date <= t:
                counts[int(settled[k].actual_class)] += 1  # type: ignore[arg-type]  # settled: not None
                k += 1
            out[i] = majority(counts.elements())
    return out


@dataclass(frozen=True)
class HitRate:
    n_reconciled: int
    model: float | None
    n_compared: int  # rows where the baseline could make a call
    model_on_compared: float | None
    baseline: float | None
    baseline_name: str = BASELINE_NAME

    def as_dict(self) -> dict[str, Any]:
        return {"n_reconciled": self.n_reconciled, "model": self.model, "n_compared": self.n_compared,
                "model_on_compared": self.model_on_compared, "baseline": self.baseline,
                "baseline_name": self.baseline_name}


def hit_rate(rows: Sequence[Outcome], calls: Sequence[int | None]) -> HitRate:
    """Share of reconciled rows the model got right, and the baseline's beside it on the rows it called."""
    if len(rows) != len(calls):
        raise ValueError(f"{len(rows)} rows but {len(calls)} baseline calls")
    settled = [(r, b) for r, b in zip(rows, calls, strict=True) if r.actual_class is not None]
    n = len(settled)
    model = sum(r.predicted_class == r.actual_class for r, _ in settled) / n if n else None
    both = [(r, b) for r, b in settled if b is not None]
    m = len(both)
    return HitRate(
        n_reconciled=n, model=model, n_compared=m,
        model_on_compared=sum(r.predicted_class == r.actual_class for r, _ in both) / m if m else None,
        baseline=sum(b == r.actual_class for r, b in both) / m if m else None,
    )


def utc_day(t: datetime) -> date:
    return t.astimezone(UTC).date()


def live_window(rows: Sequence[Outcome], days: int = LIVE_WINDOW_DAYS) -> list[int]:
    """Indices of the reconciled rows in the window of SQL ml.live_scores (migration 0506), ending on the latest
    reconciled target date as ml.model_status's does: target UTC day d with E - days < d <= E, E the UTC day
    of that latest target date (whole days; exactly ``days`` before E is out). The live baseline is scored
    on these rows, beside the model's figure from ml.live_scores itself."""
    settled = [i for i, r in enumerate(rows) if r.actual_class is not None]
    if not settled or days < 1:
        return []
    end = max(utc_day(rows[i].target_date) for i in settled)
    start = end - timedelta(days=days)
    return [i for i in settled if start < utc_day(rows[i].target_date) <= end]


def live_hit_rate(rows: Sequence[Outcome], calls: Sequence[int | None], days: int = LIVE_WINDOW_DAYS) -> HitRate:
    idx = live_window(rows, days)
    return hit_rate([rows[i] for i in idx], [calls[i] for i in idx])


def hit_rate_over_time(rows: Sequence[Outcome], calls: Sequence[int | None]) -> list[dict[str, Any]]:
    """Expanding hit rates by target date (one point per reconciled row, oldest first): model, baseline."""
    order = sorted((i for i, r in enumerate(rows) if r.actual_class is not None), key=lambda i: rows[i].target_date)
    out, hits, n, b_hits, b_n = [], 0, 0, 0, 0
    for i in order:
        r, b = rows[i], calls[i]
        n += 1
        hits += r.predicted_class == r.actual_class
        if b is not None:
            b_n += 1
            b_hits += b == r.actual_class
        out.append({"target_date": r.target_date, "model": hits / n, "baseline": b_hits / b_n if b_n else None,
                    "n": n})
    return out


def reliability(rows: Sequence[Outcome], bins: int = 5) -> list[dict[str, Any]]:
    """Reliability diagram of the published confidence: per equal-width bin of the predicted class's
    probability (1/3 to 1), its mean and the share of those predictions that came true. Empty bins are
    left out."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1; got {bins}")
    lo, hi = 1.0 / 3.0, 1.0
    width = (hi - lo) / bins
    acc: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for r in rows:
        if r.actual_class is None:
            continue
        p = r.confidence / 100.0
        k = min(bins - 1, max(0, int((p - lo) // width)))
        acc[k].append((p, r.predicted_class == r.actual_class))
    out = []
    for k, items in enumerate(acc):
        if items:
            out.append({"bin_lo": lo + k * width, "bin_hi": lo + (k + 1) * width, "n": len(items),
                        "mean_confidence": sum(p for p, _ in items) / len(items),
                        "observed": sum(ok for _, ok in items) / len(items)})
    return out
