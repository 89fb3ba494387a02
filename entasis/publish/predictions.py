"""Publish the champion's prediction for the latest complete bar of every asset and horizon.

For each asset: the latest bar of features.bars that is complete at ``as_of`` (its close,
``ts + timeframe``, is at or before ``as_of``; a bar still in progress is never used). The prediction's
``as_of`` is that bar's close and its ``target_date`` is ``as_of + h days``. For each horizon the
@champion (asset-specific, else pooled) predicts from that bar with the bars before it as context.

Rows go to ``ml.predictions`` through the idempotent upsert, keyed (asset, horizon, as_of,
model_version). Nothing here reads the wall clock: ``as_of`` is the caller's "now" and
``published_at`` defaults to the prediction's as_of, so re-running a publish for the same interval
leaves the table byte-identical. ``data_hash`` is a sha256 of the exact feature rows the model saw
(the bar and its context), so a prediction can be traced to its inputs as well as to its model
(``model_version``, ``run_id``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from entasis.config import get_settings
from entasis.domain import PROBA_COLUMNS, confidence, target_column, timeframe_seconds, utc_datetime
from entasis.features.store import load_bars
from entasis.models.datasets import data_hash
from entasis.publish.champions import Champion, ChampionError, ChampionLoader, record_from, registry_loader
from entasis.publish.factors import DEFAULT_TOP_K, Explainer
from entasis.publish.volatility import publish_vol_forecasts
from entasis.signals.jobs import publish_levels
from entasis.store.upsert import upsert_frame

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.config import Settings
    from entasis.publish.factors import Explainer

log = logging.getLogger(__name__)

PREDICTIONS_TABLE = "ml.predictions"
PREDICTION_KEY = ["asset", "horizon", "as_of", "model_version"]
# Context bars loaded beyond the model's min_history: covers a few missing bars without starving it.
CONTEXT_SLACK_BARS = 30


@dataclass(frozen=True)
class Skipped:
    asset: str
    horizon: int | None
    reason: str


@dataclass
class PublishSummary:
    """What one publish run did; ``keys`` are the (asset, horizon, as_of, model_version) it wrote."""

    as_of: datetime
    keys: list[tuple[str, int, datetime, str]] = field(default_factory=list)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    champions_recorded: int = 0
    vol: dict[str, Any] = field(default_factory=dict)  # entasis.publish.volatility.VolSummary.as_dict()

    @property
    def published(self) -> int:
        return len(self.keys)

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(), "published": self.published, "inserted": self.inserted,
            "updated": self.updated, "unchanged": self.unchanged, "champions_recorded": self.champions_recorded,
            "skipped": [{"asset": s.asset, "horizon": s.horizon, "reason": s.reason} for s in self.skipped],
            "vol": self.vol,
        }


def latest_complete_bar(conn: psycopg.Connection, *, exchange: str, symbol: str, timeframe: str,
                        as_of: datetime) -> datetime | None:
    """Open time of the newest features.bars row whose bar has closed by ``as_of`` (None if none)."""
    step = timedelta(seconds=timeframe_seconds(timeframe))
    row = conn.execute(
        "SELECT max(ts) FROM features.bars WHERE exchange = %s AND symbol = %s AND timeframe = %s "
        "AND ts <= %s",
        (exchange, symbol, timeframe, as_of - step),
    ).fetchone()
    return row[0] if row and row[0] is not None else None


def _input_hash(frame: pd.DataFrame, features: Sequence[str]) -> str:
    return data_hash(frame, list(features))


def publish_predictions(
    conn: psycopg.Connection,
    *,
    as_of: datetime | str | pd.Timestamp,
    assets: Sequence[str] | None = None,
    horizons: Sequence[int] | None = None,
    published_at: datetime | str | pd.Timestamp | None = None,
    loader: ChampionLoader | None = None,
    exchange: str | None = None,
    timeframe: str = "1d",
    top_k: int | None = None,
    max_stale_bars: int = 3,
    settings: Settings | None = None,
    volatility: bool = True,
) -> PublishSummary:
    """Predict and upsert one row per (asset, horizon) for the latest bar complete at ``as_of``.

    ``as_of``: the run's "now" (UTC-aware). ``published_at``: stored as-is; default = each
    prediction's as_of, so re-runs are byte-identical. ``loader``: (asset, horizon) -> Champion or
    None; default the MLflow registry's @champion. An asset whose newest complete bar closed more than
    ``max_stale_bars`` bars before ``as_of`` is skipped (features are behind), as is an (asset,
    horizon) without a champion or whose bar lacks the history the model needs; the summary says why.
    ``volatility``: also publish the volatility forecast of every written key to ml.vol_forecasts
    (``entasis.publish.volatility``; a key it cannot forecast is listed in ``summary.vol``).
    """
    import numpy as np
    import pandas as pd

    s = settings or get_settings()
    now = utc_datetime(as_of, "as_of")
    pub_fixed = utc_datetime(published_at, "published_at") if published_at is not None else None
    assets = list(assets) if assets is not None else list(s.universe.symbols)
    horizons = sorted({int(h) for h in (horizons if horizons is not None else s.labels.horizons)})
    if not assets:
        raise ValueError("no assets to publish")
    if not horizons or any(h <= 0 for h in horizons):
        raise ValueError(f"horizons must be positive day counts; got {horizons}")
    if max_stale_bars < 0:
        raise ValueError(f"max_stale_bars must be >= 0; got {max_stale_bars}")
    exchange = exchange or s.universe.exchange
    step = timedelta(seconds=timeframe_seconds(timeframe))
    load = loader if loader is not None else registry_loader(s)
    summary = PublishSummary(as_of=now)
    explainers: dict[int, Explainer] = {}
    recorded: set[tuple[str, int, str]] = set()
    rows: list[dict[str, Any]] = []

    for asset in assets:
        last_ts = latest_complete_bar(conn, exchange=exchange, symbol=asset, timeframe=timeframe, as_of=now)
        if last_ts is None:
            summary.skipped.append(Skipped(asset, None, f"no complete {timeframe} bar in features.bars at {now}"))
            continue
        bar_close = last_ts + step
        if now - bar_close > max_stale_bars * step:
            summary.skipped.append(Skipped(
                asset, None, f"features are stale: newest complete bar closed {bar_close}, more than "
                f"{max_stale_bars} bar(s) before {now}"))
            continue
        champs: dict[int, Champion] = {}
        for h in horizons:
            try:
                champ = load(asset, h)
            except ChampionError as e:
                summary.skipped.append(Skipped(asset, h, f"champion unavailable: {e}"))
                continue
            if champ is None:
                summary.skipped.append(Skipped(asset, h, "no @champion registered"))
                continue
            want = target_column(h)
            if champ.model.target is not None and champ.model.target != want:
                summary.skipped.append(Skipped(
                    asset, h, f"champion {champ.model_version} was trained on {champ.model.target}, not {want}"))
                continue
            champs[h] = champ
        if not champs:
            continue
        need = max(c.model.min_history for c in champs.values())
        bars = load_bars(conn, exchange=exchange, symbols=[asset], timeframe=timeframe,
                         start=last_ts - (need + CONTEXT_SLACK_BARS) * step, end=last_ts)
        bars = bars.reset_index(drop=True)
        for h, champ in champs.items():
            model = champ.model
            # Each model sees the same, fixed-length context whatever else is published alongside it.
            ctx = bars[bars["ts"] >= last_ts - (model.min_history + CONTEXT_SLACK_BARS) * step]
            row, history = ctx.iloc[[-1]], ctx.iloc[:-1]
            feats = list(model.features or [])
            missing = [f for f in feats if f not in bars.columns]
            if missing:
                summary.skipped.append(Skipped(asset, h, f"features.bars lacks model feature(s) {missing}"))
                continue
            p = model.predict_proba(row, history=history).loc[row.index[0], list(PROBA_COLUMNS)]
            proba = p.to_numpy(dtype=np.float64)
            if not np.isfinite(proba).all():
                summary.skipped.append(Skipped(
                    asset, h, f"bar {last_ts} is not eligible for {champ.model_version} (warm-up or fewer "
                    f"than {model.min_history} bars of history)"))
                continue
            cls = int(np.argmax(proba))
            pct, level = confidence(proba[None, :])
            conf = float(pct[0])
            ex = explainers.get(id(model))
            if ex is None:
                ex = explainers[id(model)] = Explainer(model, top_k=top_k or DEFAULT_TOP_K)
            factors = ex.factors(row, history, cls)
            rows.append({
                "asset": asset, "horizon": h, "as_of": bar_close, "model_version": champ.model_version,
                "predicted_class": cls, "p_bearish": float(proba[0]), "p_neutral": float(proba[1]),
                "p_bullish": float(proba[2]), "confidence": conf, "confidence_level": str(level[0]),
                "target_date": bar_close + timedelta(days=h), "factors": factors, "run_id": champ.run_id,
                "data_hash": _input_hash(ctx, feats), "published_at": pub_fixed or bar_close,
            })
            scope_key = (champ.asset, h, champ.model_version)
            if scope_key not in recorded:
                recorded.add(scope_key)
                if record_from(conn, champ, promoted_at=pub_fixed or bar_close):
                    summary.champions_recorded += 1

    if rows:
        df = pd.DataFrame(rows)
        for c in ("as_of", "target_date", "published_at"):
            df[c] = pd.to_datetime(df[c], utc=True)
        df["predicted_class"] = df["predicted_class"].astype("int16")
        df["horizon"] = df["horizon"].astype("int32")
        res = upsert_frame(conn, PREDICTIONS_TABLE, df, PREDICTION_KEY)
        summary.inserted, summary.updated, summary.unchanged = res.inserted, res.updated, res.unchanged
        summary.keys = [(r["asset"], r["horizon"], r["as_of"], r["model_version"]) for r in rows]
        # nearest support/resistance of each published bar into ml.levels (joins on asset, as_of)

        publish_levels(conn, sorted({(r["asset"], r["as_of"]) for r in rows}), exchange=exchange,
                       timeframe=timeframe, settings=s)
    if volatility:
        summary.vol = publish_vol_forecasts(
            conn, [(a, h, t) for a, h, t, _ in summary.keys], now=now, exchange=exchange,
            universe=assets, published_at=pub_fixed).as_dict()
    for sk in summary.skipped:
        log.warning("publish: skipped %s h=%s: %s", sk.asset, sk.horizon, sk.reason)
    log.info("publish: %s", summary.as_dict())
    return summary
