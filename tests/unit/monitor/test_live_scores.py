"""One live-accuracy aggregation: the monitor, rollback and ml.model_status read the same rows of
ml.live_outcomes the same way (ml.live_scores), on one seeded database with reconciled predictions.

Window edges: a prediction whose target date is exactly ``window_days`` before the window's end (or
any time on that UTC day) is out, one on the end day is in; an empty window is None / NULL, never 0.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from entasis.backtest.evaluation import live_last_day, live_scores
from entasis.monitor.checks import live_accuracy
from entasis.monitor.rollback import check_live_accuracy_and_rollback, rolling_live_accuracy

DAY = timedelta(days=1)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
BTC_V = "entasis-BTC-USDT-7d/1"
END = T0 + 44 * DAY + 7 * DAY        # newest reconciled BTC target date (midnight)
EDGE = END - 30 * DAY                 # exactly 30 days before the end: out of the 30-day window


def _row(asset: str, horizon: int, as_of: datetime, ok: bool | None, *, version: str = BTC_V,
         p: tuple[float, float, float] = (0.2, 0.3, 0.5), target: datetime | None = None) -> dict[str, Any]:
    return {"asset": asset, "horizon": horizon, "as_of": as_of, "model_version": version, "predicted_class": 2,
            "p_bearish": p[0], "p_neutral": p[1], "p_bullish": p[2], "confidence": 50.0,
            "confidence_level": "medium", "target_date": target or as_of + horizon * DAY,
            "published_at": as_of + timedelta(hours=1),
            "actual_class": None if ok is None else (2 if ok else 0), "correct": ok}


def _seed(conn: Any) -> list[dict[str, Any]]:
    """BTC 7d: 45 reconciled daily predictions (targets T0+7 … END) and 3 open ones; a prediction whose
    target is 6 h after the window's start edge; BTC 14d (other horizon) and ETH 7d (open only)."""
    from entasis.store.upsert import upsert_frame

    rng = np.random.default_rng(7)
    rows = []
    for i in range(45):
        ok = bool(rng.random() < 0.45)
        p = tuple(float(x) for x in rng.dirichlet([2, 2, 2]))
        rows.append(_row("BTC/USDT", 7, T0 + i * DAY, ok, p=p))  # type: ignore[arg-type]
    for i in range(45, 48):
        rows.append(_row("BTC/USDT", 7, T0 + i * DAY, None))
    # target on the edge day but after its midnight: the edge day is out, whatever the hour
    rows.append(_row("BTC/USDT", 7, EDGE - 7 * DAY + timedelta(hours=6), True, target=EDGE + timedelta(hours=6)))
    for i in range(40):
        rows.append(_row("BTC/USDT", 14, T0 + i * DAY, i % 2 == 0, version="entasis-BTC-USDT-14d/1"))
    for i in range(5):
        rows.append(_row("ETH/USDT", 7, T0 + i * DAY, None, version="entasis-ETH-USDT-7d/1"))
    df = pd.DataFrame(rows)
    df["actual_class"] = df["actual_class"].astype("Int16")
    df["correct"] = df["correct"].astype("boolean")
    upsert_frame(conn, "ml.predictions", df, ["asset", "horizon", "as_of", "model_version"])
    return rows


def _expected(rows: list[dict[str, Any]], *, asset: str, horizon: int, end: datetime, days: int
              ) -> tuple[int, float | None, float | None]:
    """The window written out in Python: target UTC day in (day(end) - days, day(end)]."""
    e = pd.Timestamp(end).floor("D")
    sel = [r for r in rows if r["asset"] == asset and r["horizon"] == horizon and r["correct"] is not None
           and e - pd.Timedelta(days=days) < pd.Timestamp(r["target_date"]).floor("D") <= e]
    if not sel:
        return 0, None, None
    acc = sum(r["correct"] for r in sel) / len(sel)
    ll = float(np.mean([-math.log([r["p_bearish"], r["p_neutral"], r["p_bullish"]][r["actual_class"]])
                        for r in sel]))
    return len(sel), acc, ll


