"""Walk-forward, out-of-sample scoring of volatility forecasts: HAR-RV vs GARCH(1,1), EWMA, naive, LightGBM.

Schedule: at each refit date R (month starts by default) every model is refit on what is known at R
(HAR and LightGBM: rows whose h-day target window closed by R; GARCH: returns up to R), then forecasts
every bar whose close falls in [R, next R) from data up to that close. No row is ever forecast by a
model that saw its target. EWMA and naive have nothing to fit.

Losses per row, on the label ``y_vol_{h}d`` (population sd of the next h daily log returns, annualized):

* QLIKE = RV/F - ln(RV/F) - 1 with RV = y², F = forecast² (robust to noise in the RV proxy, Patton 2011);
* MSE of log vol = (ln forecast - ln y)².

Realized vols are floored at ``Y_FLOOR`` before the losses (a window of flat closes has y = 0 and an
infinite QLIKE); the scorer reports how many rows that touched. Differences between two models are
paired per row and get a moving-block bootstrap interval over forecast days (all assets of a day move
together), with blocks of ``max(2h, 30)`` days because targets overlap for h days and volatility is
persistent for longer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.backtest.metrics import block_bootstrap_diff
from entasis.domain import utc_timestamp
from entasis.features.compute import LabelParams, compute
from entasis.models import har, vol_refs
from entasis.models.base import ModelError
from entasis.models.volatility import VolatilityModel

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

Y_FLOOR = 1e-3  # annualized vol of 0.1%
REFERENCES = ("garch", "garch_t", "ewma", "naive")


def qlike(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per-row QLIKE of vol forecast f for realized vol y (both annualized vols, not variances)."""
    ratio = (np.maximum(np.asarray(y, dtype=np.float64), Y_FLOOR) / np.asarray(f, dtype=np.float64)) ** 2
    return ratio - np.log(ratio) - 1.0


