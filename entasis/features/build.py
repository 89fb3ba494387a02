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

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from entasis.config import get_settings
from entasis.features import catalog, spark_job
from entasis.features.compute import LabelParams, compute
from entasis.features.cross import INPUTS, cross_sectional
from entasis.features.plan import (
    EXTRA_COLUMNS,
    GroupKey,
    GroupPlan,
    candles_sql,
    config_hash,
    cross_inputs_sql,
    extras_from_long,
    extras_sql,
    options_available,
    plan_build,
    sql_literal,
    write_from_ns,
)
from entasis.features.store import BARS_TABLE, DEFAULT_SENTIMENT_SOURCE, require_label_columns, table_exists
from entasis.store.db import database_url, ensure_schema
from entasis.store.upsert import arrow_copy_stream, ident, idents, table_ident, upsert_frame

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.config import Settings

log = logging.getLogger(__name__)

Engine = Literal["spark", "pandas"]
STAGE_PREFIX = "_stage_bars_"
TS_FROM_MICROS = "timestamptz 'epoch' + ts_us * interval '1 microsecond'"  # Spark writes ts as micros
_LOCK_KEY = 0x66656174  # "feat"


class BuildBusy(RuntimeError):
    """Another features build holds the lock."""


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


# --------------------------------------------------------------------------- the per-series function


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
        "(" + ", ".join(sql_literal(x) for x in (*p.key, p.first_ts, p.last_ts)) + f", {int(p.n_candles)})"
        for p in built
    )
    full = [p for p in built if p.mode == "full"]
    deleted = 0
    if full:  # a full rebuild also drops rows whose candle is gone (incremental runs cannot create such)
        keys = ", ".join("(" + ", ".join(sql_literal(x) for x in p.key) + ")" for p in full)
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


def merge_cross_stage(conn: psycopg.Connection, stage: str, *, ts_micros: bool) -> int:
    """Set the cross-sectional columns of features.bars from a stage table; returns rows changed."""
    from psycopg import sql

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
    sql = cross_inputs_sql(plans, None)
    if sql is None:
        return 0
    inputs = _read_frame(conn, sql, [*catalog.KEY_COLUMNS, *INPUTS])
    if inputs.empty:
        return 0
    for c in INPUTS:
        inputs[c] = inputs[c].astype("float64")
    write_cross_stage(conn, "_xs_stage", cross_sectional(inputs))
    n = merge_cross_stage(conn, "_xs_stage", ts_micros=False)
    conn.execute("DROP TABLE _xs_stage")
    return n


def write_cross_stage(conn: psycopg.Connection, stage: str, xs: pd.DataFrame) -> None:
    """A temporary table ``stage`` (dropped at commit) with the keys, ts and the cross-sectional
    columns of ``xs`` (NaN as NULL), filled by one binary COPY from Arrow (no Python row loop)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from psycopg import sql as psql

    conn.execute(psql.SQL("CREATE TEMP TABLE {} (exchange text, symbol text, timeframe text, ts timestamptz, {}) "
                          "ON COMMIT DROP").format(
        ident(stage), psql.SQL(", ").join(psql.SQL("{} double precision").format(ident(c))
                                          for c in catalog.CROSS_FEATURES)))
    arrays = [pa.array(xs[c].astype(str).to_numpy(), pa.string()) for c in catalog.KEY_COLUMNS[:3]]
    ts_us = pd.DatetimeIndex(pd.to_datetime(xs["ts"], utc=True)).as_unit("us").asi8
    arrays.append(pa.array(ts_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")))
    for c in catalog.CROSS_FEATURES:
        a = xs[c].to_numpy(dtype=np.float64)
        nan = np.isnan(a)
        arrays.append(pa.array(a, mask=nan) if nan.any() else pa.array(a))
    table = pa.Table.from_arrays(arrays, names=[*catalog.KEY_COLUMNS, *catalog.CROSS_FEATURES])
    stream = arrow_copy_stream(table)
    if stream is None:
        raise TypeError("cross-sectional rows cannot be sent by binary COPY")
    copy_sql = psql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(ident(stage), idents(table.schema.names))
    with conn.cursor() as cur, cur.copy(copy_sql) as cp:
        for chunk in stream:
            cp.write(chunk)


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

    candles = _read_frame(conn, candles_sql(plans), ["exchange", "symbol", "timeframe", "ts", "open", "high",
                                                      "low", "close", "volume", "quote_volume"])
    extras = _read_frame(conn, extras_sql(plans, options=options_available(conn),
                                          sentiment_source=sentiment_source), EXTRA_COLUMNS)
    fn = make_group_fn(params, write_from_ns(plans))
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
                require_label_columns(conn, params.horizons)
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
                    for t in (stage, xs_stage, f"{stage}_claims", f"{xs_stage}_claims"):
                        lock_conn.execute(_drop_sql(t))
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    summary.seconds = time.perf_counter() - t0
    log.info("features build: %s", summary.as_dict())
    return summary


def run_features_job(
    *,
    full: bool = False,
    timeframes: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    spark: Any = None,
    settings: Settings | None = None,
) -> BuildSummary:
    """THE features job: the entasis_features DAG task and ``spark_jobs/build_features.py`` both run
    exactly this (Spark engine; ``settings.spark.master``, i.e. ENTASIS_SPARK_MASTER, picks local or a
    cluster). ``spark``: a session to use (spark-submit's own); otherwise one is started and stopped."""
    return build_features(full=full, timeframes=timeframes, symbols=symbols, engine="spark", spark=spark,
                          settings=settings)