def test_monitor_rollback_and_model_status_agree(db_url: str) -> None:
    from entasis.publish.status import model_status
    from entasis.registry import models as reg
    from entasis.registry.tracking import client
    from entasis.store.db import connect

    with connect() as conn:
        rows = _seed(conn)
        n, acc, ll = _expected(rows, asset="BTC/USDT", horizon=7, end=END, days=30)
        assert n == 30 and acc is not None and ll is not None  # the edge-day rows are out, the end day in
        mon = live_accuracy(conn, END, 30)
        status = model_status(conn)
        roll = rolling_live_accuracy(conn, model_version=BTC_V, horizon=7, asset="BTC/USDT", days=3, window_days=30)
        assert live_last_day(conn, asset="BTC/USDT", horizon=7, model_version=BTC_V) == END
    m = mon.set_index(["asset", "horizon"])
    st = status.set_index(["asset", "horizon"])
    # the monitor (window ending at its now), model_status (ending at the newest reconciled target) and
    # rollback's newest day (anchored at the same target) count the same 30 rows the same way
    assert int(m.loc[("BTC/USDT", 7), "n"]) == n == int(st.loc[("BTC/USDT", 7), "live_reconciled_30d"]) \
        == int(roll["n"].iloc[-1])
    assert st.loc[("BTC/USDT", 7), "live_window_end"] == END
    for got in (m.loc[("BTC/USDT", 7), "accuracy"], st.loc[("BTC/USDT", 7), "live_accuracy_30d"],
                roll["accuracy"].iloc[-1]):
        assert got == pytest.approx(acc, abs=1e-12)
    for got in (m.loc[("BTC/USDT", 7), "log_loss"], st.loc[("BTC/USDT", 7), "live_log_loss_30d"],
                roll["log_loss"].iloc[-1]):
        assert got == pytest.approx(ll, abs=1e-9)
    # the earlier rolling days are the same function one and two days back
    for k, back in enumerate((2, 1)):
        nb, ab, _ = _expected(rows, asset="BTC/USDT", horizon=7, end=END - back * DAY, days=30)
        assert int(roll["n"].iloc[k]) == nb and roll["accuracy"].iloc[k] == pytest.approx(ab)
    # the other horizon is its own key with its own window
    n14, a14, _ = _expected(rows, asset="BTC/USDT", horizon=14, end=T0 + 39 * DAY + 14 * DAY, days=30)
    assert int(st.loc[("BTC/USDT", 14), "live_reconciled_30d"]) == n14
    assert st.loc[("BTC/USDT", 14), "live_accuracy_30d"] == pytest.approx(a14)
    # zero reconciled rows: NULL / None, never 0
    eth = st.loc[("ETH/USDT", 7)]
    assert eth["live_reconciled_30d"] == 0 and pd.isna(eth["live_accuracy_30d"]) and pd.isna(eth["live_log_loss_30d"])
    assert ("ETH/USDT", 7) not in m.index

    # the rollback rule reads the same number (one version, one asset, the newest day only)
    c = client()
    c.create_registered_model("entasis-BTC-USDT-7d")
    mv = c.create_model_version("entasis-BTC-USDT-7d", source="file:///nonexistent/never-loaded")
    reg.set_alias("entasis-BTC-USDT-7d", reg.CHAMPION, str(mv.version))
    d = check_live_accuracy_and_rollback("BTC/USDT", 7, threshold=0.99, days=1, window_days=30, min_predictions=1,
                                         dry_run=True)
    assert d.live_accuracy == pytest.approx(acc, abs=1e-12)
    assert d.details["rolling"][-1]["n"] == n


