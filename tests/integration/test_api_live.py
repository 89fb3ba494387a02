"""The API's live accuracy comes from SQL ml.live_scores (migration 0506), the project's one live-score
definition: on the seeded store it gives exactly the numbers the API's earlier query on ml.live_outcomes gave,
the numbers ml.model_status shows, and the live baseline beside it is scored on the same rows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from entasis.api import service
from entasis.api.analytics import LIVE_WINDOW_DAYS, live_window
from entasis.api.store import ReaderStore
from tests.unit.api import seed

# The API's query before it called ml.live_scores (entasis/api/service.py up to commit 12c9c0e), kept as the
# reference the new one must reproduce.
BEFORE_SQL = """
WITH last AS (SELECT asset, horizon, max(day) AS last_day FROM ml.live_outcomes GROUP BY asset, horizon)
SELECT o.asset, o.horizon, sum(o.n)::bigint, sum(o.n_correct)::bigint
FROM ml.live_outcomes o JOIN last l USING (asset, horizon)
WHERE o.day > l.last_day - make_interval(days => %(days)s)
GROUP BY o.asset, o.horizon
"""


@pytest.fixture(scope="module")
def store(pg_server: str, _template: str) -> Iterator[str]:
    with seed.module_store(pg_server, _template, "apil") as url:
        yield url


def _reader(url: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["user"] = "entasis_reader"
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **info)


def test_live_scores_match_the_previous_query_and_model_status(store: str) -> None:
    async def read() -> tuple[dict, dict]:
        rs = ReaderStore(_reader(store))  # as the API reads: the reader role may call ml.live_scores
        try:
            return await service.live_records(rs), await service.scored(rs)
        finally:
            await rs.close()

    after, scored = asyncio.run(read())
    with psycopg.connect(store) as conn:
        before = {(a, h): (n, k) for a, h, n, k in conn.execute(BEFORE_SQL, {"days": LIVE_WINDOW_DAYS}).fetchall()}
        status = {(a, h): (n, acc) for a, h, n, acc in conn.execute(
            "SELECT asset, horizon, live_reconciled_30d, live_accuracy_30d FROM ml.model_status").fetchall()}
    assert before and len(before) == len(seed.ASSETS) * len(seed.HORIZONS)
    assert any(n > 0 for n, _ in before.values())
    assert set(after) == set(before)
    for key, (n, k) in before.items():
        live = after[key]
        assert live.n_reconciled == n
        assert live.model == (k / n if n else None)
        assert status[key] == (n, live.model)
        # the baseline beside it is scored on the same rows the SQL window counted
        assert len(live_window(scored[key])) == n
