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
are recorded in `market.gaps` and retried next run. `entasis://market/candles`, which starts
`entasis_features` (Spark), is emitted only when this run stored new or changed candles; with
nothing new the `announce_candles` task skips and no Spark job starts.
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
    "execution_timeout": dt.timedelta(minutes=45),  # a first backfill pages through years of history
}


@dag(
    dag_id="entasis_ingest",
    schedule=CronDataIntervalTimetable("5 * * * *", timezone="UTC"),
    start_date=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=2),
    default_args=DEFAULT_ARGS,
    tags=["entasis", "ingest"],
    doc_md=__doc__,
)
def entasis_ingest() -> None:
    @task
    def candles(data_interval_end: dt.datetime | None = None) -> dict[str, object]:
        from entasis import jobs

        return jobs.ingest_candles(until=data_interval_end)

    @task(outlets=[CANDLES], execution_timeout=dt.timedelta(minutes=5))
    def announce_candles(summary: dict[str, object]) -> dict[str, object]:
        """Succeeds (emitting the CANDLES asset event) only when candles were stored; skips otherwise."""
        from airflow.sdk.exceptions import AirflowSkipException

        stored = {k: int(summary.get(k) or 0) for k in ("new", "updated")}  # type: ignore[call-overload]
        if not any(stored.values()):
            raise AirflowSkipException("no new candles: entasis://market/candles not emitted, no Spark run")
        return stored

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

    announce_candles(candles())  # type: ignore[arg-type]  # an XComArg, resolved at run time
    funding()
    open_interest()
    options()


entasis_ingest()
