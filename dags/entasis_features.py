"""
### entasis_features — features and labels with Spark

Runs when new candles land (the `entasis://market/candles` Asset from `entasis_ingest`). The task
runs the same entry function as `spark_jobs/build_features.py` (`run_features_job`; local mode unless
`ENTASIS_SPARK_MASTER` names a cluster): it reads candles and the extras (funding, open interest,
option surface, sentiment) over JDBC, applies the one definition of every per-series feature, then
the cross-sectional pass (ranks, relative returns, market regime, per bar across the universe), and
upserts `features.bars` incrementally from the feature watermark (a full rebuild gives identical
rows). Emits `entasis://features/bars`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task
from entasis_airflow.assets import CANDLES, FEATURES

DEFAULT_ARGS = {
    "owner": "entasis",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=5),
    "retry_exponential_backoff": True,
    "execution_timeout": dt.timedelta(hours=1),
}


@dag(
    dag_id="entasis_features",
    schedule=[CANDLES],
    start_date=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=2),
    default_args=DEFAULT_ARGS,
    tags=["entasis", "features", "spark"],
    doc_md=__doc__,
)
def entasis_features() -> None:
    @task(outlets=[FEATURES])
    def build_features() -> dict[str, object]:
        from entasis import jobs

        return jobs.build_features()

    build_features()


entasis_features()
