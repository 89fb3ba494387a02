"""Publish a volatility forecast beside every prediction: annualized vol and the ±1σ move in price.

The forecast is the pooled HAR-RV with Parkinson range terms chosen in docs/volatility.md
(``PUBLISHED_TERMS``), refit at each publish on the daily candles of the universe known at the
prediction's ``as_of`` (training rows whose h-day window closed by then; the forecast row is the newest
daily bar closed by ``as_of``). Fitting is a least-squares solve on a few thousand rows, so refitting
every run costs milliseconds and needs no registry; the result is a pure function of the candles
before ``as_of``, so re-running a publish leaves ``ml.vol_forecasts`` byte-identical and appending later
candles never changes it.

Columns (``ml.vol_forecasts``, key asset, horizon, as_of; view ``ml.predictions_vol`` joins them onto
``ml.predictions``): ``vol_annualized`` (the forecast of ``y_vol_{h}d``: sd of the next h daily log
returns x sqrt(365)), ``vol_horizon`` = vol_annualized x sqrt(h / 365) (sd of the h-day log return),
``ref_price`` (close of that daily bar), ``expected_move`` = ref_price x vol_horizon (±1σ in price) and
``price_low_1sd`` / ``price_high_1sd`` = ref_price x exp(∓vol_horizon); ``realized_vol`` is filled by
later publishes once the window has closed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from entasis.models.base import ModelError
from entasis.models.har import VARIANTS, HARModel, panel, trainable, variant_fit
from entasis.store.upsert import upsert_frame

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

log = logging.getLogger(__name__)

VOL_TABLE = "ml.vol_forecasts"
VOL_KEY = ["asset", "horizon", "as_of"]
VOL_TIMEFRAME = "1d"  # HAR components are daily whatever the models' timeframe
PUBLISHED_MODEL = "har_pk"
MAX_STALE_DAYS = 3
DAYS_PER_YEAR = 365.0


@dataclass
class VolSummary:
    published: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    realized_filled: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"published": self.published, "inserted": self.inserted, "updated": self.updated,
                "unchanged": self.unchanged, "realized_filled": self.realized_filled, "skipped": self.skipped}


def forecast_rows(candles: Mapping[str, pd.DataFrame], requests: Iterable[tuple[str, int, datetime]], *,
                  model: str = PUBLISHED_MODEL,
                  max_stale_days: int = MAX_STALE_DAYS) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Forecast rows for (asset, horizon, as_of) requests from daily candles; (rows, skipped).

    Pure: for each distinct as_of only candles whose bar closed by as_of are read, the pooled HAR is fit
    on rows whose target window closed by as_of, and the asset's newest closed bar is forecast.
    """
    import numpy as np
    import pandas as pd

    if model not in VARIANTS:
        raise ValueError(f"unknown HAR variant {model!r}; expected one of {sorted(VARIANTS)}")
    terms, fit = VARIANTS[model], variant_fit(model)
    reqs = sorted({(str(a), int(h), pd.Timestamp(t).tz_convert("UTC")) for a, h, t in requests},
                  key=lambda r: (r[2], r[0], r[1]))
    skipped: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    day = pd.Timedelta(days=1)
    for as_of in sorted({r[2] for r in reqs}):
        mine = [r for r in reqs if r[2] == as_of]
        known = {s: c[pd.to_datetime(c["ts"], utc=True) + day <= as_of] for s, c in candles.items()}
        known = {s: c for s, c in known.items() if len(c) >= 2}
        if not known:
            skipped += [{"asset": a, "horizon": h, "reason": f"no daily candles closed by {as_of}"}
                        for a, h, _ in mine]
            continue
        hs = sorted({h for _, h, _ in mine})
        p = panel(known, hs)
        for h in hs:
            try:
                m = HARModel(h, terms, fit).fit(trainable(p, h, as_of))
            except ModelError as e:
                skipped += [{"asset": a, "horizon": hh, "reason": f"HAR fit failed: {e}"}
                            for a, hh, _ in mine if hh == h]
                continue
            for a, hh, _ in mine:
                if hh != h:
                    continue
                rows = p[p["symbol"] == a]
                if rows.empty:
                    skipped.append({"asset": a, "horizon": h, "reason": f"no daily candles of {a} by {as_of}"})
                    continue
                last = rows.iloc[[-1]]
                bar_ts = last["ts"].iloc[0]
                if as_of - (bar_ts + day) > pd.Timedelta(days=max_stale_days):
                    skipped.append({"asset": a, "horizon": h, "reason": f"newest daily candle of {a} closed "
                                    f"{bar_ts + day}, more than {max_stale_days} days before {as_of}"})
                    continue
                vol = float(m.predict(last)[0])
                if not np.isfinite(vol) or vol <= 0:
                    skipped.append({"asset": a, "horizon": h, "reason": f"{a} lacks the {m.min_history} daily "
                                    f"bars a forecast needs at {as_of}"})
                    continue
                vh = vol * math.sqrt(h / DAYS_PER_YEAR)
                price = float(last["close"].iloc[0])
                out.append({"asset": a, "horizon": h, "as_of": as_of, "model": model, "vol_annualized": vol,
                            "vol_horizon": vh, "ref_price": price, "expected_move": price * vh,
                            "price_low_1sd": price * math.exp(-vh), "price_high_1sd": price * math.exp(vh),
                            "bar_ts": bar_ts, "n_train": m.n_train})
    cols = ["asset", "horizon", "as_of", "model", "vol_annualized", "vol_horizon", "ref_price", "expected_move",
            "price_low_1sd", "price_high_1sd", "bar_ts", "n_train"]
    return pd.DataFrame(out, columns=cols), skipped


