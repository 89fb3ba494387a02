"""What each endpoint answers, read from ml.* as published: queries plus the shaping of their rows.

Nothing here predicts or recomputes a model's output; a prediction is served exactly as the publisher
stored it, with the registry facts ``ml.champions`` recorded beside it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from entasis.api.analytics import (
    BASELINE_NAME,
    LIVE_WINDOW_DAYS,
    HitRate,
    Outcome,
    baseline_calls,
    class_name,
    hit_rate,
    live_hit_rate,
)
from entasis.domain import CLASS_NAMES, POOLED

if TYPE_CHECKING:
    from entasis.api.store import ReaderStore


class UnknownAsset(LookupError):
    def __init__(self, asset: str, known: Sequence[str]) -> None:
        self.asset, self.known = asset, list(known)
        names = ", ".join(known) if known else "none (nothing published yet)"
        super().__init__(f"unknown asset {asset!r}; assets with published predictions: {names}")


class NoPrediction(LookupError):
    pass


def timeframe_label(horizon: int) -> str:
    return f"{int(horizon)}d"


def parse_horizon(value: str | int, allowed: Sequence[int]) -> int:
    """'7d' / '7' / 7 -> 7, when 7 is a configured horizon; ValueError naming the allowed ones otherwise."""
    text = str(value).strip().lower()
    num = text[:-1] if text.endswith("d") else text
    if not num.isdigit() or int(num) not in allowed:
        raise ValueError(f"{value!r} is not a published horizon; expected one of "
                         f"{', '.join(timeframe_label(h) for h in allowed)}")
    return int(num)


def resolve_asset(value: str, known: Sequence[str]) -> str:
    """Match 'BTC/USDT', 'btc-usdt', 'BTC_USDT' or 'BTCUSDT' to a known asset; UnknownAsset otherwise."""
    text = value.strip().upper()
    if text in known:
        return text
    for sep in ("-", "_", ":"):
        cand = text.replace(sep, "/")
        if cand in known:
            return cand
    squashed = {k.replace("/", ""): k for k in known}
    if text in squashed:
        return squashed[text]
    raise UnknownAsset(value, known)


def _float(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


async def known_assets(store: ReaderStore) -> list[str]:
    rows = await store.fetch("SELECT DISTINCT asset FROM ml.predictions ORDER BY asset")
    return [str(r[0]) for r in rows]


# -- POST /predict ---------------------------------------------------------------------------------
# One statement per /predict: the latest row, its champion facts and (where the store has
# ml.vol_forecasts, keyed by asset, horizon, as_of) its volatility forecast.
_LATEST_COLUMNS = """
SELECT p.asset, p.horizon, p.as_of, p.model_version, p.predicted_class, p.p_bearish, p.p_neutral,
       p.p_bullish, p.confidence, p.confidence_level, p.target_date, p.factors, p.run_id, p.data_hash,
       p.published_at,
       c.asset, c.trained_at, c.promoted_at, c.unproven, c.test_accuracy, c.best_baseline,
       c.best_baseline_accuracy, c.beats_baseline,
       h.asset, h.unproven,
       cur.model_name || '/' || cur.version"""
_VOL_COLUMNS = """,
       v.model, v.vol_annualized, v.vol_horizon, v.ref_price, v.expected_move, v.price_low_1sd,
       v.price_high_1sd, v.realized_vol, v.published_at"""
_LATEST_FROM = """
FROM (SELECT * FROM ml.predictions WHERE asset = %(asset)s AND horizon = %(h)s
      ORDER BY as_of DESC, published_at DESC, model_version DESC LIMIT 1) p
LEFT JOIN ml.champions c
  ON c.horizon = p.horizon AND c.asset IN (p.asset, 'pooled') AND c.model_name || '/' || c.version = p.model_version
LEFT JOIN LATERAL (
    SELECT asset, unproven FROM ml.champion_history x
    WHERE x.horizon = p.horizon AND x.asset IN (p.asset, 'pooled')
      AND x.model_name || '/' || x.version = p.model_version
    ORDER BY x.promoted_at DESC LIMIT 1) h ON true
