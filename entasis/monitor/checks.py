"""Health checks the daily monitor runs: pure functions over frames, plus the queries that feed them.

Everything is measured *as of* an explicit ``now`` (the end of the DAG's data interval), never the
wall clock, so re-running a monitor run for the same interval gives the same answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.backtest.evaluation import live_scores
from entasis.features.catalog import FEATURE_COLUMNS, timeframe_seconds
from entasis.features.store import load_bars

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.config import MonitorConfig


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (quantile bins of the reference).

    0 means identical distributions; > 0.25 is the conventional threshold for a material shift. With
    few current values the bin count drops to keep about 10 values a bin, and counts get a +0.5
    (Jeffreys) smoothing, so sampling noise alone stays well below the threshold. NaNs are dropped;
    too few values on either side gives NaN (no verdict, not a false alarm).
    """
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    bins = min(bins, len(cur) // 10)
    if bins < 2 or len(ref) < 2 * bins:
        return float("nan")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return float("nan")
    edges[0], edges[-1] = -np.inf, np.inf
    rc = np.histogram(ref, edges)[0] + 0.5
    cc = np.histogram(cur, edges)[0] + 0.5
    r, c = rc / rc.sum(), cc / cc.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def class_mix_shift(reference: np.ndarray, current: np.ndarray, n_classes: int = 3) -> float:
    """PSI between the predicted-class frequencies of two periods (NaN when either is empty)."""
    ref = np.asarray(reference, dtype=int)
    cur = np.asarray(current, dtype=int)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    eps = 1e-3
    r = np.bincount(ref, minlength=n_classes)[:n_classes] / len(ref) + eps
    c = np.bincount(cur, minlength=n_classes)[:n_classes] / len(cur) + eps
    return float(np.sum((c - r) * np.log(c / r)))


def feature_drift(frame: pd.DataFrame, features: list[str], now: datetime, *, window_days: int,
                  reference_days: int) -> pd.DataFrame:
    """PSI per feature: the last ``window_days`` before ``now`` against the ``reference_days`` before that."""
    import pandas as pd

    ts = pd.to_datetime(frame["ts"], utc=True)
    now_ts = pd.Timestamp(now)
    cur_lo = now_ts - pd.Timedelta(days=window_days)
    ref_lo = cur_lo - pd.Timedelta(days=reference_days)
    cur = frame[(ts >= cur_lo) & (ts < now_ts)]
    ref = frame[(ts >= ref_lo) & (ts < cur_lo)]
    rows = [{"feature": f, "psi": psi(ref[f].to_numpy(float), cur[f].to_numpy(float)),
             "n_reference": len(ref), "n_current": len(cur)} for f in features if f in frame.columns]
    return pd.DataFrame(rows, columns=["feature", "psi", "n_reference", "n_current"])


def stale_series(latest: pd.DataFrame, now: datetime, stale_after_bars: float) -> pd.DataFrame:
    """Series whose newest candle is older than ``stale_after_bars`` bars (columns of ``latest`` + age_bars)."""
    import pandas as pd

    if latest.empty:
        return latest.assign(age_bars=pd.Series(dtype=float))
    step = latest["timeframe"].map(lambda tf: timeframe_seconds(str(tf)))
    # a bar opening at ts closes at ts + step; its age counts from that close
    age = (pd.Timestamp(now) - (pd.to_datetime(latest["ts"], utc=True) + pd.to_timedelta(step, unit="s")))
    out = latest.assign(age_bars=age.dt.total_seconds() / step)
    return out[out["age_bars"] > stale_after_bars].reset_index(drop=True)


@dataclass
class MonitorReport:
    now: str
    live: list[dict[str, Any]] = field(default_factory=list)
    low_accuracy: list[dict[str, Any]] = field(default_factory=list)
    drifted_features: list[dict[str, Any]] = field(default_factory=list)
    class_mix_psi: dict[str, float] = field(default_factory=dict)
    class_mix_drifted: list[int] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    feature_psi: list[dict[str, Any]] = field(default_factory=list)  # every feature's PSI (ml.feature_drift)

    @property
    def retrain(self) -> bool:
        return bool(self.low_accuracy or self.drifted_features or self.class_mix_drifted)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["retrain"] = self.retrain
        return d


def live_accuracy(conn: psycopg.Connection, now: datetime, window_days: int) -> pd.DataFrame:
    """Live accuracy and log-loss per asset and horizon (every model version together) over the
    ``window_days`` target days ending on the day of ``now``: the one aggregation,
    :func:`entasis.backtest.evaluation.live_scores`. Columns asset, horizon, n, accuracy, log_loss; only
    (asset, horizon) with reconciled predictions in the window."""
    df = live_scores(conn, [now], window_days=window_days, by_key=True)
    out = df[["asset", "horizon", "n", "accuracy", "log_loss"]].reset_index(drop=True)
    return out.astype({"accuracy": "float64", "log_loss": "float64"})  # n > 0 on every row: never None


def latest_candles(conn: psycopg.Connection, now: datetime) -> pd.DataFrame:
    import pandas as pd

    rows = conn.execute(
        """SELECT exchange, symbol, timeframe, max(ts) AS ts FROM market.candles
           WHERE ts < %s GROUP BY exchange, symbol, timeframe ORDER BY 1, 2, 3""",
        (now,),
    ).fetchall()
    return pd.DataFrame(rows, columns=["exchange", "symbol", "timeframe", "ts"])


def predicted_classes(conn: psycopg.Connection, lo: datetime, hi: datetime) -> dict[int, np.ndarray]:
    rows = conn.execute(
        "SELECT horizon, predicted_class FROM ml.predictions WHERE as_of >= %s AND as_of < %s", (lo, hi)
    ).fetchall()
    out: dict[int, list[int]] = {}
    for h, c in rows:
        out.setdefault(int(h), []).append(int(c))
    return {h: np.asarray(v) for h, v in out.items()}


def run_checks(conn: psycopg.Connection, now: datetime, cfg: MonitorConfig, *, timeframe: str = "1d") -> MonitorReport:
    """Every check as of ``now``; the report says whether a retrain is warranted and why."""
    rep = MonitorReport(now=now.isoformat())
    live = live_accuracy(conn, now, cfg.live_window_days)
    rep.live = live.to_dict("records")
    judged = live[live["n"] >= cfg.min_reconciled]
    low = judged[judged["accuracy"] < cfg.min_live_accuracy]
    rep.low_accuracy = low.to_dict("records")
    for r in rep.low_accuracy:
        rep.reasons.append(f"live accuracy {r['accuracy']:.1%} < {cfg.min_live_accuracy:.0%} for "
                           f"{r['asset']} {r['horizon']}d over {r['n']} outcomes")

    lo = now - timedelta(days=cfg.drift_window_days + cfg.reference_days)
    bars = load_bars(conn, timeframe=timeframe, start=lo, end=now)
    if not bars.empty:
        drift = feature_drift(bars, list(FEATURE_COLUMNS), now, window_days=cfg.drift_window_days,
                              reference_days=cfg.reference_days)
        rep.feature_psi = drift.to_dict("records")
        bad = drift[drift["psi"] > cfg.psi_threshold]
        judged = drift["psi"].notna().sum()
        # one feature over the line is expected by chance among ~25; a broad shift is not
        if judged and len(bad) / judged >= cfg.min_drifted_share:
            rep.drifted_features = bad.to_dict("records")
        if rep.drifted_features:
            top = ", ".join(f"{f} ({p:.2f})" for f, p in bad.sort_values("psi", ascending=False)[["feature", "psi"]]
                            .head(5).itertuples(index=False))
            rep.reasons.append(f"feature drift (PSI > {cfg.psi_threshold}): {top}")

    cur = predicted_classes(conn, now - timedelta(days=cfg.drift_window_days), now)
    ref = predicted_classes(conn, lo, now - timedelta(days=cfg.drift_window_days))
    for h in sorted(set(cur) & set(ref)):
        v = class_mix_shift(ref[h], cur[h])
        if np.isfinite(v):
            rep.class_mix_psi[str(h)] = v
            if v > cfg.psi_threshold:
                rep.class_mix_drifted.append(h)
                rep.reasons.append(f"predicted class mix shifted at {h}d (PSI {v:.2f})")

    stale = stale_series(latest_candles(conn, now), now, cfg.stale_after_bars)
    rep.stale = [{**r, "ts": str(r["ts"])} for r in stale.to_dict("records")]
    for r in rep.stale:
        rep.reasons.append(f"stale data: {r['exchange']} {r['symbol']} {r['timeframe']} last bar {r['ts']} "
                           f"({r['age_bars']:.1f} bars old)")
    return rep
