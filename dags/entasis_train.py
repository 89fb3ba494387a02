"""
### entasis_train — weekly retrain, walk-forward check, promotion

Sundays 02:00 UTC (and when `entasis_monitor` asks, with the cut-off `until` from its own data
interval in the run's conf): one mapped `train` task per horizon (a retry retrains that horizon
only, and a retry after the version was registered reuses it: no extra MLflow versions) trains the
LSTM + RandomForest + XGBoost + LightGBM ensemble on `features.bars` known by the cut-off and
registers it as `@challenger`. Per horizon, `backtest` walks forward the challenger's and the
champion's configurations beside the tree models and the naive baselines on the same folds (report
in the artifact store, its URI in `ml.backtest_runs`), and `promote` decides on that evidence, with no
second walk-forward: a challenger becomes `@champion` only if it beats the best baseline and is not
worse than the champion on log-loss; the first model becomes champion marked *unproven*,
unless a leak is found (the walk-forward's leakage check, or the training's `edge_suspicious` flag),
which blocks promotion of any challenger, first or not. Each
decision and its reason is printed in the `promote` task log, stored in `ml.promotion_decisions` and
tagged on the model version. `entasis://ml/champion` is emitted only when a champion changed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, dag, task
from entasis_airflow.assets import CHAMPION, FEATURES

DEFAULT_ARGS = {
    "owner": "entasis",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=10),
    "execution_timeout": dt.timedelta(minutes=30),
}


@dag(
    dag_id="entasis_train",
    schedule=CronDataIntervalTimetable("0 2 * * 0", timezone="UTC"),
    start_date=dt.datetime(2020, 1, 5, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=12),
    default_args=DEFAULT_ARGS,
    tags=["entasis", "ml", "train"],
    doc_md=__doc__,
)
def entasis_train() -> None:
    @task(execution_timeout=dt.timedelta(minutes=5))
    def cutoff(dag_run: Any = None, data_interval_end: dt.datetime | None = None) -> str:
        """The monitor's `until` when it asked for this run, else the end of the data interval."""
        from entasis import jobs

        return jobs.cutoff(getattr(dag_run, "conf", None), data_interval_end).isoformat()

    @task(execution_timeout=dt.timedelta(minutes=5))
    def horizons() -> list[int]:
        from entasis import jobs

        return jobs.horizons()

    @task(inlets=[FEATURES], execution_timeout=dt.timedelta(hours=3))
    def train(horizon: int, until: str) -> list[dict[str, object]]:
        from entasis import jobs

        return jobs.train(until=dt.datetime.fromisoformat(until), horizon=horizon)

    @task(execution_timeout=dt.timedelta(hours=3))
    def backtest(trained: list[dict[str, object]], until: str) -> list[dict[str, object]]:
        from entasis import jobs

        return jobs.backtest(trained, until=dt.datetime.fromisoformat(until))

    @task(execution_timeout=dt.timedelta(minutes=30))
    def promote(evaluated: list[dict[str, object]], until: str) -> list[dict[str, object]]:
        from entasis import jobs

        return jobs.promote(evaluated, now=dt.datetime.fromisoformat(until))

    @task(outlets=[CHAMPION], execution_timeout=dt.timedelta(minutes=5))
    def announce_champion(decisions: list[list[dict[str, object]]]) -> list[str]:
        """Succeeds (emitting the CHAMPION asset event) only when some @champion moved; skips otherwise."""
        from airflow.sdk.exceptions import AirflowSkipException

        changed = [f"{d['model']} -> v{d['version']}" for per in decisions for d in per if d.get("changed")]
        if not changed:
            raise AirflowSkipException("no champion changed: entasis://ml/champion not emitted")
        return changed

    until = cutoff()
    trained = train.partial(until=until).expand(horizon=horizons())
    evaluated = backtest.partial(until=until).expand(trained=trained)
    decided = promote.partial(until=until).expand(evaluated=evaluated)
    announce_champion(decided)  # type: ignore[arg-type]  # TaskFlow passes XComArgs, resolved at run time


entasis_train()