LEFT JOIN LATERAL (
    SELECT model_name, version FROM ml.champions y
    WHERE y.horizon = p.horizon AND y.asset IN (p.asset, 'pooled')
    ORDER BY (y.asset = 'pooled') LIMIT 1) cur ON true
"""
_VOL_JOIN = """LEFT JOIN ml.vol_forecasts v
  ON v.asset = p.asset AND v.horizon = p.horizon AND v.as_of = p.as_of
"""
_LATEST_SQL = _LATEST_COLUMNS + _LATEST_FROM
_LATEST_WITH_VOL_SQL = _LATEST_COLUMNS + _VOL_COLUMNS + _LATEST_FROM + _VOL_JOIN


def skill(test_accuracy: Any, best_baseline: Any, best_baseline_accuracy: Any,
          beats: Any) -> dict[str, Any] | None:
    """The champion's out-of-sample accuracy vs its best naive baseline, as the registry recorded it."""
    acc, base = _float(test_accuracy), _float(best_baseline_accuracy)
    if acc is None and base is None and best_baseline is None and beats is None:
        return None
    return {"test_accuracy": acc, "best_baseline": best_baseline, "best_baseline_accuracy": base,
            "accuracy_vs_baseline": None if acc is None or base is None else acc - base,
            "beats_baseline": beats}


def _vol_row(row: Sequence[Any]) -> dict[str, Any] | None:
    model, ann, hv, ref, move, lo, hi, realized, pub = row
    if pub is None:  # NOT NULL in ml.vol_forecasts: no row joined
        return None
    return {"model": model, "annualized_vol": _float(ann), "horizon_vol": _float(hv), "ref_price": _float(ref),
            "expected_move": _float(move), "price_low_1sd": _float(lo), "price_high_1sd": _float(hi),
            "realized_vol": _float(realized), "published_at": pub}


async def latest_prediction(store: ReaderStore, asset: str, horizon: int, *,
                            with_volatility: bool = False) -> dict[str, Any]:
    """The latest published row for (asset, horizon); ``with_volatility``: the store has
    ml.vol_forecasts, read the row's forecast in the same statement (else it is None)."""
    rows = await store.fetch(_LATEST_WITH_VOL_SQL if with_volatility else _LATEST_SQL,
                             {"asset": asset, "h": horizon})
    if not rows:
        raise NoPrediction(f"no published prediction for {asset} at {timeframe_label(horizon)}")
    (a, h, as_of, mv, cls, pb, pn, pu, conf, level, target, factors, run_id, dhash, pub,
     c_scope, trained, promoted, c_unproven, acc, base_name, base_acc, beats, h_scope, h_unproven,
     cur) = rows[0][:26]
    vol = _vol_row(rows[0][26:]) if with_volatility else None
    unproven = c_unproven if c_scope is not None else h_unproven
    return {
        "asset_symbol": a, "timeframe": timeframe_label(h), "horizon_days": int(h),
        "predicted_class": class_name(int(cls)), "confidence": _float(conf), "confidence_level": level,
        "probabilities": dict(zip(CLASS_NAMES, (_float(pb), _float(pn), _float(pu)), strict=True)),
        "factors": factors or [],
        "volatility_forecast": vol,
        "model": {
            "version": mv, "run_id": run_id, "scope": c_scope or h_scope,
            "unproven": unproven, "trained_at": trained, "promoted_at": promoted,
            "is_current_champion": cur == mv,
            "skill": skill(acc, base_name, base_acc, beats) if c_scope is not None else None,
        },
        "predicted_at": as_of, "target_date": target, "published_at": pub, "data_hash": dhash,
    }


# -- GET /predictions/{asset} ----------------------------------------------------------------------
_HISTORY_SQL = """
SELECT asset, horizon, as_of, target_date, predicted_class, confidence, actual_class, model_version,
       p_bearish, p_neutral, p_bullish, confidence_level, realized_return, correct, published_at
FROM ml.predictions WHERE asset = %(asset)s AND (%(h)s::int IS NULL OR horizon = %(h)s::int)
ORDER BY as_of DESC, horizon, published_at DESC, model_version DESC
"""


