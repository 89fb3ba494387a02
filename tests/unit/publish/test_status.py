"""ml.champions via record_champion, and the ml.model_status view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

T0 = datetime(2024, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _predictions(conn, asset: str, horizon: int, outcomes: list[bool | None], *, start: datetime,
                 version: str = "entasis-pooled-7d/2"):
    """One prediction a day from ``start``; outcome True/False = reconciled correct/wrong, None = open."""
    import pandas as pd

    from entasis.store.upsert import upsert_frame

    rows = []
    for i, ok in enumerate(outcomes):
        as_of = start + i * DAY
        rows.append({"asset": asset, "horizon": horizon, "as_of": as_of, "model_version": version,
                     "predicted_class": 2, "p_bearish": 0.1, "p_neutral": 0.2, "p_bullish": 0.7,
                     "confidence": 70.0, "confidence_level": "high", "target_date": as_of + horizon * DAY,
                     "published_at": as_of + timedelta(hours=1),
                     "actual_class": None if ok is None else (2 if ok else 0),
                     "correct": ok})
    df = pd.DataFrame(rows)
    df["actual_class"] = df["actual_class"].astype("Int16")
    df["correct"] = df["correct"].astype("boolean")
    upsert_frame(conn, "ml.predictions", df, ["asset", "horizon", "as_of", "model_version"])


def test_record_champion_is_idempotent_and_keeps_history(db_url):
    from entasis.publish.champions import record_champion
    from entasis.store.db import connect

    kw = dict(asset=None, horizon=7, model_name="entasis-pooled-7d", run_id="r1", trained_at=T0,
              test_accuracy=0.44, best_baseline="persistence", best_baseline_accuracy=0.40)
    with connect() as conn:
        assert record_champion(conn, version=1, promoted_at=T0, **kw) is True
        assert record_champion(conn, version=1, promoted_at=T0 + DAY, **kw) is False  # same champion
        row = conn.execute("SELECT asset, version, beats_baseline, unproven, promoted_at FROM ml.champions").fetchone()
        assert row == ("pooled", "1", True, False, T0)  # beats_baseline derived: 0.44 > 0.40
        # a new version moves promoted_at and lands in the history
        assert record_champion(conn, version=2, promoted_at=T0 + 7 * DAY,
                               **{**kw, "test_accuracy": 0.39, "run_id": "r2"}) is True
        row = conn.execute("SELECT version, beats_baseline, promoted_at FROM ml.champions").fetchone()
        assert row == ("2", False, T0 + 7 * DAY)
        # a tag change on the same version updates the row but not promoted_at
        assert record_champion(conn, version=2, promoted_at=T0 + 9 * DAY, unproven=True,
                               **{**kw, "test_accuracy": 0.39, "run_id": "r2"}) is True
        assert conn.execute("SELECT unproven, promoted_at FROM ml.champions").fetchone() == (True, T0 + 7 * DAY)
        hist = conn.execute("SELECT version, promoted_at FROM ml.champion_history ORDER BY promoted_at").fetchall()
        assert hist == [("1", T0), ("2", T0 + 7 * DAY)]


# (version recorded, trained_at given) -> trained_at stored: the version's own time, never a later one
TRAINED_AT_TABLE = [
    ("1", T0, T0),                  # first record
    ("1", None, T0),                # the same version re-recorded without a time (a re-promotion): kept
    ("1", T0 + DAY, T0 + DAY),      # a time given for the same version wins (a corrected tag)
    ("2", None, None),              # another version never inherits the previous one's time
    ("2", T0 + 3 * DAY, T0 + 3 * DAY),
    ("1", T0 + DAY, T0 + DAY),      # a rollback to v1 records v1's own time, not v2's, not the clock
]


def test_record_champion_trained_at_is_the_versions_own(db_url):
    from entasis.publish.champions import record_champion
    from entasis.store.db import connect

    with connect() as conn:
        for i, (version, given, want) in enumerate(TRAINED_AT_TABLE):
            record_champion(conn, asset=None, horizon=7, model_name="entasis-pooled-7d", version=version,
                            promoted_at=T0 + i * DAY, trained_at=given)
            got = conn.execute("SELECT trained_at FROM ml.champions").fetchone()
            assert got == (want,), (i, version, given)
        # re-recording v1 without a time changes nothing at all
        assert record_champion(conn, asset=None, horizon=7, model_name="entasis-pooled-7d", version="1",
                               promoted_at=T0 + 30 * DAY) is False


def test_record_champion_rejects_bad_input(db_url):
    from entasis.publish.champions import record_champion
    from entasis.store.db import connect

    with connect() as conn:
        with pytest.raises(ValueError, match="asset must be a symbol"):
            record_champion(conn, asset="BTC", horizon=7, model_name="m", version=1, promoted_at=T0)
        with pytest.raises(ValueError, match="horizon"):
            record_champion(conn, asset=None, horizon=0, model_name="m", version=1, promoted_at=T0)
        with pytest.raises(ValueError, match="timezone-aware"):
            record_champion(conn, asset=None, horizon=7, model_name="m", version=1, promoted_at=datetime(2024, 1, 1))
        with pytest.raises(ValueError, match="test_accuracy"):
            record_champion(conn, asset=None, horizon=7, model_name="m", version=1, promoted_at=T0, test_accuracy=41)


def test_champion_from_registry_tags():
    from entasis.publish.champions import ChampionError, champion_from_tags

    tags = {"test_accuracy": "0.43", "best_baseline": "majority", "best_baseline_accuracy": "0.45",
            "beats_baseline": "false"}
    c = champion_from_tags(object(), model_name="entasis-pooled-7d", version="4", horizon=7, asset="pooled",
                           run_id="abc", tags=tags)
    assert (c.test_accuracy, c.best_baseline, c.best_baseline_accuracy) == (0.43, "majority", 0.45)
    assert c.beats_baseline is False and c.unproven is True  # not beating the baselines = unproven
    assert c.model_version == "entasis-pooled-7d/4"
    c2 = champion_from_tags(object(), model_name="n", version="1", horizon=7, asset="pooled", run_id=None,
                            tags={"beats_baseline": "true", "unproven": "true"})
    assert c2.unproven is True and c2.beats_baseline is True  # an explicit mark wins
    with pytest.raises(ChampionError, match="not a number"):
        champion_from_tags(object(), model_name="n", version="1", horizon=7, asset="pooled", run_id=None,
                           tags={"test_accuracy": "high"})


def test_model_status_shows_champion_and_live_accuracy(db_url):
    import pandas as pd

    from entasis.publish.champions import record_champion
    from entasis.publish.status import model_status
    from entasis.store.db import connect

    with connect() as conn:
        record_champion(conn, asset=None, horizon=7, model_name="entasis-pooled-7d", version=2, promoted_at=T0,
                        run_id="r2", trained_at=T0 - DAY, unproven=True, test_accuracy=0.36,
                        best_baseline="majority", best_baseline_accuracy=0.40)
        record_champion(conn, asset="ETH/USDT", horizon=7, model_name="entasis-ETH-USDT-7d", version=5,
                        promoted_at=T0, test_accuracy=0.5, best_baseline="majority", best_baseline_accuracy=0.4)
        # BTC: 45 days of predictions, 40 reconciled; the 30-day window ends at the last reconciled target
        # date, so days 0-9 (all wrong) fall outside it and days 10-39 (15 right, 15 wrong) inside.
        outcomes = [False] * 10 + [True] * 15 + [False] * 15 + [None] * 5
        _predictions(conn, "BTC/USDT", 7, outcomes, start=T0)
        _predictions(conn, "ETH/USDT", 7, [True, False], start=T0, version="entasis-ETH-USDT-7d/5")
        st = model_status(conn)
    by = {(r.asset, r.horizon): r for r in st.itertuples(index=False)}
    assert set(by) == {("BTC/USDT", 7), ("ETH/USDT", 7), ("pooled", 7)}
    btc = by[("BTC/USDT", 7)]
    assert (btc.champion_scope, btc.model_name, btc.champion_version) == ("pooled", "entasis-pooled-7d", "2")
    assert btc.unproven and not btc.beats_baseline and btc.best_baseline == "majority"
    assert btc.trained_at == T0 - DAY
    assert btc.n_predictions == 45 and btc.n_reconciled == 40
    assert btc.live_window_end == T0 + 39 * DAY + 7 * DAY
    assert btc.live_reconciled_30d == 30
    assert btc.live_accuracy_30d == pytest.approx(0.5)  # all-time it would be 15/40
    assert btc.last_published == T0 + 44 * DAY + timedelta(hours=1)
    eth = by[("ETH/USDT", 7)]
    assert (eth.champion_scope, eth.champion_version, eth.beats_baseline) == ("ETH/USDT", "5", True)
    assert eth.live_accuracy_30d == pytest.approx(0.5) and eth.n_predictions == 2
    pooled = by[("pooled", 7)]
    assert pooled.champion_version == "2" and pooled.n_predictions == 0 and pd.isna(pooled.live_accuracy_30d)


def test_cli_show_prints_live_log_loss_beside_live_accuracy(db_url):
    """BTC: 3 right (p 0.7) and 1 wrong (p 0.1 on the outcome) in the window: accuracy 0.750, log-loss
    (3 ln(1/0.7) + ln(1/0.1)) / 4 = 0.843; the pooled row (champion only, nothing reconciled): '-' for both."""
    import math

    from typer.testing import CliRunner

    from entasis.cli import app
    from entasis.publish.champions import record_champion
    from entasis.store.db import connect

    with connect() as conn:
        record_champion(conn, asset=None, horizon=7, model_name="entasis-pooled-7d", version=2, promoted_at=T0)
        _predictions(conn, "BTC/USDT", 7, [True, True, False, True], start=T0)
    res = CliRunner().invoke(app, ["publish", "show"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if "│" in ln or "┃" in ln]
    status = res.output[res.output.index("Model status"):]
    header = next(ln for ln in status.splitlines() if "┃" in ln)
    names = [c.strip() for c in header.strip("┃ ").split("┃")]
    rows = {cells[0]: dict(zip(names, cells, strict=True)) for ln in lines if "│" in ln and ln in status
            for cells in [[c.strip() for c in ln.strip("│ ").split("│")]]}
    want = (3 * math.log(1 / 0.7) + math.log(1 / 0.1)) / 4
    assert rows["BTC/USDT"]["live acc 30d"] == "0.750"
    assert rows["BTC/USDT"]["live log-loss 30d"] == f"{want:.3f}" == "0.843"
    assert rows["pooled"]["live acc 30d"] == rows["pooled"]["live log-loss 30d"] == "-"
