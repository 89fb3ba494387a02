"""Build features.bars from market.* : plan, read, compute (Spark or pandas), write atomically.

Plan. Per (exchange, symbol, timeframe) the build compares market.candles with features.build_state:
- no state, ``full=True``, a changed feature/label config, an earlier first candle (backfill) or a
  changed number of candles up to the watermark (a gap repaired) -> recompute the whole series;
- no candle after the watermark -> nothing to do;
- otherwise incremental: rewrite the rows from the bar ``max horizon`` bars before the watermark
  (their labels can now be filled) onwards, reading candles from the start of that row's block minus
  the warm-up (see :mod:`entasis.features.compute`), so the rows written are bit-identical to a full
  rebuild's.
Candle values revised in place before the tail, and extras that arrive after their bars were built,
are picked up by a ``--full`` rebuild.

Write. Rows go to a uniquely named staging table; one transaction then upserts them into
features.bars (``ON CONFLICT ... DO UPDATE ... WHERE changed``, so a re-run touches nothing),
deletes feature rows whose candle no longer exists, advances build_state, and drops the stage.
Nothing is half-written: a failure before that transaction leaves features.bars as it was (the stage
is dropped on the way out or by the next build). A session advisory lock keeps builds one at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from entasis.features import catalog
from entasis.features.compute import Extras, LabelParams, compute
from entasis.features.joins import EXTRAS_LOOKBACK_DAYS
from entasis.features.store import (
    BARS_TABLE,
    DEFAULT_SENTIMENT_SOURCE,
    OPTION_FEATURES_TABLE,
    ensure_label_columns,
    table_columns,
    table_exists,
)

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.config import Settings

log = logging.getLogger(__name__)

Engine = Literal["spark", "pandas"]
GroupKey = tuple[str, str, str]
STAGE_PREFIX = "_stage_bars_"
TS_FROM_MICROS = "timestamptz 'epoch' + ts_us * interval '1 microsecond'"  # Spark writes ts as micros
_LOCK_KEY = 0x66656174  # "feat"
EXTRA_COLUMNS = ["exchange", "symbol", "timeframe", "kind", "ts", "v1", "v2", "v3", "v4", "v5", "v6"]


class BuildBusy(RuntimeError):
    """Another features build holds the lock."""


@dataclass
class GroupPlan:
    """What the build does for one series and where its inputs come from."""

    exchange: str
    symbol: str
    timeframe: str
    mode: Literal["full", "incremental", "skip"]
    first_ts: datetime
    last_ts: datetime
    n_candles: int
    read_from: datetime | None = None  # None: from the first candle
    write_from: datetime | None = None  # None: every row
    reason: str = ""
    funding_src: tuple[str, str] | None = None
    oi_src: tuple[str, str] | None = None
    leg_src: tuple[str, str] | None = None
    underlying: str = ""

    @property
    def key(self) -> GroupKey:
        return (self.exchange, self.symbol, self.timeframe)


@dataclass
class BuildSummary:
    engine: str
    full: bool
    groups: int = 0
    symbols: list[str] = field(default_factory=list)
    skipped: int = 0
    rows_computed: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    cross_updated: int = 0  # rows whose cross-sectional columns the second pass changed
    seconds: float = 0.0
    spark_startup_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def rows_written(self) -> int:
        return self.inserted + self.updated

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_written"] = self.rows_written
        return d


def config_hash(params: LabelParams, sentiment_source: str) -> str:
    """Everything that changes stored values; a change makes the next build recompute everything."""
    blob = json.dumps(
        {
            "feature_version": catalog.FEATURE_VERSION,
            "features": catalog.FEATURE_COLUMNS,
            "horizons": list(params.horizons),
            "neutral_band": params.neutral_band,
            "band_mode": params.band_mode,
            "vol_scale": params.vol_scale,
            "sentiment_source": sentiment_source,
            "warmup": catalog.BASE_WARMUP_BARS,
            "block": catalog.BASE_BLOCK_BARS,
            "min_history": catalog.BASE_MIN_HISTORY,
            "momentum_days": list(catalog.MOMENTUM_DAYS),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------- planning


def _pick(cands: list[tuple[str, str]], prefer: Sequence[str]) -> tuple[str, str] | None:
    for ex in prefer:
        for c in cands:
            if c[0] == ex:
                return c
    return sorted(cands)[0] if cands else None


def _sources(
    conn: psycopg.Connection, table: str
) -> dict[str, list[tuple[str, str]]]:
    from psycopg import sql

    from entasis.store.upsert import table_ident

    rows = conn.execute(sql.SQL("SELECT DISTINCT exchange, symbol FROM {}").format(table_ident(table))).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for ex, sym in rows:
        out.setdefault(str(sym), []).append((str(ex), str(sym)))
    return out


def block_start(ts: datetime, timeframe: str) -> datetime:
    import pandas as pd

    step = catalog.timeframe_seconds(timeframe) * 10**9
    B = catalog.block_bars(timeframe)
    ns = pd.Timestamp(ts).as_unit("ns").value
    return pd.Timestamp((ns // (B * step)) * B * step, tz="UTC").to_pydatetime()


def plan_build(
    conn: psycopg.Connection,
    *,
    full: bool,
    params: LabelParams,
    chash: str,
    timeframes: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    exchanges: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> list[GroupPlan]:
    """Decide, per series, full / incremental / skip, and where its extras come from."""
    import pandas as pd

    from entasis.config import get_settings

    s = settings or get_settings()
    for tf in timeframes or []:
        catalog.timeframe_seconds(tf)
    where, args = "", []
    if timeframes:
        where, args = "WHERE c.timeframe = ANY(%s)", [list(timeframes)]
    rows = conn.execute(
        f"""
        SELECT c.exchange, c.symbol, c.timeframe, min(c.ts), max(c.ts), count(*),
               count(*) FILTER (WHERE c.ts <= st.last_ts), st.first_ts, st.last_ts, st.n_candles, st.config_hash
        FROM market.candles c
        LEFT JOIN features.build_state st USING (exchange, symbol, timeframe)
        {where}
        GROUP BY c.exchange, c.symbol, c.timeframe, st.first_ts, st.last_ts, st.n_candles, st.config_hash
        ORDER BY 1, 2, 3""",  # type: ignore[arg-type]
        args,
    ).fetchall()
    all_groups = {(str(r[0]), str(r[1]), str(r[2])) for r in rows}
    funding = _sources(conn, "market.funding_rates")
    oi = _sources(conn, "market.open_interest")
    H = {tf: max(catalog.horizon_bars(h, tf) for h in params.horizons) for tf in {r[2] for r in rows}}
    plans: list[GroupPlan] = []
    for ex, sym, tf, first, last, count, upto, st_first, st_last, st_n, st_hash in rows:
        if symbols is not None and sym not in symbols:
            continue
        if exchanges is not None and ex not in exchanges:
            continue
        p = GroupPlan(str(ex), str(sym), str(tf), "full", first, last, int(count))
        if full:
            p.reason = "--full"
        elif st_last is None:
            p.reason = "first build"
        elif st_hash != chash:
            p.reason = "feature/label configuration changed"
        elif pd.Timestamp(first) != pd.Timestamp(st_first):
            p.reason = "history extended backwards"
        elif int(upto) != int(st_n):
            p.reason = "candles before the watermark changed"
        elif pd.Timestamp(last) <= pd.Timestamp(st_last):
            p.mode, p.reason = "skip", "no new candles"
        else:
            row = conn.execute(
                "SELECT ts FROM market.candles WHERE exchange = %s AND symbol = %s AND timeframe = %s "
                "AND ts <= %s ORDER BY ts DESC OFFSET %s LIMIT 1",
                (ex, sym, tf, st_last, H[tf]),
            ).fetchone()
            p.mode, p.reason = "incremental", "new candles"
            if row is not None:
                p.write_from = row[0]
                sec = catalog.timeframe_seconds(tf)
                # the block window's warm-up, and the pointwise features' history (ret_90d), whichever is earlier
                p.read_from = min(
                    block_start(row[0], tf) - pd.Timedelta(seconds=catalog.warmup_bars(tf) * sec).to_pytimedelta(),
                    row[0] - pd.Timedelta(seconds=catalog.history_bars(tf) * sec).to_pytimedelta(),
                )
        perp = catalog.perp_of(sym)
        prefer_perp = [ex, s.universe.perp_exchange]
        p.funding_src = _pick(funding.get(perp, []), prefer_perp)
        p.oi_src = _pick(oi.get(perp, []), prefer_perp)
        if catalog.is_perp(sym):
            leg_sym, prefer_leg = catalog.pair_of(sym), [ex, s.universe.exchange]
        else:
            leg_sym, prefer_leg = perp, prefer_perp
        p.leg_src = _pick([(g[0], g[1]) for g in all_groups if g[1] == leg_sym and g[2] == tf], prefer_leg)
        p.underlying = catalog.underlying_of(sym)
        plans.append(p)
    return plans


# ------------------------------------------------------------------------------------ SQL for reads


def _lit(v: object) -> str:
    """A SQL literal for planner-made values (names from the database, timestamps)."""
    import pandas as pd

    if v is None:
        return "NULL"
    if isinstance(v, datetime | pd.Timestamp):
        return f"'{pd.Timestamp(v).tz_convert('UTC').isoformat()}'::timestamptz"
    s = str(v)
    if "\x00" in s:
        raise ValueError(f"NUL byte in {s!r}")
    return "'" + s.replace("'", "''") + "'"


def _plan_values(plans: Sequence[GroupPlan]) -> str:
    rows = []
    for p in plans:
        f = p.funding_src or (None, None)
        o = p.oi_src or (None, None)
        g = p.leg_src or (None, None)
        read_from = _lit(p.read_from) if p.read_from is not None else "'-infinity'::timestamptz"
        lits = [_lit(x) for x in (p.exchange, p.symbol, p.timeframe)] + [read_from, _lit(p.last_ts)]
        lits += [_lit(x) for x in (*f, *o, *g, p.underlying)]
        rows.append("(" + ", ".join(lits) + ")")
    cols = "exchange, symbol, timeframe, read_from, read_to, f_ex, f_sym, oi_ex, oi_sym, g_ex, g_sym, underlying"
    return f"(VALUES {', '.join(rows)}) AS v({cols})"


def candles_sql(plans: Sequence[GroupPlan]) -> str:
    """The candles each planned series needs: from its read start to the planned watermark."""
    return (
        "SELECT c.exchange, c.symbol, c.timeframe, c.ts, c.open, c.high, c.low, c.close, c.volume, c.quote_volume "
        f"FROM market.candles c JOIN {_plan_values(plans)} "
        "ON c.exchange = v.exchange AND c.symbol = v.symbol AND c.timeframe = v.timeframe "
        "WHERE c.ts >= v.read_from AND c.ts <= v.read_to"
    )


def extras_sql(plans: Sequence[GroupPlan], *, options: bool, sentiment_source: str) -> str:
    """Every extra as long rows (group key, kind, ts, v1..v6) keyed to the series that uses it."""
    lb = f"interval '{EXTRAS_LOOKBACK_DAYS} days'"
    keys = "p.exchange, p.symbol, p.timeframe"
    nulls = lambda k: ", ".join(f"NULL::float8 AS v{i}" for i in range(7 - k, 7))  # noqa: E731
    parts = [
        f"SELECT {keys}, 'funding'::text AS kind, f.ts AS ts, f.funding_rate AS v1, {nulls(5)} "
        "FROM p JOIN market.funding_rates f ON f.exchange = p.f_ex AND f.symbol = p.f_sym "
        f"AND f.ts >= p.read_from - {lb}",
        f"SELECT {keys}, 'oi', o.ts, o.open_interest, {nulls(5)} "
        "FROM p JOIN market.open_interest o ON o.exchange = p.oi_ex AND o.symbol = p.oi_sym "
        f"AND o.ts >= p.read_from - {lb}",
        f"SELECT {keys}, 'leg', c.ts, c.close, {nulls(5)} "
        "FROM p JOIN market.candles c ON c.exchange = p.g_ex AND c.symbol = p.g_sym AND c.timeframe = p.timeframe "
        "AND c.ts >= p.read_from AND c.ts <= p.read_to",
        f"SELECT {keys}, 'sentiment', s.ts, s.value, {nulls(5)} "
        f"FROM p JOIN market.sentiment s ON s.source = {_lit(sentiment_source)} AND s.ts >= p.read_from - {lb}",
    ]
    if options:
        cols = ", ".join(f"o.{c}" for c in catalog.OPTION_FEATURES)
        parts.append(
            f"SELECT {keys}, 'options', o.snapshot_ts, {cols} "
            f"FROM p JOIN {OPTION_FEATURES_TABLE} o ON o.underlying = p.underlying "
            f"AND o.snapshot_ts >= p.read_from - {lb}"
        )
    body = " UNION ALL ".join(parts)
    return f"WITH p AS (SELECT * FROM {_plan_values(plans)}) {body}"


def options_available(conn: psycopg.Connection) -> bool:
    cols = set(table_columns(conn, OPTION_FEATURES_TABLE))
    if not cols:
        return False
    need = {"underlying", "snapshot_ts", *catalog.OPTION_FEATURES}
    if not need <= cols:
        log.warning("%s lacks %s; option features stay NaN", OPTION_FEATURES_TABLE, sorted(need - cols))
        return False
    return True


# --------------------------------------------------------------------------- the per-series function


def extras_from_long(df: pd.DataFrame | None) -> Extras:
    """Split long extras rows (kind, ts, v1..v6) into an :class:`Extras`; deterministic order."""
    import pandas as pd

    if df is None or df.empty:
        return Extras()
    df = df.sort_values(["kind", "ts", "v1", "v2", "v3", "v4", "v5", "v6"], kind="stable", na_position="last")
    out = Extras()
    for kind, g in df.groupby("kind", sort=False):
        ts = pd.to_datetime(g["ts"], utc=True).to_numpy()
        if kind == "funding":
            out.funding = pd.DataFrame({"ts": ts, "funding_rate": g["v1"].to_numpy(dtype=float)})
        elif kind == "oi":
            out.open_interest = pd.DataFrame({"ts": ts, "open_interest": g["v1"].to_numpy(dtype=float)})
        elif kind == "leg":
            out.other_leg = pd.DataFrame({"ts": ts, "close": g["v1"].to_numpy(dtype=float)})
        elif kind == "sentiment":
            out.sentiment = pd.DataFrame({"ts": ts, "value": g["v1"].to_numpy(dtype=float)})
        elif kind == "options":
            d = {"snapshot_ts": ts}
            for i, c in enumerate(catalog.OPTION_FEATURES, start=1):
                d[c] = g[f"v{i}"].to_numpy(dtype=float)
            out.options = pd.DataFrame(d)
        else:
            raise ValueError(f"unknown extras kind {kind!r}")
    return out


def make_group_fn(
    params: LabelParams, write_from: dict[GroupKey, int | None], **compute_kw: Any
) -> Callable[[Any, pd.DataFrame, pd.DataFrame | None], pd.DataFrame]:
    """The function Spark (cogroup.applyInPandas) and the pandas engine both apply per series."""

    def fn(key: Any, candles: pd.DataFrame, extras: pd.DataFrame | None) -> pd.DataFrame:
        import pandas as pd

        if candles.empty:
            return pd.DataFrame({c: [] for c in catalog.series_columns(params.horizons)})
        k = (str(key[0]), str(key[1]), str(key[2]))
        out = compute(candles, extras_from_long(extras), exchange=k[0], symbol=k[1], timeframe=k[2],
                      labels=params, **compute_kw)
        wf = write_from.get(k)
        if wf is not None:
            out = out[pd.DatetimeIndex(out["ts"]).as_unit("ns").asi8 >= wf]
        return out.reset_index(drop=True)

    return fn


# ------------------------------------------------------------------------------------------ writing


def merge_stage(
    conn: psycopg.Connection, stage: str, horizons: Sequence[int], *, ts_micros: bool
) -> tuple[int, int, int]:
    """Upsert the staged per-series rows into features.bars; returns (staged, inserted, updated).

    The cross-sectional columns are not in the stage: :func:`merge_cross_stage` sets them after.
    """
    cols = catalog.series_columns(horizons)
    non_key = [c for c in cols if c not in catalog.KEY_COLUMNS]
    from psycopg import sql

    from entasis.store.upsert import ident, idents, table_ident

    ident(stage)  # checked: lower-case snake case only
    stg = sql.Identifier("features", stage)
    staged = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(stg)).fetchone()
    row = conn.execute(
        sql.SQL(
            "WITH w AS (INSERT INTO {bars} AS t ({cols}) SELECT {sel} FROM {stg} "
            "ON CONFLICT (exchange, symbol, timeframe, ts) DO UPDATE SET {sets} WHERE {changed} "
            "RETURNING (xmax = 0) AS inserted) SELECT count(*) FILTER (WHERE inserted), count(*) FROM w"
        ).format(
            bars=table_ident(BARS_TABLE), cols=idents(cols), stg=stg,
            sel=sql.SQL(", ").join(sql.SQL(TS_FROM_MICROS) if c == "ts" and ts_micros else ident(c) for c in cols),
            sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=ident(c)) for c in non_key),
            changed=sql.SQL(" OR ").join(sql.SQL("t.{c} IS DISTINCT FROM EXCLUDED.{c}").format(c=ident(c))
                                         for c in non_key),
        )
    ).fetchone()
    ins, written = (int(row[0]), int(row[1])) if row else (0, 0)
    return (int(staged[0]) if staged else 0), ins, written - ins


def finish(conn: psycopg.Connection, plans: Sequence[GroupPlan], chash: str) -> int:
    """In the write transaction: drop orphaned feature rows (full rebuilds), advance build_state.

    Returns the number of rows deleted.
    """
    built = [p for p in plans if p.mode != "skip"]
    if not built:
        return 0
    vals = ", ".join(
        f"({_lit(p.exchange)}, {_lit(p.symbol)}, {_lit(p.timeframe)}, {_lit(p.first_ts)}, {_lit(p.last_ts)}, "
        f"{int(p.n_candles)})"
        for p in built
    )
    full = [p for p in built if p.mode == "full"]
    deleted = 0
    if full:  # a full rebuild also drops rows whose candle is gone (incremental runs cannot create such)
        keys = ", ".join(f"({_lit(p.exchange)}, {_lit(p.symbol)}, {_lit(p.timeframe)})" for p in full)
        deleted = conn.execute(
            f"DELETE FROM {BARS_TABLE} b USING (VALUES {keys}) AS p(exchange, symbol, timeframe) "  # type: ignore[arg-type]
            "WHERE b.exchange = p.exchange AND b.symbol = p.symbol AND b.timeframe = p.timeframe "
            "AND NOT EXISTS (SELECT 1 FROM market.candles c WHERE c.exchange = b.exchange AND c.symbol = b.symbol "
            "AND c.timeframe = b.timeframe AND c.ts = b.ts)"
        ).rowcount
    conn.execute(
        f"""INSERT INTO features.build_state AS s (exchange, symbol, timeframe, first_ts, last_ts, n_candles,
                config_hash, rows, built_at)
            SELECT p.exchange, p.symbol, p.timeframe, p.f, p.l, p.n, %s,
                   (SELECT count(*) FROM {BARS_TABLE} b WHERE b.exchange = p.exchange AND b.symbol = p.symbol
                    AND b.timeframe = p.timeframe), now()
            FROM (VALUES {vals}) AS p(exchange, symbol, timeframe, f, l, n)
            ON CONFLICT (exchange, symbol, timeframe) DO UPDATE SET first_ts = EXCLUDED.first_ts,
                last_ts = EXCLUDED.last_ts, n_candles = EXCLUDED.n_candles, config_hash = EXCLUDED.config_hash,
                rows = EXCLUDED.rows, built_at = EXCLUDED.built_at""",  # type: ignore[arg-type]
        (chash,),
    )
    return max(int(deleted), 0)


def _drop_sql(stage: str, *, if_exists: bool = True) -> Any:
    """DROP TABLE [IF EXISTS] features.<stage>, the name checked and quoted."""
    from psycopg import sql

    from entasis.store.upsert import ident

    q = "DROP TABLE IF EXISTS {}" if if_exists else "DROP TABLE {}"
    ident(stage)  # checked: lower-case snake case only
    return sql.SQL(q).format(sql.Identifier("features", stage))


def drop_stale_stages(conn: psycopg.Connection) -> list[str]:
    from psycopg import sql

    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'features' AND tablename LIKE %s",
        (STAGE_PREFIX.replace("_", r"\_") + "%",),
    ).fetchall()
    names = [str(r[0]) for r in rows]
    for n in names:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("features", n)))
    return names


# --------------------------------------------------------------------- the cross-sectional pass


def cross_cutoffs(plans: Sequence[GroupPlan]) -> dict[tuple[str, str], datetime | None]:
    """Per (exchange, timeframe) built: the earliest bar this build rewrote (None: all history).

    A bar's cross-section changes when any of its assets' rows does, so every asset's row at or
    after the cutoff is recomputed, built in this run or not.
    """
    import pandas as pd

    out: dict[tuple[str, str], datetime | None] = {}
    for p in plans:
        if p.mode == "skip" or catalog.is_perp(p.symbol):
            continue
        k = (p.exchange, p.timeframe)
        w = p.write_from if p.mode == "incremental" else None
        if k not in out:
            out[k] = w
        elif out[k] is not None:
            out[k] = None if w is None else min(pd.Timestamp(out[k]), pd.Timestamp(w)).to_pydatetime()
    return out


def cross_inputs_sql(plans: Sequence[GroupPlan], stage: str | None) -> str | None:
    """The rows the cross-sectional pass reads: spot rows at or after each cutoff, from ``stage``
    (this build's new per-series rows, ts as epoch microseconds) where it has them, else from
    features.bars. None when nothing was built."""
    from entasis.features.cross import INPUTS

    cuts = cross_cutoffs(plans)
    if not cuts:
        return None
    never = "'-infinity'::timestamptz"
    vals = ", ".join(f"({_lit(ex)}, {_lit(tf)}, {_lit(c) if c is not None else never})"
                     for (ex, tf), c in sorted(cuts.items()))
    ins = ", ".join(INPUTS)
    bins = ", ".join(f"b.{c}" for c in INPUTS)
    spot = "symbol NOT LIKE '%:%'"  # perpetuals are not in the cross-section
    bars = (f"SELECT b.exchange, b.symbol, b.timeframe, b.ts, {bins} FROM {BARS_TABLE} b "
            "JOIN cut ON b.exchange = cut.exchange AND b.timeframe = cut.timeframe AND b.ts >= cut.cutoff "
            f"WHERE b.{spot}")
    head = f"WITH cut(exchange, timeframe, cutoff) AS (VALUES {vals})"
    if stage is None:
        return f"{head} {bars}"
    return (
        f"{head}, s AS (SELECT st.exchange, st.symbol, st.timeframe, "
        f"timestamptz 'epoch' + st.ts_us * interval '1 microsecond' AS ts, {ins} FROM features.{stage} st "
        f"JOIN cut ON st.exchange = cut.exchange AND st.timeframe = cut.timeframe WHERE st.{spot}) "
        f"SELECT exchange, symbol, timeframe, ts, {ins} FROM s UNION ALL {bars} AND NOT EXISTS ("
        "SELECT 1 FROM s WHERE s.exchange = b.exchange AND s.symbol = b.symbol AND s.timeframe = b.timeframe "
        "AND s.ts = b.ts)"
    )


def merge_cross_stage(conn: psycopg.Connection, stage: str, *, ts_micros: bool) -> int:
    """Set the cross-sectional columns of features.bars from a stage table; returns rows changed."""
    from psycopg import sql

    from entasis.store.upsert import ident, table_ident

    cols = catalog.CROSS_FEATURES
    ts = sql.SQL("timestamptz 'epoch' + x.ts_us * interval '1 microsecond'" if ts_micros else "x.ts")
    cur = conn.execute(
        sql.SQL("UPDATE {bars} b SET {sets} FROM {stage} x WHERE b.exchange = x.exchange "
                "AND b.symbol = x.symbol AND b.timeframe = x.timeframe AND b.ts = {ts} AND ({changed})").format(
            bars=table_ident(BARS_TABLE), stage=table_ident(stage) if "." in stage else ident(stage), ts=ts,
            sets=sql.SQL(", ").join(sql.SQL("{c} = x.{c}").format(c=ident(c)) for c in cols),
            changed=sql.SQL(" OR ").join(sql.SQL("b.{c} IS DISTINCT FROM x.{c}").format(c=ident(c)) for c in cols),
        )
    )
    return max(int(cur.rowcount), 0)


def _cross_pass_pandas(conn: psycopg.Connection, plans: Sequence[GroupPlan]) -> int:
    """The second pass in this process, inside the write transaction (the new rows are visible)."""
    import numpy as np

    from entasis.features.cross import INPUTS, cross_sectional

    sql = cross_inputs_sql(plans, None)
    if sql is None:
        return 0
    inputs = _read_frame(conn, sql, [*catalog.KEY_COLUMNS, *INPUTS])
    if inputs.empty:
        return 0
    for c in INPUTS:
        inputs[c] = inputs[c].astype("float64")
    xs = cross_sectional(inputs)
    cols = [*catalog.KEY_COLUMNS, *catalog.CROSS_FEATURES]
    conn.execute(
        "CREATE TEMP TABLE _xs_stage (exchange text, symbol text, timeframe text, ts timestamptz, "
        + ", ".join(f"{c} double precision" for c in catalog.CROSS_FEATURES) + ") ON COMMIT DROP"
    )
    arr = xs[catalog.CROSS_FEATURES].to_numpy(dtype=np.float64)
    keys = xs[catalog.KEY_COLUMNS[:3]].astype(str).to_numpy()
    ts = xs["ts"].tolist()
    from psycopg import sql as psql

    from entasis.store.upsert import idents

    copy_sql = psql.SQL("COPY _xs_stage ({}) FROM STDIN").format(idents(cols))
    with conn.cursor() as cur, cur.copy(copy_sql) as cp:
        for i in range(len(xs)):
            cp.write_row([*keys[i], ts[i], *[None if v != v else float(v) for v in arr[i]]])
    n = merge_cross_stage(conn, "_xs_stage", ts_micros=False)
    conn.execute("DROP TABLE _xs_stage")
    return n


# ------------------------------------------------------------------------------------------- engines


def _read_frame(conn: psycopg.Connection, sql: str, columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    with conn.cursor() as cur:
        cur.execute(sql)  # type: ignore[arg-type]  # built from planner values via _lit
        rows = cur.fetchall()
    return pd.DataFrame(rows, columns=columns)


def _run_pandas(
    conn: psycopg.Connection, plans: Sequence[GroupPlan], params: LabelParams, sentiment_source: str,
    summary: BuildSummary,
) -> None:
    import pandas as pd

    from entasis.store.upsert import upsert_frame

    candles = _read_frame(conn, candles_sql(plans), ["exchange", "symbol", "timeframe", "ts", "open", "high",
                                                      "low", "close", "volume", "quote_volume"])
    extras = _read_frame(conn, extras_sql(plans, options=options_available(conn),
                                          sentiment_source=sentiment_source), EXTRA_COLUMNS)
    fn = make_group_fn(params, _write_from(plans))
    by_key = {k: g for k, g in extras.groupby(["exchange", "symbol", "timeframe"], sort=False)} if len(extras) else {}
    frames = []
    for key, grp in candles.groupby(["exchange", "symbol", "timeframe"], sort=True):
        k = (str(key[0]), str(key[1]), str(key[2]))
        frames.append(fn(k, grp, by_key.get(k)))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    summary.rows_computed = len(out)
    if len(out):
        res = upsert_frame(conn, BARS_TABLE, out, catalog.KEY_COLUMNS)
        summary.inserted, summary.updated, summary.unchanged = res.inserted, res.updated, res.unchanged


def _write_from(plans: Sequence[GroupPlan]) -> dict[GroupKey, int | None]:
    import pandas as pd

    return {p.key: (pd.Timestamp(p.write_from).as_unit("ns").value if p.write_from is not None else None)
            for p in plans}


def build_features(
    *,
    full: bool = False,
    timeframes: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    exchanges: Sequence[str] | None = None,
    engine: Engine = "spark",
    settings: Settings | None = None,
    spark: Any = None,
    labels: LabelParams | None = None,
    sentiment_source: str = DEFAULT_SENTIMENT_SOURCE,
) -> BuildSummary:
    """Build (or bring up to date) features.bars; see the module docstring. Returns a summary.

    ``spark``: an existing SparkSession to use (tests share one); otherwise the Spark engine starts
    one session for this run and stops it at the end.
    """
    import psycopg

    from entasis.config import get_settings
    from entasis.store.db import database_url, ensure_schema

    if engine not in ("spark", "pandas"):
        raise ValueError(f"engine must be 'spark' or 'pandas', got {engine!r}")
    t0 = time.perf_counter()
    s = settings or get_settings()
    params = labels or LabelParams.from_settings(s)
    chash = config_hash(params, sentiment_source)
    url = database_url(s)
    ensure_schema(url)
    summary = BuildSummary(engine=engine, full=full)
    with psycopg.connect(url, autocommit=True) as lock_conn:
        got = lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not got or not got[0]:
            raise BuildBusy("another features build is running (advisory lock held); try again when it ends")
        try:
            dropped = drop_stale_stages(lock_conn)
            if dropped:
                log.warning("dropped %d staging table(s) left by an interrupted build", len(dropped))
            with psycopg.connect(url) as conn, conn.transaction():
                ensure_label_columns(conn, params.horizons)
                plans = plan_build(conn, full=full, params=params, chash=chash, timeframes=timeframes,
                                   symbols=symbols, exchanges=exchanges, settings=s)
                opts = options_available(conn)
            todo = [p for p in plans if p.mode != "skip"]
            summary.skipped = len(plans) - len(todo)
            summary.groups = len(todo)
            summary.symbols = sorted({p.symbol for p in todo})
            for p in todo:
                mh = catalog.min_history(p.timeframe)
                if p.n_candles < mh:
                    msg = (f"{p.exchange} {p.symbol} {p.timeframe}: only {p.n_candles} candle(s), fewer than the "
                           f"{mh} a bar needs; all its rows are marked warmup")
                    summary.warnings.append(msg)
                    log.warning(msg)
                log.info("%s %s %s: %s (%s)", p.exchange, p.symbol, p.timeframe, p.mode, p.reason)
            if not todo:
                summary.seconds = time.perf_counter() - t0
                return summary
            if engine == "pandas":
                with psycopg.connect(url) as conn, conn.transaction():
                    _run_pandas(conn, todo, params, sentiment_source, summary)
                    summary.cross_updated = _cross_pass_pandas(conn, todo)
                    summary.deleted = finish(conn, todo, chash)
            else:
                from entasis.features import spark_job

                stage = f"{STAGE_PREFIX}{uuid.uuid4().hex[:12]}"
                xs_stage = f"{stage}_xs"
                try:
                    summary.spark_startup_s = spark_job.compute_to_stage(
                        todo, params, stage, options=opts, sentiment_source=sentiment_source, settings=s,
                        spark=spark, cross_stage=xs_stage,
                    )
                    log.info("spark computed %d series into %s (%.1fs, start-up %.1fs)", len(todo), stage,
                             time.perf_counter() - t0, summary.spark_startup_s)
                    with psycopg.connect(url) as conn, conn.transaction():
                        staged, ins, upd = merge_stage(conn, stage, params.horizons, ts_micros=True)
                        summary.rows_computed, summary.inserted, summary.updated = staged, ins, upd
                        summary.unchanged = staged - ins - upd
                        if table_exists(conn, f"features.{xs_stage}"):
                            summary.cross_updated = merge_cross_stage(conn, f"features.{xs_stage}", ts_micros=True)
                        summary.deleted = finish(conn, todo, chash)
                        conn.execute(_drop_sql(stage, if_exists=False))
                        conn.execute(_drop_sql(xs_stage))
                finally:
                    lock_conn.execute(_drop_sql(stage))
                    lock_conn.execute(_drop_sql(xs_stage))
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    summary.seconds = time.perf_counter() - t0
    log.info("features build: %s", summary.as_dict())
    return summary