def _outcome(r: Sequence[Any]) -> Outcome:
    return Outcome(asset=r[0], horizon=int(r[1]), as_of=r[2], target_date=r[3], predicted_class=int(r[4]),
                   confidence=float(r[5]), actual_class=None if r[6] is None else int(r[6]))


async def history(store: ReaderStore, asset: str, horizon: int | None, limit: int) -> dict[str, Any]:
    rows = await store.fetch(_HISTORY_SQL, {"asset": asset, "h": horizon})
    outcomes = [_outcome(r) for r in rows]
    calls = baseline_calls(outcomes)
    items = []
    for r, b in list(zip(rows, calls, strict=True))[:limit]:
        actual = None if r[6] is None else int(r[6])
        items.append({
            "timeframe": timeframe_label(r[1]), "horizon_days": int(r[1]), "predicted_at": r[2], "target_date": r[3],
            "predicted_class": class_name(int(r[4])), "confidence": _float(r[5]), "confidence_level": r[11],
            "probabilities": dict(zip(CLASS_NAMES, (_float(r[8]), _float(r[9]), _float(r[10])), strict=True)),
            "model_version": r[7], "published_at": r[14],
            "actual_class": class_name(actual), "realized_return": _float(r[12]), "correct": r[13],
            "baseline_class": class_name(b), "baseline_correct": None if actual is None or b is None else b == actual,
        })
    by_h: dict[int, list[int]] = {}
    for i, o in enumerate(outcomes):
        by_h.setdefault(o.horizon, []).append(i)
    rates = {}
    for h, idx in sorted(by_h.items()):
        sub, sub_calls = [outcomes[i] for i in idx], [calls[i] for i in idx]
        rates[timeframe_label(h)] = {"all": hit_rate(sub, sub_calls).as_dict(),
                                     f"live_{LIVE_WINDOW_DAYS}d": live_hit_rate(sub, sub_calls).as_dict()}
    return {"asset_symbol": asset, "timeframe": None if horizon is None else timeframe_label(horizon),
            "count": len(items), "total": len(rows), "hit_rate": rates, "baseline": BASELINE_NAME,
            "predictions": items}


# -- GET /model/status -----------------------------------------------------------------------------
_SCORED_SQL = """
SELECT asset, horizon, as_of, target_date, predicted_class, confidence, actual_class
FROM ml.predictions WHERE actual_class IS NOT NULL
ORDER BY asset, horizon, as_of
"""
_COUNTS_SQL = """
SELECT asset, horizon, count(*), count(actual_class), max(as_of), max(published_at)
FROM ml.predictions GROUP BY asset, horizon
"""
_CHAMPIONS_SQL = """
SELECT asset, horizon, model_name, version, run_id, trained_at, promoted_at, unproven, test_accuracy,
       best_baseline, best_baseline_accuracy, beats_baseline
FROM ml.champions
"""
_LAST_CANDLE_SQL = """
SELECT max(ts) FROM ml.asset_prices WHERE exchange = %(ex)s AND asset = %(asset)s AND timeframe = %(tf)s
"""


# The project's one live-accuracy aggregation is the SQL function ml.live_scores (migration 0506); the window
# end is ml.model_status's live_window_end: the latest reconciled target date of the asset and horizon.
_LIVE_SQL = """
WITH ends AS (
    SELECT asset, horizon, max(target_date) AS window_end FROM ml.predictions
    WHERE correct IS NOT NULL AND actual_class IS NOT NULL GROUP BY asset, horizon)
SELECT e.asset, e.horizon, l.n, l.n_correct
FROM ends e CROSS JOIN LATERAL ml.live_scores(e.window_end, %(days)s, e.asset, e.horizon) l
"""


