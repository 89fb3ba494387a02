"""The incremental, watermarked collection loop shared by candles, funding and open interest.

One run of one series:

1. read the watermark and the open gaps from ``market.ingest_state`` / ``market.gaps``;
2. re-fetch every open gap (each its own batch), then fetch from ``--since`` (backfill) or from
   the watermark (minus a small look-back, so late revisions of the last bars are picked up) up to
   ``until``, in deterministic request windows that each fit one page;
3. per batch of pages: drop exact repeats (overlapping pages), drop rows not final at ``until`` (the
   incomplete current candle), validate (a time served twice with different values keeps its first
   version and quarantines the others), and in ONE transaction upsert the good rows, quarantine the
   bad ones, record new gaps, resolve filled ones and move the watermark forward.

A failure (retries exhausted, a fatal exchange error) rolls back the batch in flight and marks the
series ``failed``; nothing committed is lost and the next run starts from the last committed
watermark. No function here reads the clock: ``until`` comes from the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from entasis.collect.grid import Gap, ceil_to, missing_runs, windows
from entasis.collect.state import (
    SeriesKey,
    mark_failed,
    open_gaps,
    quarantine,
    read_watermark,
    record_gaps,
    refresh_gaps,
    save_state,
)
from entasis.config import get_settings
from entasis.domain import from_ms, to_ms
from entasis.store.db import connect

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import psycopg

    from entasis.store.upsert import UpsertResult

log = logging.getLogger(__name__)

#: Where a first run with no ``--since`` starts: before any venue we collect listed anything.
DEFAULT_SINCE = "2017-01-01"


def _default_since() -> str:
    """Where a never-collected series starts: universe.backfill_since from settings."""
    return get_settings().universe.backfill_since or DEFAULT_SINCE
#: Pages per committed batch: bounds memory on long backfills and how much a failure rolls back.
BATCH_PAGES = 50


class Progress(Protocol):
    """What the CLI's progress bar listens to."""

    def series_started(self, key: SeriesKey, pages: int) -> None: ...
    def page_done(self, key: SeriesKey, rows: int) -> None: ...
    def series_done(self, key: SeriesKey) -> None: ...


class NoProgress:
    def series_started(self, key: SeriesKey, pages: int) -> None:
        pass

    def page_done(self, key: SeriesKey, rows: int) -> None:
        pass

    def series_done(self, key: SeriesKey) -> None:
        pass


@dataclass
class SeriesSpec:
    """How to fetch, check and store one kind of series."""

    table: str
    #: column -> value filters selecting this series' rows in ``table``
    filters: dict[str, str]
    #: bar length for grid/gap logic; None for irregular series (funding)
    step_ms: int | None
    #: span of one request window (fits one page)
    window_ms: int
    fetch: Callable[[int, int], pd.DataFrame]
    #: (frame, stored context closes) -> (row, rule) violations
    check: Callable[[pd.DataFrame, np.ndarray], pd.DataFrame]
    #: good frame -> table rows
    rows: Callable[[pd.DataFrame], pd.DataFrame]
    write: Callable[[psycopg.Connection, pd.DataFrame], UpsertResult]
    #: bars re-fetched before the watermark on incremental runs
    lookback: int = 0
    #: stored column giving outlier context (candles: close)
    context_col: str | None = None
    context_rows: int = 0
    #: where the grid starts (weeks start on Mondays)
    origin_ms: int = 0
    #: the venue fills a page from the window's end (Bybit) rather than its start (Binance)
    backward: bool = False
    #: most records one request returns; irregular series (no step) continue only after a full page
    page_limit: int = 1000


def keyed_rows(good: pd.DataFrame, columns: list[str], key: dict[str, str]) -> pd.DataFrame:
    """A series' table rows: its key columns (constant, in ``key``'s order: the spec's ``filters``)
    then ``columns`` of the checked frame."""
    out = good[columns].copy()
    for i, (col, value) in enumerate(key.items()):
        out.insert(i, col, value)
    return out


def run_bounds(since: datetime | str | int | None, until: datetime | str | int) -> tuple[int | None, int]:
    """A collection run's (since, until) as epoch ms, refused when ``since`` is not before ``until``."""
    until_ms = to_ms(until)
    since_ms = to_ms(since) if since is not None else None
    if since_ms is not None and since_ms >= until_ms:
        raise ValueError(f"since ({since}) must be before until ({until})")
    return since_ms, until_ms


