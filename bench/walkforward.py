"""Walk-forward speed: the old tree configuration vs today's, on the same real data in the same process.

Usage: python bench/walkforward.py [--assets all] [--start 2022-01-01] [--end 2022-03-31] [--refit-days 30]
       [--horizon 7] [--n-jobs 2] [--btc-weekly] [--quick]

1. Pooled universe (every daily series of the shared data, features from ``entasis.features.compute``),
   monthly refits, one horizon, RF + XGBoost + LightGBM + ensemble, through the same ``walk_forward``:
   * reference — the configuration before issue 12/14: lags (1, 3, 7) + rolling mean/std (7, 30) per
     feature (~270 columns), class weights on, a 300-tree forest with leaves of 20, the fixed-weight
     ensemble calibrated on the validation slice, members' forecasts recomputed after the ensemble's;
   * ours — what the product publishes now: last-bar view (~40 columns with the asset id), class
     weights off, a 200-tree forest with leaves of 50, the stacked ensemble (out-of-fold rows from
     earlier folds), members' forecasts taken from the ensemble's single pass.
   The profile of the reference (cProfile, one fold): the random forest took ~75% of the time (on the
   ~270-column view), XGBoost ~11%, LightGBM ~8%, everything else (views, baselines, bootstrap) < 6%.
   Seconds per refit of each are printed and extrapolated to the issue's size (17 assets × 2 years =
   24 monthly refits) as ``fold seconds × 24``, which is conservative for ours (later folds are larger
   for both).
2. ``--btc-weekly``: BTC alone 2018–2023, weekly refits of RF + XGBoost + LightGBM (target ≤ 300 s).

The last line is the JSON of the bench convention (ratio = reference / ours for the walk-forward).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

OLD_VIEW: dict[str, Any] = {"lags": [1, 3, 7], "roll": [7, 30], "use_class_weights": True}


def old_specs(n_jobs: int) -> list[Any]:
    rf = {"name": "rf", "n_estimators": 300, "min_samples_leaf": 20, "n_jobs": n_jobs, **OLD_VIEW}
    xgb = {"name": "xgb", "n_estimators": 400, "n_jobs": n_jobs, **OLD_VIEW}
    lgbm = {"name": "lgbm", "n_estimators": 400, "n_jobs": n_jobs, **OLD_VIEW}
    params = {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in (rf, xgb, lgbm)}
    ens = {"name": "ensemble", "members": ["rf", "xgb", "lgbm"], "weights": "default", "member_params": params}
    return [ens, rf, xgb, lgbm]


def new_specs(n_jobs: int) -> list[Any]:
    from entasis.backtest.cli import product_specs

    out = product_specs(n_jobs=n_jobs)
    ens = out[0]
    ens["members"] = [m for m in ens["members"] if m != "lstm"]
    ens["member_params"].pop("lstm", None)
    return [ens, *[s for s in out[1:] if (s if isinstance(s, str) else s["name"]) != "lstm"]]


def load(assets: str) -> Any:
    from entasis.backtest.runner import load_csv_inputs
    from entasis.config import get_settings

    d = Path(get_settings().shared_data) / "binance_spot_yanniedog" / "1d"
    syms = sorted(p.stem.split("_")[0].replace("USDT", "/USDT") for p in d.glob("*_1d.csv"))
    if assets != "all":
        want = {a.strip() for a in assets.split(",")}
        syms = [s for s in syms if s in want]
    return load_csv_inputs(d, assets=syms, timeframe="1d")


def timed(inputs: Any, models: list[Any], **kw: Any) -> tuple[float, Any]:
    from entasis.backtest.walkforward import walk_forward

    t0 = time.perf_counter()
    r = walk_forward(inputs.frame, models=models, prices=inputs.prices, leakage="off", n_boot=200, **kw)
    return time.perf_counter() - t0, r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", default="all")
    ap.add_argument("--start", default="2022-01-01")
    ap.add_argument("--end", default="2022-03-31")
    ap.add_argument("--refit-days", type=int, default=30)
    ap.add_argument("--horizon", type=int, default=7)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--btc-weekly", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 assets, one fold")
    a = ap.parse_args()
    if a.quick:
        a.assets, a.start, a.end = "BTC/USDT,ETH/USDT,SOL/USDT", "2022-01-01", "2022-01-20"
    print(f"cores {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}, threads per model {a.n_jobs}")
    inputs = load(a.assets)
    kw = {"horizon": a.horizon, "start": a.start, "end": a.end, "refit_days": a.refit_days}
    ref_s, ref = timed(inputs, old_specs(a.n_jobs), **kw)
    new_s, new = timed(inputs, new_specs(a.n_jobs), **kw)
    n_folds = int((~new.folds.get("skipped", new.folds["fold"] * 0).astype(bool)).sum()) if len(new.folds) else 1
    n_assets = inputs.frame["symbol"].nunique()
    print(f"{n_assets} assets, {a.horizon}d, {n_folds} monthly refit(s) from {a.start} to {a.end}")
    print(f"{'path':<10}{'seconds':>10}{'s/refit':>10}{'x24 refits':>12}  per model (s)")
    for name, secs, r in (("reference", ref_s, ref), ("ours", new_s, new)):
        fits = ", ".join(f"{k.removeprefix('fit_')} {v:.1f}" for k, v in r.timings.items() if k != "total")
        print(f"{name:<10}{secs:>10.1f}{secs / n_folds:>10.1f}{24 * secs / n_folds:>12.0f}  {fits}")
    from entasis.backtest.walkforward import POOLED

    for name, r in (("reference", ref), ("ours", new)):
        m = r.metrics["ensemble"][POOLED]
        print(f"  {name} ensemble: log-loss {m['log_loss']:.4f}, accuracy {m['accuracy']:.4f} "
              f"(best baseline log-loss {min(r.metrics[b][POOLED]['log_loss'] for b in r.baselines):.4f})")
    est = 24 * new_s / n_folds
    result = {"bench": "walk_forward_pooled_monthly", "metric": round(new_s, 2), "reference": round(ref_s, 2),
              "ratio": round(ref_s / new_s, 2), "target": "ratio >= 10 and 24 refits <= 180 s",
              "est_24_refits_s": round(est, 1), "met": bool(ref_s / new_s >= 10 and est <= 180)}
    if a.btc_weekly:
        btc = load("BTC/USDT")
        models: list[Any] = [{"name": n, "n_jobs": a.n_jobs} for n in ("rf", "xgb", "lgbm")]
        secs, r = timed(btc, models, horizon=a.horizon, start="2018-06-01", end="2023-12-31", refit_days=7)
        print(f"BTC 2018-06..2023-12 weekly refits RF+XGB+LGBM: {secs:.0f}s over {len(r.folds)} refits "
              f"(target <= 300 s)")
        result["btc_weekly_s"] = round(secs, 1)
        result["met"] = bool(result["met"] and secs <= 300)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
