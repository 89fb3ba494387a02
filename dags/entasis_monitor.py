"""
### entasis_monitor — live accuracy, drift, stale data

Daily. Measures, as of the end of the data interval: the champion's rolling live (reconciled)
accuracy per asset and horizon, drift of feature distributions (population stability index vs
the training window) and of the predicted class mix, and stale data (latest candle older than
expected). Rolls a champion back when its live accuracy stays below the threshold for N days,
and triggers `entasis_train` when accuracy falls below the threshold or drift is detected. The
triggered run's logical date and its training cut-off (`conf["until"]`) are this run's data
interval end, never the wall clock; its run id derives from this run's, so a retry triggers nothing twice.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronDataIntervalTimetable, dag, task

DEFAULT_ARGS = {
    "owner": "entasis",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=5),
    "execution_timeout": dt.timedelta(minutes=30),
}


@dag(
    dag_id="entasis_monitor",
    schedule=CronDataIntervalTimetable("30 3 * * *", timezone="UTC"),
    start_date=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=1),
    default_args=DEFAULT_ARGS,
    tags=["entasis", "ml", "monitoring"],
    doc_md=__doc__,
)
def entasis_monitor() -> None:
    @task
    def check(data_interval_end: dt.datetime | None = None) -> dict[str, object]:
        from entasis import jobs

        return jobs.monitor(now=data_interval_end)

    @task.short_circuit
    def needs_retrain(report: dict[str, object]) -> bool:
        return bool(report.get("retrain"))

    trigger_retrain = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="entasis_train",
        trigger_run_id="monitor__{{ run_id }}",
        logical_date="{{ data_interval_end.isoformat() }}",
        conf={"reason": "monitor: accuracy below threshold or drift", "until": "{{ data_interval_end.isoformat() }}"},
        skip_when_already_exists=True,
        wait_for_completion=False,
    )

    needs_retrain(check()) >> trigger_retrain  # type: ignore[arg-type]  # an XComArg, resolved at run time


entasis_monitor()
