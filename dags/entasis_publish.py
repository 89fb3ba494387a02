"""
### entasis_publish — predictions for analysts and apps

Every 6 hours, and whenever a new champion appears (`entasis://ml/champion`): for each asset and
horizon, loads the `@champion` model, predicts for the latest complete bar as of the run's
logical time, and upserts `ml.predictions` (class, probabilities, calibrated confidence and level,
target date, top factors, model version, run id, data hash). Then reconciles outcomes of earlier
predictions whose target date has passed (actual class, realised return, correct). Idempotent
per asset / horizon / as_of / model version.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task
from entasis_airflow.assets import CHAMPION, PREDICTIONS

DEFAULT_ARGS = {
    "owner": "entasis",
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "execution_timeout": dt.timedelta(minutes=30),
}


@dag(
    dag_id="entasis_publish",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("15 */6 * * *", timezone="UTC"), assets=[CHAMPION]
    ),
    start_date=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=2),
    default_args=DEFAULT_ARGS,
    tags=["entasis", "ml", "publish"],
    doc_md=__doc__,
)
def entasis_publish() -> None:
    @task(outlets=[PREDICTIONS])
    def publish(logical_date: dt.datetime | None = None, run_after: dt.datetime | None = None) -> dict[str, object]:
        from entasis import jobs

        return jobs.publish(as_of=logical_date or run_after)

    @task
    def reconcile(logical_date: dt.datetime | None = None, run_after: dt.datetime | None = None) -> int:
        from entasis import jobs

        return jobs.reconcile(now=logical_date or run_after)

    publish() >> reconcile()


entasis_publish()