def mse_logvol(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    return (np.log(np.asarray(f, dtype=np.float64)) - np.log(np.maximum(np.asarray(y, dtype=np.float64),
                                                                        Y_FLOOR))) ** 2


def bootstrap_block(horizon: int) -> int:
    return max(2 * int(horizon), 30)


def refit_dates(start: str | pd.Timestamp, end: str | pd.Timestamp, freq: str = "MS") -> list[pd.Timestamp]:
    import pandas as pd

    s, e = utc_timestamp(start, "start"), utc_timestamp(end, "end")
    dates = list(pd.date_range(s, e, freq=freq, inclusive="left"))
    if not dates or dates[0] != s:
        dates = [s, *dates]
    return dates


def _lgbm_frames(candles: Mapping[str, pd.DataFrame], horizons: Sequence[int]) -> pd.DataFrame:
    """features.bars-shaped rows (the product's feature definition) for the LightGBM vol model."""
    import pandas as pd

    params = LabelParams(horizons=tuple(int(h) for h in horizons))
    out = [compute(c, timeframe="1d", exchange="binance", symbol=s, labels=params) for s, c in candles.items()]
    return pd.concat(out, ignore_index=True).sort_values(["symbol", "ts"]).reset_index(drop=True)


def walk_forward(
    candles: Mapping[str, pd.DataFrame],
    horizons: Sequence[int],
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    *,
    variants: Mapping[str, Sequence[str]] | None = None,
    garch_dists: Sequence[str] = ("normal", "t"),
    lgbm_every: int | None = 3,
    lgbm_params: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Out-of-sample forecasts of every model for bars closing in [start, end).

    Returns one row per (symbol, ts, horizon): ``y`` (the realized label, NaN if not yet known), and a
    column per model with its annualized vol forecast (NaN where it has none). ``lgbm_every``: refit
    the LightGBM model every that many refit dates (None: leave it out).
    """
    import pandas as pd

    variants = dict(variants or har.VARIANTS)
    say = progress or (lambda msg: None)
    hs = [int(h) for h in horizons]
    p = har.panel(candles, hs)
    close_ts = p["ts"] + pd.Timedelta(days=1)
    dates = refit_dates(start, end)
    stop = utc_timestamp(end, "end")
    bounds = [*dates[1:], stop]
    out = {h: pd.DataFrame({"symbol": p["symbol"], "ts": p["ts"], "y": p[har.vol_target(h)]}) for h in hs}
    in_range = ((close_ts >= dates[0]) & (close_ts < stop)).to_numpy()

    # references without fitting: EWMA and naive, per symbol on the whole series (causal)
    for h in hs:
        ew = np.full(len(p), np.nan)
        nv = np.full(len(p), np.nan)
        for _, idx in p.groupby("symbol").indices.items():
            r = p["r"].to_numpy()[idx]
            ew[idx] = vol_refs.ewma_vol(r, h)
            nv[idx] = vol_refs.naive_vol(r, h)
        out[h]["ewma"] = ew
        out[h]["naive"] = nv
    for name in [*variants, *(("garch" if d == "normal" else f"garch_{d}") for d in garch_dists)]:
        for h in hs:
            out[h][name] = np.nan
    lg = None
    if lgbm_every:
        say("computing features for the LightGBM model")
        lg = _lgbm_frames(candles, hs)
        lg_close = lg["ts"] + pd.Timedelta(days=1)
        for h in hs:
            out[h]["lgbm"] = np.nan
    by_sym = p.groupby("symbol").indices
    for i, (r0, r1) in enumerate(zip(dates, bounds, strict=True)):
        test = ((close_ts >= r0) & (close_ts < r1)).to_numpy()
        if not test.any():
            continue
        say(f"refit {r0.date()} ({i + 1}/{len(dates)})")
        for h in hs:
            tr = har.trainable(p, h, r0)
            for name, terms in variants.items():
                try:
                    m = har.HARModel(h, terms, har.variant_fit(name)).fit(tr)
                except ModelError as e:
                    log.info("HAR %s h=%d at %s: %s", name, h, r0.date(), e)
                    continue
                out[h].loc[test, name] = m.predict(p[test])
        for idx in by_sym.values():
            tidx = idx[test[idx]]
            if not tidx.size:
                continue
            r = p["r"].to_numpy()[idx]
            known = (close_ts.to_numpy()[idx] <= r0)
            for d in garch_dists:
                name = "garch" if d == "normal" else f"garch_{d}"
                try:
                    gp = vol_refs.fit_garch(r[known], dist=d)
                except ModelError:
                    continue
                # filter only through the end of this test block: nothing later is read
                last = int(np.searchsorted(idx, tidx[-1])) + 1
                for h in hs:
                    f = vol_refs.garch_vol(r[:last], gp, h)
                    out[h].loc[tidx, name] = f[np.searchsorted(idx, tidx)]
        if lg is not None and lgbm_every and i % lgbm_every == 0:
            span_end = bounds[min(i + lgbm_every, len(bounds)) - 1]
            lg_test = ((lg_close >= r0) & (lg_close < span_end) & ~lg["warmup"].astype(bool)).to_numpy()
            for h in hs:
                vt = har.vol_target(h)
                lg_train = lg[((lg_close + pd.Timedelta(days=h) <= r0) & lg[vt].notna()
                               & ~lg["warmup"].astype(bool)).to_numpy()]
                if len(lg_train) < 500 or not lg_test.any():
                    continue
                vm = VolatilityModel(kind="lgbm", **dict(lgbm_params or {}))
                vm.fit(lg_train, vt, history=lg)
                rows = lg[lg_test]
                pred = vm.predict(rows, history=lg)
                key = pd.MultiIndex.from_frame(rows[["symbol", "ts"]])
                ser = pd.Series(pred, index=key)
                tgt = pd.MultiIndex.from_frame(out[h][["symbol", "ts"]])
                vals = ser.reindex(tgt).to_numpy()
                have = np.isfinite(vals)
                out[h].loc[have, "lgbm"] = vals[have]
    frames = []
    for h in hs:
        df = out[h][in_range].copy()
        df.insert(2, "horizon", h)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def model_columns(forecasts: pd.DataFrame) -> list[str]:
    return [c for c in forecasts.columns if c not in ("symbol", "ts", "horizon", "y")]


def window(forecasts: pd.DataFrame, start: str | pd.Timestamp, end: str | pd.Timestamp) -> pd.DataFrame:
    """Rows forecast at a bar close in [start, end) whose target window also closed before ``end``.

    The second condition keeps the last h days of a choice window from reading into the next window.
    """
    import pandas as pd

    s, e = utc_timestamp(start, "start"), utc_timestamp(end, "end")
    close = pd.to_datetime(forecasts["ts"], utc=True) + pd.Timedelta(days=1)
    tgt_end = close + pd.to_timedelta(forecasts["horizon"], unit="D")
    keep = (close >= s) & (close < e) & (tgt_end <= e) & forecasts["y"].notna()
    return forecasts[keep.to_numpy()]


def score(forecasts: pd.DataFrame, models: Sequence[str] | None = None, *,
          against: Sequence[str] = ("garch", "garch_t", "ewma"), candidates: Sequence[str] | None = None,
          n_boot: int = 2000, seed: int = 0) -> dict[int, dict[str, Any]]:
    """Per horizon: common-row n, mean QLIKE and MSE(log vol) of each model, and the paired differences
    (candidate - reference; negative = candidate better) with block-bootstrap 95% intervals."""
    import pandas as pd

    models = list(models or model_columns(forecasts))
    missing = [m for m in models if m not in forecasts.columns]
    if missing:
        raise ModelError(f"forecasts lack model column(s) {missing}")
    cands = list(candidates or [m for m in models if m not in REFERENCES])
    result: dict[int, dict[str, Any]] = {}
    for h, g in forecasts.groupby("horizon"):
        h = int(h)
        f = g[models].to_numpy(dtype=np.float64)
        ok = np.isfinite(f).all(axis=1) & (f > 0).all(axis=1) & np.isfinite(g["y"].to_numpy(dtype=np.float64))
        g = g[ok]
        y = g["y"].to_numpy(dtype=np.float64)
        day = ((pd.to_datetime(g["ts"], utc=True) - pd.Timestamp("1970-01-01", tz="UTC")).dt.days).to_numpy()
        res: dict[str, Any] = {"n": int(ok.sum()), "n_assets": int(g["symbol"].nunique()),
                               "n_days": int(np.unique(day).size), "y_floored": int((y < Y_FLOOR).sum()),
                               "block": bootstrap_block(h), "qlike": {}, "mse_logvol": {}, "diff": {}}
        losses = {}
        for m in models:
            fm = g[m].to_numpy(dtype=np.float64)
            losses[m] = {"qlike": qlike(y, fm), "mse_logvol": mse_logvol(y, fm)}
            res["qlike"][m] = float(losses[m]["qlike"].mean()) if len(y) else math.nan
            res["mse_logvol"][m] = float(losses[m]["mse_logvol"].mean()) if len(y) else math.nan
        for c in cands:
            for ref in against:
                if ref not in losses or ref == c:
                    continue
                for metric in ("qlike", "mse_logvol"):
                    d = losses[c][metric] - losses[ref][metric]
                    res["diff"][f"{c}-{ref}:{metric}"] = block_bootstrap_diff(
                        day, d, block=bootstrap_block(h), n_boot=n_boot, seed=seed)
        result[h] = res
    return result


def choose(scores: Mapping[int, Mapping[str, Any]], candidates: Sequence[str]) -> dict[int, str]:
    """Per horizon, the candidate with the lowest mean QLIKE (ties: the first listed, i.e. simplest)."""
    out = {}
    for h, s in scores.items():
        q = s["qlike"]
        have = [c for c in candidates if c in q and np.isfinite(q[c])]
        if not have:
            raise ModelError(f"no candidate scored at h={h}")
        out[int(h)] = min(have, key=lambda c: (q[c], candidates.index(c)))
    return out
