"""
### entasis_flashcrash — flash-crash detection every 5 minutes

For the watched symbols (`ENTASIS_SIGNALS__SYMBOLS`, default the universe), collects the closed
1-minute candles up to the end of this run's data interval (never the wall clock), then applies the
specification's rule (a drop of 15% or more within 5 minutes with volume at 2.5x its trailing
average, thresholds in `ENTASIS_SIGNALS__FLASH_CRASH__*`).

Each crash is reported once: an alert row in `signals.flash_crash_alerts` (and a WARNING line in
this task's log) from the run whose interval holds its detection, and its final figures (start,
trough, depth, recovery, volume ratio) in `signals.flash_crash_events` from the run whose interval
holds the moment it became final. Re-running an interval rewrites identical rows.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag, task
from entasis_airflow.assets import FLASH_CRASHES

DEFAULT_ARGS = {
    "owner": "entasis",
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=30),
    "execution_timeout": dt.timedelta(minutes=3),
}


@dag(
    dag_id="entasis_flashcrash",
    schedule=CronDataIntervalTimetable("*/5 * * * *", timezone="UTC"),
    start_date=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(minutes=4),
    default_args=DEFAULT_ARGS,
    tags=["entasis", "signals"],
    doc_md=__doc__,
)
def entasis_flashcrash() -> None:
    @task(outlets=[FLASH_CRASHES])
    def detect(data_interval_start: dt.datetime | None = None,
               data_interval_end: dt.datetime | None = None) -> dict[str, object]:
        from entasis.signals.jobs import detect_flash_crashes

        return detect_flash_crashes(interval_start=data_interval_start, interval_end=data_interval_end)

    detect()


entasis_flashcrash()