@dataclass
class SeriesResult:
    key: SeriesKey
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    gaps_new: int = 0
    gaps_resolved: int = 0
    incomplete_skipped: int = 0
    pages: int = 0
    rows_fetched: int = 0
    watermark: int | None = None
    status: str = "ok"
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def tick(self, name: str, since: float) -> float:
        """Add the time since ``since`` to timing ``name``; returns now (perf_counter)."""
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - since
        return now

    def add(self, other: SeriesResult) -> None:
        for k, v in other.timings.items():
            self.timings[k] = self.timings.get(k, 0.0) + v
        for f in ("new", "updated", "unchanged", "quarantined", "gaps_new", "gaps_resolved", "incomplete_skipped",
                  "pages", "rows_fetched"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


def _stored_times(conn: psycopg.Connection, spec: SeriesSpec, lo: int, hi: int) -> set[int]:
    """Times already stored for this series in [lo, hi)."""
    where = " AND ".join(f"{c} = %s" for c in spec.filters)
    rows = conn.execute(
        f"SELECT ts FROM {spec.table} WHERE {where} AND ts >= %s AND ts < %s",  # type: ignore[arg-type]
        (*spec.filters.values(), from_ms(lo), from_ms(hi)),
    ).fetchall()
    return {to_ms(r[0]) for r in rows}


def _has_before(conn: psycopg.Connection, spec: SeriesSpec, t: int) -> bool:
    where = " AND ".join(f"{c} = %s" for c in spec.filters)
    row = conn.execute(
        f"SELECT 1 FROM {spec.table} WHERE {where} AND ts < %s LIMIT 1",  # type: ignore[arg-type]
        (*spec.filters.values(), from_ms(t)),
    ).fetchone()
    return row is not None


def _context(conn: psycopg.Connection, spec: SeriesSpec, before: int) -> np.ndarray:
    import numpy as np

    if not spec.context_col or spec.context_rows <= 0:
        return np.empty(0)
    where = " AND ".join(f"{c} = %s" for c in spec.filters)
    rows = conn.execute(
        f"SELECT {spec.context_col} FROM {spec.table} WHERE {where} AND ts < %s "  # type: ignore[arg-type]
        f"ORDER BY ts DESC LIMIT {int(spec.context_rows)}",
        (*spec.filters.values(), from_ms(before)),
    ).fetchall()
    return np.array([float(r[0]) for r in reversed(rows)], dtype="float64")


def _fetch_window(spec: SeriesSpec, key: SeriesKey, lo: int, hi: int, frames: list[pd.DataFrame],
                  result: SeriesResult, prog: Progress) -> None:
    """Fetch [lo, hi) into ``frames``, one page each, until the window is covered or the venue runs dry.

    Windows are sized to fit one page, but duplicated rows (real files have them) or a page that
    starts early (overlap) can leave part of a window unserved. When a page stops short of the
    window's end (its start, for venues that page backward) we ask again from the last time seen,
    inclusive, so the rest of a duplicate group split by the page boundary is still seen and
    judged; we stop as soon as a page brings nothing new (the venue has no more data there).
    Irregular series (funding) have no grid to tell "short", so they continue only after a full page.
    """
    step = spec.step_ms or 1
    cur_lo, cur_hi = lo, hi
    edge: int | None = None
    while True:
        t0 = time.perf_counter()
        df = spec.fetch(cur_lo, cur_hi)
        result.tick("fetch", t0)
        full = len(df) >= spec.page_limit
        df = df[(df["t"] >= cur_lo) & (df["t"] < cur_hi)]
        frames.append(df.assign(page=len(frames)))
        result.pages += 1
        result.rows_fetched += len(df)
        prog.page_done(key, len(df))
        if df.empty or (spec.step_ms is None and not full):
            return
        if spec.backward:
            first = int(df["t"].min())
            if first - step < cur_lo or (edge is not None and first >= edge):
                return
            edge = cur_hi = first + 1
        else:
            last = int(df["t"].max())
            if last + step >= cur_hi or (edge is not None and last <= edge):
                return
            edge = cur_lo = last


@dataclass
class _Segment:
    """Consecutive request windows committed together; ``gap`` when re-fetching an open gap."""

    wins: list[tuple[int, int]]
    gap: Gap | None = None


def _plan(spec: SeriesSpec, gaps: list[Gap], start: int, until: int, batch_pages: int) -> list[_Segment]:
    segs: list[_Segment] = []
    step = spec.step_ms or 1
    for g in gaps:
        if g.start >= until:
            continue
        segs.append(_Segment(windows(g.start, min(until, g.end + step), spec.window_ms), gap=g))
    main = windows(start, until, spec.window_ms)
    for i in range(0, len(main), batch_pages):
        segs.append(_Segment(main[i : i + batch_pages]))
    return segs


def run_series(
    spec: SeriesSpec,
    key: SeriesKey,
    *,
    until: int,
    since: int | None = None,
    earliest: int | None = None,
    batch_pages: int = BATCH_PAGES,
    progress: Progress | None = None,
) -> SeriesResult:
    """Collect one series up to ``until`` (epoch ms, exclusive); see the module doc for the steps.

    ``earliest`` clamps the start for venues that serve only recent history.
    """
    prog = progress or NoProgress()
    result = SeriesResult(key)
    step = spec.step_ms
    with connect() as conn:
        wm = read_watermark(conn, key)
        gaps = open_gaps(conn, key) if step else []
    if since is not None:
        start = since
    elif wm is not None:
        start = wm + step - spec.lookback * step if step else wm + 1
    else:
        start = to_ms(_default_since())
    if earliest is not None:
        start = max(start, earliest)
        gaps = [g for g in gaps if g.end >= earliest]
    if step:
        start = ceil_to(start, step, spec.origin_ms)
    result.watermark = wm
    segs = _plan(spec, gaps, start, until, batch_pages)
    prog.series_started(key, sum(len(s.wins) for s in segs))
    last_present: int | None = None
    anchored: bool | None = None
    try:
        for seg in segs:
            frames: list[pd.DataFrame] = []
            for lo, hi in seg.wins:
                _fetch_window(spec, key, lo, hi, frames, result, prog)
            if anchored is None and seg.gap is None and step:
                with connect() as conn:
                    anchored = _has_before(conn, spec, start)
            seg_res, last_present = _commit(spec, key, seg, frames, until, last_present, bool(anchored))
            result.add(seg_res)
            if seg_res.watermark is not None:
                result.watermark = max(result.watermark or seg_res.watermark, seg_res.watermark)
            if seg.gap is None and last_present is not None:
                anchored = True
    except Exception as e:
        result.status, result.error = "failed", str(e)
        try:
            mark_failed(key, f"{type(e).__name__}: {e}")
        except Exception:  # the original error matters more than the bookkeeping
            log.exception("could not mark %s as failed", key)
        raise
    finally:
        prog.series_done(key)
    if not segs:
        with connect() as conn:
            save_state(conn, key, None, "ok", "nothing to fetch", run_at_ms=until)
    return result


def _commit(
    spec: SeriesSpec,
    key: SeriesKey,
    seg: _Segment,
    frames: list[pd.DataFrame],
    until: int,
    last_present: int | None,
    anchored: bool,
) -> tuple[SeriesResult, int | None]:
    """Validate one segment and write it, with its quarantine, gaps and watermark, atomically."""
    import pandas as pd

    res = SeriesResult(key)
    t0 = time.perf_counter()
    step = spec.step_ms
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    lo, hi = seg.wins[0][0], seg.wins[-1][1]
    if not df.empty:
        value_cols = [c for c in df.columns if c != "page"]
        df = df.drop_duplicates(subset=value_cols, keep="first")
        final = (df["t"] + step <= until) if step else (df["t"] < until)
        res.incomplete_skipped = int((~final).sum())
        df = df[final].reset_index(drop=True)
        df["ts"] = pd.to_datetime(df["t"], unit="ms", utc=True)
    t0 = res.tick("validate", t0)
    with connect() as conn:
        context = _context(conn, spec, int(df["t"].min()) if not df.empty else lo)
        t0 = res.tick("db", t0)
        if df.empty:
            bad_pairs = pd.DataFrame({"row": [], "rule": []})
        else:
            bad_pairs = spec.check(df, context)
        bad_rows = set(bad_pairs["row"].tolist())
        good = df.drop(index=list(bad_rows)) if bad_rows else df
        if not good.empty:
            good = good.drop_duplicates(subset=["t"], keep="first").sort_values("t", kind="stable")
        t0 = res.tick("validate", t0)
        if not good.empty:
            w = spec.write(conn, spec.rows(good))
            res.new, res.updated, res.unchanged = w.inserted, w.updated, w.unchanged
        if len(bad_pairs):
            bad = df.loc[bad_pairs["row"].to_numpy()].assign(reason=bad_pairs["rule"].to_numpy())
            res.quarantined = quarantine(conn, key, bad.drop(columns=["t"]))
        received = set(df["t"].tolist()) if not df.empty else set()
        # A quarantined row is not present: served corrupted (in transit or by the venue), its bar stays
        # a gap that later runs re-fetch, so a transient corruption does not lose the bar for good.
        bad_t = set(df.loc[list(bad_rows), "t"].tolist()) if bad_rows else set()
        if step:
            present = (received - bad_t) | _stored_times(conn, spec, lo, hi)
            if seg.gap is not None:
                res.gaps_resolved = refresh_gaps(conn, key, [seg.gap], present, step)
            else:
                in_range = [t for t in present | bad_t if lo <= t < hi]
                if in_range:
                    if last_present is not None:
                        first = max(lo, last_present + step)
                    else:
                        first = lo if anchored else min(in_range)
                    found = missing_runs(present, first, max(in_range), step)
                    known = open_gaps(conn, key)
                    found = [g for g in found if not any(k.start <= g.start and g.end <= k.end for k in known)]
                    res.gaps_new = record_gaps(conn, key, found)
                    res.gaps_resolved = refresh_gaps(
                        conn, key, [k for k in known if k.end >= lo and k.start < hi], present, step)
                    last_present = max(in_range)
        if seg.gap is None:
            newest = [t for t in received if t < until]
            res.watermark = max(newest) if newest else None
            if bad_t and not step and res.watermark is not None:  # no gaps for irregular series: the
                res.watermark = min(res.watermark, min(bad_t) - 1)  # next run starts at the bad record
        save_state(conn, key, res.watermark, "ok", None, run_at_ms=until)
    res.tick("db", t0)  # includes the commit
    return res, last_present