async def live_records(store: ReaderStore) -> dict[tuple[str, int], HitRate]:
    """Per (asset, horizon): live accuracy and count from ml.live_scores, and beside them the naive
    baseline's on the same window (computed from the reconciled rows, which the view does not keep)."""
    sc = await scored(store)
    rows_live = await store.fetch(_LIVE_SQL, {"days": LIVE_WINDOW_DAYS})
    live = {(str(a), int(h)): (int(n), int(k)) for a, h, n, k in rows_live}
    out = {}
    for key in sorted(set(sc) | set(live)):
        rows = sc.get(key, [])
        base = live_hit_rate(rows, baseline_calls(rows))
        n, k = live.get(key, (0, 0))
        out[key] = dataclasses.replace(base, n_reconciled=n, model=k / n if n else None)
    return out


async def scored(store: ReaderStore) -> dict[tuple[str, int], list[Outcome]]:
    """Every reconciled prediction, grouped by (asset, horizon), oldest first."""
    out: dict[tuple[str, int], list[Outcome]] = {}
    for r in await store.fetch(_SCORED_SQL):
        o = _outcome(r)
        out.setdefault((o.asset, o.horizon), []).append(o)
    return out


async def champions(store: ReaderStore) -> dict[tuple[str, int], tuple[Any, ...]]:
    return {(r[0], int(r[1])): tuple(r) for r in await store.fetch(_CHAMPIONS_SQL)}


def serving_champion(champs: dict[tuple[str, int], tuple[Any, ...]], asset: str,
                     horizon: int) -> tuple[Any, ...] | None:
    """The asset-specific champion, else the pooled one (as ml.model_status and the publisher choose)."""
    return champs.get((asset, horizon)) or champs.get((POOLED, horizon))


async def last_candles(store: ReaderStore, assets: Sequence[str], exchange: str,
                       timeframe: str) -> dict[str, datetime | None]:
    out: dict[str, datetime | None] = {}
    for a in assets:
        rows = await store.fetch(_LAST_CANDLE_SQL, {"ex": exchange, "asset": a, "tf": timeframe})
        out[a] = rows[0][0] if rows else None
    return out


async def model_status(store: ReaderStore, *, exchange: str, timeframe: str) -> dict[str, Any]:
    counts = {(r[0], int(r[1])): r for r in await store.fetch(_COUNTS_SQL)}
    champs = await champions(store)
    sc = await scored(store)
    lives = await live_records(store)
    keys = sorted(set(counts) | {k for k in champs if k[0] != POOLED})
    candles = await last_candles(store, sorted({a for a, _ in keys}), exchange, timeframe)
    items = []
    for asset, h in keys:
        c = serving_champion(champs, asset, h)
        rows = sc.get((asset, h), [])
        live = lives.get((asset, h)) or live_hit_rate(rows, baseline_calls(rows))
        n = counts.get((asset, h))
        items.append({
            "asset_symbol": asset, "timeframe": timeframe_label(h), "horizon_days": h,
            "champion": None if c is None else {
                "scope": c[0], "model_name": c[2], "version": c[3], "model_version": f"{c[2]}/{c[3]}",
                "run_id": c[4], "trained_at": c[5], "promoted_at": c[6], "unproven": c[7]},
            "last_trained": None if c is None else c[5],
            "baseline_comparison": None if c is None else skill(c[8], c[9], c[10], c[11]),
            "live": {"window_days": LIVE_WINDOW_DAYS,
                     "window_end": max((o.target_date for o in rows), default=None),
                     "n": live.n_reconciled, "accuracy": live.model, "baseline": BASELINE_NAME,
                     "n_compared": live.n_compared, "model_on_compared": live.model_on_compared,
                     "baseline_accuracy": live.baseline},
            "data": {"last_candle_ts": candles.get(asset), "last_as_of": None if n is None else n[4],
                     "last_published": None if n is None else n[5], "n_predictions": 0 if n is None else int(n[2]),
                     "n_reconciled": 0 if n is None else int(n[3])},
        })
    return {"models": items}


async def health(store: ReaderStore, now: datetime) -> dict[str, Any]:
    rows = await store.fetch("SELECT generation, (SELECT max(published_at) FROM ml.predictions) FROM ml.serving_state")
    gen, last = rows[0] if rows else (None, None)
    return {"status": "ok", "database": "reachable", "generation": gen, "last_published": last,
            "last_publish_age_s": None if last is None else (now - last).total_seconds()}
