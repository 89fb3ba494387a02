"""Paging time series the way venues do, with the data faults applied on the way out.

A *source* yields records in a time window; :func:`page` picks what one request returns (forward
from a start, or backward from an end, up to a limit) after the data faults of that request
(overlap, missing, revise, malformed) have had their say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from entasis.sim.faults import MALFORMED_MODES, Fault

I64 = NDArray[np.int64]


@dataclass
class Page:
    """Records of one response before venue formatting: open times (ms) and value columns."""

    ts: I64
    cols: dict[str, NDArray[Any]]

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, idx: Any) -> Page:
        return Page(self.ts[idx], {k: v[idx] for k, v in self.cols.items()})


class Source(Protocol):
    step_ms: int  # spacing of records (for overlap and the size of a window)
    price_dp: int | None  # decimals prices are rounded to (None: as stored)
    dense: bool  # one record per step (a window of limit steps holds limit records)

    def window(self, lo: int, hi: int) -> Page:
        """Records with lo <= ts <= hi, in time order."""
        ...


@dataclass
class ArraySource:
    """A source over precomputed arrays (replayed files, funding, open interest)."""

    ts: I64
    cols: dict[str, NDArray[Any]]
    step_ms: int
    price_dp: int | None = None
    dense: bool = False

    def window(self, lo: int, hi: int) -> Page:
        i = int(np.searchsorted(self.ts, lo, side="left"))
        j = int(np.searchsorted(self.ts, hi, side="right"))
        return Page(self.ts[i:j], {k: v[i:j] for k, v in self.cols.items()})


PRICE_FIELDS = ("open", "high", "low", "close")


def page(
    source: Source, *, lo: int, hi: int, limit: int, backward: bool, faults: list[Fault], now: int
) -> Page:
    """The records one request returns: ``limit`` from ``lo`` forward, or from ``hi`` backward."""
    hi = min(hi, now - 1)
    step = source.step_ms
    for f in faults:
        if f.kind == "overlap":
            shift = int(f.params["n"]) * step
            if backward:
                hi = min(hi + shift, now - 1)
            else:
                lo -= shift
    if hi < lo or limit <= 0:
        return Page(np.empty(0, dtype=np.int64), {})
    extra = sum(
        min(-(-(int(f.params["end"]) - int(f.params["start"])) // step), 100_000) for f in faults if f.kind == "missing"
    )
    if source.dense:  # only generate what the page can need
        span = (limit + extra + 1) * step
        got = source.window(max(lo, hi - span), hi) if backward else source.window(lo, min(hi, lo + span))
    else:
        got = source.window(lo, hi)
    for f in faults:
        if f.kind == "missing":
            got = got.take((got.ts < f.params["start"]) | (got.ts >= f.params["end"]))
    got = got.take(slice(max(len(got) - limit, 0), None)) if backward else got.take(slice(0, limit))
    got = Page(got.ts, {k: v.copy() for k, v in got.cols.items()})
    for f in faults:
        if f.kind == "revise":
            _revise(got, f, source.price_dp)
    for f in faults:
        if f.kind == "malformed":
            _malform(got, f)
    return got


def _revise(pg: Page, f: Fault, dp: int | None) -> None:
    hit = np.flatnonzero(pg.ts == f.params["ts"])
    name = str(f.params["field"])
    if len(hit) == 0:
        return
    if name not in pg.cols:
        raise ValueError(f"revise fault: field {name!r} is not one of {sorted(pg.cols)}")
    col = pg.cols[name].astype(np.float64)
    col[hit] = col[hit] * float(f.params["factor"])
    if dp is not None and name in PRICE_FIELDS:
        col[hit] = np.round(col[hit], dp)
    pg.cols[name] = col
    if name in PRICE_FIELDS and all(c in pg.cols for c in PRICE_FIELDS):
        o, h, lo_, c = (pg.cols[k].astype(np.float64) for k in PRICE_FIELDS)
        pg.cols["high"] = np.maximum.reduce([h, o, c, lo_])
        pg.cols["low"] = np.minimum.reduce([lo_, o, c, h])


def _malform(pg: Page, f: Fault) -> None:
    n = min(int(f.params.get("n", 1)), len(pg))
    if n <= 0:
        return
    rows = np.unique(np.linspace(0, len(pg) - 1, n).round().astype(int))
    candle = all(c in pg.cols for c in (*PRICE_FIELDS, "volume"))
    value_col = next(iter(pg.cols))
    for i, row in enumerate(rows):
        mode = f.params.get("mode") or MALFORMED_MODES[i % len(MALFORMED_MODES)]
        if candle and mode == "high_lt_low":
            h, lo_ = float(pg.cols["high"][row]), float(pg.cols["low"][row])
            pg.cols["high"] = pg.cols["high"].astype(object)
            pg.cols["low"] = pg.cols["low"].astype(object)
            pg.cols["high"][row], pg.cols["low"][row] = (lo_, h) if lo_ < h else (lo_ * 0.99, h)
        elif candle and mode == "zero_price":
            pg.cols["open"] = pg.cols["open"].astype(object)
            pg.cols["open"][row] = 0.0
        elif mode == "negative_volume":
            name = "volume" if candle else value_col
            pg.cols[name] = pg.cols[name].astype(object)
            v = float(pg.cols[name][row])
            pg.cols[name][row] = -v if v > 0 else -1.0
        else:  # non_numeric, and the candle-only modes on other series
            name = "close" if candle else value_col
            pg.cols[name] = pg.cols[name].astype(object)
            pg.cols[name][row] = "abc"


def fmt(x: Any, dp: int | None) -> str:
    """A number as the venues print it: fixed decimals, or the shortest exact form; strings pass."""
    if isinstance(x, str):
        return x
    v = float(x)
    if v != v:  # NaN from a replayed bad cell
        return "NaN"
    if dp is not None and abs(v) < 2e15 * 10.0**-dp:
        # the double is within half a unit of the last decimal: fixed notation prints the decimal exactly
        return f"{v:.{dp}f}"
    short = np.format_float_positional(v, trim="-")
    if dp is None:
        return short
    decimals = len(short.split(".")[1]) if "." in short else 0
    if decimals <= dp:  # exact: pad the shortest form, avoiding binary noise like 1181303832.16540003
        return short + ("" if decimals else ".") + "0" * (dp - decimals) if dp else short
    return f"{v:.{dp}f}"


def fmt_trim(x: Any, dp: int | None) -> str:
    """Like :func:`fmt` but without trailing zeros (Bybit's style)."""
    s = fmt(x, dp)
    if "." in s and s not in ("NaN",) and not isinstance(x, str):
        s = s.rstrip("0").rstrip(".")
    return s
