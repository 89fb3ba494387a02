"""
### entasis_ingest — hourly market data

Collects, for the configured universe (`ENTASIS_UNIVERSE__*`), up to the end of this run's data
interval (never the wall clock):

* spot candles at every configured timeframe (closed bars only; the bar in progress is never stored),
  and the configured perpetuals' candles at the same timeframes (for the `perp_basis` feature),
* perpetual funding-rate history and open interest,
* a Deribit option-chain snapshot per configured currency, then its smile/Heston surface.

Every write is an idempotent upsert and each watermark moves only after its batch commits, so
re-running a run for the same interval changes nothing. Bad rows go to `market.quarantine`; gaps
are recorded in `market.gaps` and retried next run. Emits the market Assets that start
`entasis_features`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag, task
from entasis_airflow.assets import CANDLES, FUNDING, OPEN_INTEREST, OPTIONS

DEFAULT_ARGS = {
    "owner": "entasis",
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=20),
}


@dag(
    dag_id="entasis_ingest",
    schedule=CronDataIntervalTimetable("5 * * * *", timezone="UTC"),
    start_date=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["entasis", "ingest"],
    doc_md=__doc__,
)
def entasis_ingest() -> None:
    @task(outlets=[CANDLES])
    def candles(data_interval_end: dt.datetime | None = None) -> dict[str, object]:
        from entasis import jobs

        return jobs.ingest_candles(until=data_interval_end)

    @task(outlets=[FUNDING])
    def funding(data_interval_end: dt.datetime | None = None) -> dict[str, object]:
        from entasis import jobs

        return jobs.ingest_funding(until=data_interval_end)

    @task(outlets=[OPEN_INTEREST])
    def open_interest(data_interval_end: dt.datetime | None = None) -> dict[str, object]:
        from entasis import jobs

        return jobs.ingest_open_interest(until=data_interval_end)

    @task(outlets=[OPTIONS])
    def options(data_interval_end: dt.datetime | None = None) -> dict[str, object]:
        from entasis import jobs

        return jobs.ingest_options(now=data_interval_end)

    candles()
    funding()
    open_interest()
    options()


entasis_ingest()
