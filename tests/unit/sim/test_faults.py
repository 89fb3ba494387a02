"""Fault arming rules and how data faults reshape a page of records."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from entasis.sim.faults import Fault, FaultInjector
from entasis.sim.series import ArraySource, page

H = 3_600_000
ROUTE = "binance:/api/v3/klines"


def _candles(n: int = 48) -> ArraySource:
    ts = np.arange(n, dtype=np.int64) * H
    close = 100.0 + np.arange(n)
    return ArraySource(ts, {"open": close - 0.5, "high": close + 1, "low": close - 1, "close": close,
                            "volume": np.full(n, 10.0), "quote_volume": np.full(n, 1000.0)}, H, 2, dense=True)


def test_after_and_times() -> None:
    inj = FaultInjector()
    inj.add(ROUTE, "429", times=2, after=1)
    fired = [bool(inj.fire(ROUTE, {})) for _ in range(5)]
    assert fired == [False, True, True, False, False]
    inj.add(ROUTE, "500", times=None, after=3)
    kinds = [[f.kind for f in inj.fire(ROUTE, {})] for _ in range(5)]
    assert kinds == [[], [], [], ["500"], ["500"]]
    assert inj.fire("binance:/fapi/v1/klines", {}) == []
    inj.clear()
    assert inj.fire(ROUTE, {}) == [] and inj.armed == []


def test_symbol_filter_and_wildcard() -> None:
    inj = FaultInjector()
    inj.add(ROUTE, "auth", symbol="ETHUSDT", times=None)
    assert inj.fire(ROUTE, {"symbol": "BTCUSDT"}) == []
    assert [f.kind for f in inj.fire(ROUTE, {"symbol": "ETHUSDT"})] == ["auth"]
    inj.add("*", "503")
    assert [f.kind for f in inj.fire("bybit:/v5/market/kline", {})] == ["503"]


@pytest.mark.parametrize(("args", "kwargs", "msg"), [
    ((ROUTE, "boom"), {}, "unknown fault kind"),
    (("klines", "429"), {}, "must look like"),
    ((ROUTE, "429"), {"times": 0}, "positive count"),
    ((ROUTE, "missing"), {"start": "2022-01-02"}, "needs start and end"),
    ((ROUTE, "missing"), {"start": "2022-01-02", "end": "2022-01-01"}, "end > start"),
    ((ROUTE, "revise"), {}, "needs ts"),
    ((ROUTE, "malformed"), {"mode": "weird"}, "malformed mode"),
    ((ROUTE, "slow"), {"retry_after": 3}, "takes"),
])
def test_bad_arguments_are_named(args: tuple[str, str], kwargs: dict[str, object], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        FaultInjector().add(*args, **kwargs)  # type: ignore[arg-type]


def _fire(kind: str, **params: Any) -> list[Fault]:
    inj = FaultInjector()
    inj.add(ROUTE, kind, **params)
    return inj.fire(ROUTE, {})


def test_page_forward_backward_and_limits() -> None:
    src = _candles()
    fwd = page(src, lo=5 * H, hi=10**12, limit=10, backward=False, faults=[], now=48 * H)
    assert list(fwd.ts // H) == list(range(5, 15))
    back = page(src, lo=0, hi=10**12, limit=10, backward=True, faults=[], now=48 * H)
    assert list(back.ts // H) == list(range(38, 48))
    early = page(src, lo=0, hi=10**12, limit=100, backward=True, faults=[], now=20 * H)
    assert early.ts.max() == 19 * H  # nothing at or after now


def test_overlap_missing_revise_malformed() -> None:
    src = _candles()
    ov = page(src, lo=10 * H, hi=10**12, limit=5, backward=False, faults=_fire("overlap", n=3), now=48 * H)
    assert list(ov.ts // H) == [7, 8, 9, 10, 11]
    gap = page(src, lo=0, hi=10**12, limit=10, backward=False, faults=_fire("missing", start=3 * H, end=6 * H),
               now=48 * H)
    assert list(gap.ts // H) == [0, 1, 2, 6, 7, 8, 9, 10, 11, 12]  # later records fill the page
    rev = page(src, lo=0, hi=10**12, limit=10, backward=False,
               faults=_fire("revise", ts=4 * H, field="close", factor=1.05), now=48 * H)
    assert rev.cols["close"][4] == pytest.approx(104 * 1.05) and rev.cols["high"][4] >= rev.cols["close"][4]
    assert src.cols["close"][4] == 104.0  # the source itself is untouched
    bad = page(src, lo=0, hi=10**12, limit=8, backward=False, faults=_fire("malformed", n=4), now=48 * H)
    rows = [(bad.cols["open"][i], bad.cols["high"][i], bad.cols["low"][i], bad.cols["close"][i],
             bad.cols["volume"][i]) for i in range(8)]
    assert any(float(h) < float(lo) for _, h, lo, _, _ in rows)
    assert any(float(v) < 0 for *_, v in rows)
    assert any(c == "abc" for *_, c, _ in rows)
    assert any(float(o) == 0.0 for o, *_ in rows)