def test_window_edges_and_empty_windows(db_url: str) -> None:
    from entasis.store.db import connect

    with connect() as conn:
        rows = _seed(conn)
        # one-day window: only the end day; the end's time of day does not matter (UTC day)
        for end in (END, END + timedelta(hours=23, minutes=59)):
            one = live_scores(conn, [end], window_days=1, asset="BTC/USDT", horizon=7)
            assert one["n"].tolist() == [1]
        # the edge day: in a 31-day window (two rows that day: midnight and 06:00), out of the 30-day one
        w31 = live_scores(conn, [END], window_days=31, asset="BTC/USDT", horizon=7, model_version=BTC_V)
        assert int(w31["n"].iloc[0]) == _expected(rows, asset="BTC/USDT", horizon=7, end=END, days=31)[0] == 32
        # a window with nothing reconciled in it, or an unknown key: n = 0, None, not 0
        empty = live_scores(conn, [END + 60 * DAY, END], window_days=5, asset="ETH/USDT")
        assert empty["n"].tolist() == [0, 0] and empty["accuracy"].tolist() == [None, None]
        assert empty["log_loss"].tolist() == [None, None]
        assert live_scores(conn, [END + 60 * DAY], window_days=5, by_key=True).empty
        assert live_last_day(conn, model_version="nobody/1") is None
        none = rolling_live_accuracy(conn, model_version="nobody/1", horizon=7, days=3, window_days=30)
        assert none.empty
        at = rolling_live_accuracy(conn, model_version="nobody/1", horizon=7, days=2, window_days=30, as_of=END)
        assert at["n"].tolist() == [0, 0] and at["accuracy"].tolist() == [None, None]
        # the session's time zone does not move the day buckets
        conn.execute("SET TIME ZONE 'America/New_York'")
        again = live_scores(conn, [END], window_days=30, asset="BTC/USDT", horizon=7)
        day = conn.execute("SELECT min(day) FROM ml.live_outcomes WHERE model_version = %s", (BTC_V,)).fetchone()
    assert int(again["n"].iloc[0]) == 30
    assert day is not None and day[0] == T0 + 7 * DAY


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"window_days": 0}, "window_days must be a positive"),
    ({"window_days": 2.5}, "window_days must be a positive"),
    ({"window_days": True}, "window_days must be a positive"),
    ({"window_days": 3, "ends": [datetime(2024, 1, 1)]}, "has no timezone"),  # noqa: DTZ001 - the bad input
])
def test_bad_window_is_a_clear_error(db_url: str, kwargs: dict[str, Any], match: str) -> None:
    from entasis.store.db import connect

    ends = kwargs.pop("ends", [END])
    with connect() as conn, pytest.raises(ValueError, match=match):
        live_scores(conn, ends, **kwargs)


def test_rolling_windows_are_half_open(db_url: str) -> None:
    """Windows (d − w, d]: outcomes on 01-01 … 01-04 = right, wrong, wrong, right; w = 2 days."""
    from entasis.store.db import connect
    from entasis.store.upsert import upsert_frame

    t = [datetime(2021, 1, d, tzinfo=UTC) for d in (1, 2, 3, 4)]
    rows = [_row("AAA/USDT", 7, x - 7 * DAY, ok, version="v/1") for x, ok in zip(t, [True, False, False, True],
                                                                                  strict=True)]
    df = pd.DataFrame(rows)
    df["actual_class"] = df["actual_class"].astype("Int16")
    df["correct"] = df["correct"].astype("boolean")
    with connect() as conn:
        upsert_frame(conn, "ml.predictions", df, ["asset", "horizon", "as_of", "model_version"])
        r = rolling_live_accuracy(conn, model_version="v/1", horizon=7, days=2, window_days=2)
    assert [d.date().isoformat() for d in r["day"]] == ["2021-01-03", "2021-01-04"]
    assert r["n"].tolist() == [2, 2]
    assert r["accuracy"].tolist() == pytest.approx([0.0, 0.5])


@pytest.mark.parametrize("flt", [
    {}, {"asset": "BTC/USDT"}, {"horizon": 14}, {"model_version": BTC_V}, {"asset": "ETH/USDT"},
    {"asset": "BTC/USDT", "horizon": 14, "model_version": BTC_V},  # each matches, together nothing
])
def test_live_last_day_and_live_scores_filter_alike(db_url: str, flt: dict[str, Any]) -> None:
    """One (asset, horizon, model_version) filter: the newest reconciled day and the keys scored
    are those of the seeded rows that match it, written out here."""
    from entasis.store.db import connect

    with connect() as conn:
        rows = _seed(conn)
        last = live_last_day(conn, **flt)
        keys = live_scores(conn, [END + 30 * DAY], window_days=400, by_key=True, **flt)
    sel = [r for r in rows if r["correct"] is not None
           and all(r["model_version" if k == "model_version" else k] == v for k, v in flt.items())]
    want_last = max((pd.Timestamp(r["target_date"]).floor("D") for r in sel), default=None)
    assert (None if last is None else pd.Timestamp(last)) == want_last
    assert sorted(zip(keys["asset"], keys["horizon"], strict=True)) == sorted({(r["asset"], r["horizon"]) for r in sel})
    assert keys["n"].sum() == len(sel)