def load_daily_candles(conn: psycopg.Connection, *, exchange: str, symbols: Sequence[str],
                       before: datetime) -> dict[str, pd.DataFrame]:
    """Daily candles of ``symbols`` whose bar closed by ``before`` (nothing later is read)."""
    import pandas as pd

    cur = conn.execute(
        "SELECT symbol, ts, high, low, close FROM market.candles WHERE exchange = %s AND timeframe = %s "
        "AND symbol = ANY(%s) AND ts <= %s ORDER BY symbol, ts",
        (exchange, VOL_TIMEFRAME, list(symbols), before - timedelta(days=1)))
    df = pd.DataFrame(cur.fetchall(), columns=["symbol", "ts", "high", "low", "close"])
    if df.empty:
        return {}
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return {str(s): g.drop(columns="symbol").reset_index(drop=True) for s, g in df.groupby("symbol")}


def fill_realized(conn: psycopg.Connection, *, exchange: str, now: datetime) -> int:
    """Set ``realized_vol`` of forecasts whose h-day window closed by ``now`` (same definition as the label)."""
    import numpy as np

    todo = conn.execute(
        f"SELECT asset, horizon, as_of, bar_ts FROM {VOL_TABLE} WHERE realized_vol IS NULL "  # noqa: S608
        "AND bar_ts + make_interval(days => horizon + 1) <= %s", (now,)).fetchall()
    n = 0
    for asset, h, as_of, bar_ts in todo:
        closes = [r[0] for r in conn.execute(
            "SELECT close FROM market.candles WHERE exchange = %s AND symbol = %s AND timeframe = %s "
            "AND ts >= %s AND ts <= %s ORDER BY ts",
            (exchange, asset, VOL_TIMEFRAME, bar_ts, bar_ts + timedelta(days=int(h)))).fetchall()]
        if len(closes) != int(h) + 1:
            continue  # a gap: "h days" would not be h returns; leave it unknown
        lr = np.diff(np.log(np.asarray(closes, dtype=np.float64)))
        rv = float(np.std(lr) * math.sqrt(DAYS_PER_YEAR))
        conn.execute(f"UPDATE {VOL_TABLE} SET realized_vol = %s WHERE asset = %s AND horizon = %s "  # noqa: S608
                     "AND as_of = %s", (rv, asset, h, as_of))
        n += 1
    return n


def publish_vol_forecasts(conn: psycopg.Connection, keys: Iterable[tuple[str, int, datetime]], *,
                          now: datetime, exchange: str, universe: Sequence[str] = (),
                          published_at: datetime | None = None) -> VolSummary:
    """Upsert one vol forecast per (asset, horizon, as_of) key, pooled over ``universe`` ∪ the keys' assets.

    ``now`` bounds what is read (the publish run's as_of). ``published_at`` defaults to each row's as_of,
    so re-runs are byte-identical.
    """
    import pandas as pd

    keys = list(keys)
    summary = VolSummary()
    if keys:
        symbols = sorted({*universe, *(k[0] for k in keys)})
        candles = load_daily_candles(conn, exchange=exchange, symbols=symbols, before=now)
        rows, summary.skipped = forecast_rows(candles, keys)
        if not rows.empty:
            rows["published_at"] = published_at if published_at is not None else rows["as_of"]
            for c in ("as_of", "bar_ts", "published_at"):
                rows[c] = pd.to_datetime(rows[c], utc=True)
            rows["horizon"] = rows["horizon"].astype("int32")
            rows["n_train"] = rows["n_train"].astype("int32")
            res = upsert_frame(conn, VOL_TABLE, rows, VOL_KEY)
            summary.published = len(rows)
            summary.inserted, summary.updated, summary.unchanged = res.inserted, res.updated, res.unchanged
    summary.realized_filled = fill_realized(conn, exchange=exchange, now=now)
    for s in summary.skipped:
        log.warning("vol forecast skipped %s h=%s: %s", s["asset"], s["horizon"], s["reason"])
    return summary
