"""Decision-time honesty (issue 17): a decision taken at T is the same decision when re-run as of T later.

The train DAG's own steps (``jobs.train`` -> ``jobs.backtest`` -> ``jobs.promote``, real PostgreSQL and a
real MLflow registry) run at a champion date T0 and a decision time T (a Sunday 02:00, as the DAG's
schedule). Then candles, features and funding rates after T arrive (so the labels of the last rows
before T are filled in, and bars that were still open at T are now closed and stored). Re-running the
same steps as of T0 and T into a fresh registry gives the same decision, reason, scores, training
``data_hash`` and walk-forward evidence (run id, data hash, every pooled metric).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from entasis.config import get_settings
from entasis.features.compute import LabelParams, compute

SYMBOLS = ("AAA/USDT", "BBB/USDT")
START = pd.Timestamp("2021-01-01", tz="UTC")
N_DAYS = 520
T0 = datetime(2022, 2, 27, 2, 0, tzinfo=UTC)   # Sundays 02:00 (the train DAG's schedule)
T = datetime(2022, 4, 24, 2, 0, tzinfo=UTC)
ENV = {
    "ENTASIS_UNIVERSE__SYMBOLS": json.dumps(list(SYMBOLS)),
    "ENTASIS_UNIVERSE__EXCHANGE": "binance",
    "ENTASIS_LABELS__HORIZONS": "[7]",
    "ENTASIS_TRAIN__MODELS": json.dumps(["lgbm"]),
    "ENTASIS_TRAIN__MEMBER_PARAMS": json.dumps({"lgbm": {"n_estimators": 30, "num_leaves": 7, "n_jobs": 1}}),
    "ENTASIS_BACKTEST__MODELS": "[]",
    "ENTASIS_BACKTEST__PROMOTION_WINDOW_DAYS": "60",
    "ENTASIS_BACKTEST__PROMOTION_REFIT_DAYS": "30",
}


def _candles(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.03, N_DAYS)
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.r_[100.0, close[:-1]]
    spread = np.abs(rng.normal(0, 0.01, N_DAYS)) * close
    return pd.DataFrame({"ts": pd.date_range(START, periods=N_DAYS, freq="1D"), "open": open_,
                         "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
                         "close": close, "volume": rng.uniform(1e3, 2e3, N_DAYS)})


CANDLES = {s: _candles(i) for i, s in enumerate(SYMBOLS)}


def _store(closed_by: datetime | None) -> None:
    """What the collectors and the features job would have stored by ``closed_by`` (None: everything):
    closed daily candles (a bar opening at ts closes at ts + 1 day), their features and labels, funding."""
    from entasis.store.db import connect
    from entasis.store.upsert import upsert_frame

    bars, candles, funding = [], [], []
    for sym, c in CANDLES.items():
        if closed_by is not None:
            c = c[c["ts"] + pd.Timedelta(days=1) <= closed_by]
        bars.append(compute(c.reset_index(drop=True), timeframe="1d", exchange="binance", symbol=sym,
                            labels=LabelParams(horizons=(7,))))
        candles.append(c.assign(exchange="binance", symbol=sym, timeframe="1d"))
        f = pd.DataFrame({"ts": pd.date_range(START, periods=N_DAYS * 3, freq="8h")})
        f = f[f["ts"] <= (closed_by or f["ts"].max())]
        funding.append(f.assign(exchange="binanceusdm", symbol=sym.replace("/USDT", "/USDT:USDT"),
                                funding_rate=1e-4))
    with connect() as conn:
        upsert_frame(conn, "market.candles", pd.concat(candles), ["exchange", "symbol", "timeframe", "ts"])
        upsert_frame(conn, "market.funding_rates", pd.concat(funding), ["exchange", "symbol", "ts"])
        upsert_frame(conn, "features.bars", pd.concat(bars), ["exchange", "symbol", "timeframe", "ts"])


def _decide_at(until: datetime) -> dict[str, Any]:
    """Train, walk forward and promote as the train DAG does for the interval ending at ``until``."""
    from entasis import jobs
    from entasis.registry import models as reg

    (trained,) = jobs.train(until=until, horizon=7)
    (evaluated,) = jobs.backtest([trained], until=until)
    (decision,) = jobs.promote([evaluated], now=until)
    tags = reg.get_version_tags(str(trained["model_name"]), str(trained["version"]))
    ev = evaluated["backtest"]["evidence"]
    return {"version": trained["version"], "train_data_hash": tags["data_hash"],
            "train_scores": {k: tags[k] for k in ("test_accuracy", "test_log_loss", "best_baseline",
                                                  "best_baseline_log_loss", "beats_baseline", "edge_suspicious")},
            "decision": {k: decision[k] for k in ("action", "promoted", "unproven", "reason", "changed")},
            "evidence": {k: ev[k] for k in ("run_id", "data_hash", "metrics", "config", "leakage")},
            "champion": reg.alias_version(str(trained["model_name"]), reg.CHAMPION)}


def _both(home: Path) -> list[dict[str, Any]]:
    """A champion decided at T0, then the challenger decided at T, into a fresh registry under ``home``."""
    import os

    os.environ["ENTASIS_HOME"] = str(home)
    get_settings.cache_clear()
    return [_decide_at(T0), _decide_at(T)]


def test_a_decision_at_t_does_not_change_when_data_after_t_arrives(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from entasis.store.db import connect

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ENTASIS_HOME", str(tmp_path / "first"))  # restored by monkeypatch afterwards
    _store(closed_by=T)
    first = _both(tmp_path / "first")
    assert first[0]["decision"]["action"] == "promote"           # the first model becomes champion
    assert first[1]["decision"]["action"] in ("promote", "keep") and first[1]["decision"]["reason"]

    # later: the bars still open at T close, outcomes after T are known, funding keeps coming
    with connect() as conn:
        before = conn.execute("SELECT count(*), count(y_cls_7d) FROM features.bars").fetchone()
    _store(closed_by=None)
    with connect() as conn:
        after = conn.execute("SELECT count(*), count(y_cls_7d), max(ts) FROM features.bars").fetchone()
    assert before is not None and after is not None
    assert after[0] > before[0] and after[1] > before[1] + 2 * 7  # new rows and newly known outcomes
    assert after[2] > T

    again = _both(tmp_path / "again")
    for a, b in zip(first, again, strict=True):
        assert b["train_data_hash"] == a["train_data_hash"]
        assert b["train_scores"] == a["train_scores"]
        assert b["evidence"] == a["evidence"]
        assert b["decision"] == a["decision"]
        assert b["version"] == a["version"] and b["champion"] == a["champion"]
