"""Spark entry point: ``spark-submit --jars /usr/share/java/postgresql.jar spark_jobs/build_features.py``
``[--full] [--timeframe 1d ...]`` (the JDBC jar must be on the driver's classpath; settings as for
``entasis features build``, e.g. ENTASIS_DATABASE_URL).

Thin on purpose: the logic is in entasis.features.build / plan / spark_job; this runs the same job as
``entasis features build`` inside the session spark-submit created.
"""

from __future__ import annotations

import argparse
import json
import logging


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build features.bars from market.* with Spark.")
    ap.add_argument("--full", action="store_true", help="recompute every row")
    ap.add_argument("--timeframe", action="append",
                    help="only this timeframe (repeatable; default: the configured universe.timeframes)")
    ap.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from entasis.config import get_settings
    from entasis.features.build import run_features_job
    from entasis.features.spark_job import spark_session

    # the configured timeframes, as the DAG task builds them: never the flash-crash DAG's 1m candles
    timeframes = args.timeframe or list(get_settings().universe.timeframes)

    spark = spark_session()  # under spark-submit this returns the session it configured
    try:  # the same entry function the entasis_features DAG task runs (entasis.jobs.build_features)
        summary = run_features_job(full=args.full, timeframes=timeframes, symbols=args.symbol, spark=spark)
    finally:
        spark.stop()
    print(json.dumps(summary.as_dict(), default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
