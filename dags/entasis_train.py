"""
### entasis_train — weekly retrain, walk-forward check, promotion

Sundays 02:00 UTC (and when `entasis_monitor` asks): trains the LSTM + RandomForest + XGBoost +
LightGBM ensemble per horizon on `features.bars` up to the end of the data interval, registers each
as `@challenger` in MLflow, runs the walk-forward backtest beside the naive baselines (report under
`reports/`, rows in `ml.backtest_runs` / `ml.backtest_metrics`), then promotes a challenger to
`@champion` only if it beats the best baseline and is not worse than the champion on log-loss. The
first model for an asset and horizon becomes champion marked *unproven*. Each decision and its
reason is printed in the `promote` task log, stored in `ml.promotion_decisions`, and tagged on
the model version. Emits `entasis://ml/champion` when a champion changed.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag, task
from entasis_airflow.assets import CHAMPION, FEATURES

DEFAULT_ARGS = {
    "owner": "entasis",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=10),
}


@dag(
    dag_id="entasis_train",
    schedule=CronDataIntervalTimetable("0 2 * * 0", timezone="UTC"),
    start_date=dt.datetime(2020, 1, 5, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["entasis", "ml", "train"],
    doc_md=__doc__,
)
def entasis_train() -> None:
    @task(inlets=[FEATURES])
    def train(data_interval_end: dt.datetime | None = None) -> list[dict[str, object]]:
        from entasis import jobs

        return jobs.train(until=data_interval_end)

    @task
    def backtest(
        trained: list[dict[str, object]], data_interval_end: dt.datetime | None = None
    ) -> list[dict[str, object]]:
        from entasis import jobs

        return jobs.backtest(trained, until=data_interval_end)

    @task(outlets=[CHAMPION])
    def promote(
        evaluated: list[dict[str, object]], data_interval_end: dt.datetime | None = None
    ) -> list[dict[str, object]]:
        from entasis import jobs

        return jobs.promote(evaluated, now=data_interval_end)

    promote(backtest(train()))  # type: ignore[arg-type]  # TaskFlow passes XComArgs, resolved at run time


entasis_train()
