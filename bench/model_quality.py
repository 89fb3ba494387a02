"""Model quality on the real shared data: the table in docs/model_quality.md comes from this script.

Usage: python bench/model_quality.py [--horizons 7,14,30] [--start 2020-01-01] [--end 2023-12-31]
       [--refit-days 30] [--assets all] [--json out.json] [--markdown docs/model_quality.md] [--n-boot 2000]
       [--no-shuffled] [--lstm] [--data DIR] [--n-estimators N]

Every daily series of ``binance_spot_yanniedog/1d`` in the shared data (``ENTASIS_SHARED_DATA``),
features and labels from ``entasis.features.compute`` in pandas, pooled into one model per horizon, a
purged expanding walk-forward with monthly refits over ``[start, end]`` of exactly what the product
publishes (``entasis backtest`` without ``--models``: the stacked ensemble of ``train.models`` and its
members, plus the fixed 0.4/0.2/0.2/0.2 preset and the base-rate decision rule), beside every baseline.
A LightGBM trained on shuffled labels is the leak control. The walk-forward is scored on two windows:
**choose** (test rows in 2020–2021: everything configurable was decided looking only at these) and
**confirm** (2022–2023: reported, never tuned on). ``--lstm`` adds the LSTM as a member on a subsample
(see the docstring of :func:`lstm_run`).

``--data DIR`` reads ``*_1d.csv`` candle files from DIR instead of the shared data (the smoke test uses
tiny synthetic ones); ``--n-estimators`` shrinks the tree members (smoke runs only).

Ends with one JSON line per the bench convention: the whole walk-forward's wall time vs the 10-minute
target (reference: the target itself, since the old path is too slow to rerun at this size on 2 cores);
``ratio = metric / reference`` and ``met = metric <= reference``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

CHOOSE = ("2020-01-01", "2021-12-31")
CONFIRM = ("2022-01-01", "2023-12-31")


def shared_dir() -> Path:
    from entasis.config import get_settings

    return Path(get_settings().shared_data) / "binance_spot_yanniedog" / "1d"


def load(assets: str, data: Path | None = None) -> Any:
    from entasis.backtest.runner import load_csv_inputs

    d = data if data is not None else shared_dir()
    names = sorted(p.stem.split("_")[0] for p in d.glob("*_1d.csv"))
    syms = [n.replace("USDT", "/USDT") for n in names]
    if assets != "all":
        want = [a.strip() for a in assets.split(",")]
        syms = [s for s in syms if s in want]
    return load_csv_inputs(d, assets=syms, timeframe="1d")


def specs(n_jobs: int, lstm: dict[str, Any] | None = None, n_estimators: int | None = None) -> list[Any]:
    from entasis.backtest.cli import product_specs

    out = product_specs(n_jobs=n_jobs, n_estimators=n_estimators)
    if lstm is not None:   # the LSTM as a member with the given (smaller) settings
        ens = out[0]
        ens["members"] = ["lstm", *[m for m in ens["members"] if m != "lstm"]]
        ens["member_params"]["lstm"] = lstm
        rest = [s for s in out[1:] if (s if isinstance(s, str) else s["name"]) != "lstm"]
        out = [ens, {"name": "lstm", **lstm}, *rest]
    else:
        ens = out[0]
        ens["members"] = [m for m in ens["members"] if m != "lstm"]
        ens["member_params"].pop("lstm", None)
        out = [ens, *[s for s in out[1:] if (s if isinstance(s, str) else s["name"]) != "lstm"]]
    return out


def run(inputs: Any, horizon: int, *, start: str, end: str, refit_days: int, n_boot: int, models: list[Any],
        shuffled: bool) -> tuple[Any, float]:
    from entasis.backtest.walkforward import walk_forward

    if shuffled:  # the control: a LightGBM on shuffled labels, fitted on its own
        models = [{"name": "lgbm", "label": "lgbm_ctrl", "n_jobs": 1}, *models]
    t0 = time.perf_counter()
    r = walk_forward(inputs.frame, horizon=horizon, start=start, end=end, models=models, prices=inputs.prices,
                     refit_days=refit_days, n_boot=n_boot, leakage="warn", permutation_check=shuffled,
                     progress=lambda k, n, info: print(f"  {horizon}d fold {k}/{n} {str(info['test_start'])[:10]}",
                                                       flush=True) if k % 6 == 0 else None)
    return r, time.perf_counter() - t0


def fmt_ci(d: dict[str, Any]) -> str:
    return f"{d['estimate']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"


def table(scores: dict[str, Any], horizon: int) -> list[str]:
    lines = [f"\n#### {horizon}-day horizon ({scores['n']} scored forecasts, block {scores.get('block_days')} days)\n",
             "| model | n | accuracy | bal. acc. | log-loss | Brier | ECE | Δ log-loss vs best [95% CI] | "
             "Δ accuracy vs best [CI] | Δ bal. acc. vs best [CI] |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for kind in ("models", "baselines"):
        for name, r in scores[kind].items():
            label = name if kind == "models" else f"*{name}*"
            extra = ["", "", ""]
            if kind == "models":
                extra = [fmt_ci(r["d_log_loss_vs_best"]), fmt_ci(r["d_accuracy_vs_best"]),
                         fmt_ci(r["d_balanced_accuracy_vs_best"])]
            lines.append(f"| {label} | {r['n']} | {r['accuracy']:.4f} | {r['balanced_accuracy']:.4f} | "
                         f"{r['log_loss']:.4f} | {r['brier']:.4f} | {r['ece']:.4f} | " + " | ".join(extra) + " |")
    b = scores["best_baseline"]
    lines.append(f"\nBest baselines: log-loss *{b['log_loss'].removeprefix('baseline:')}*, accuracy "
                 f"*{b['accuracy'].removeprefix('baseline:')}*, balanced accuracy "
                 f"*{b['balanced_accuracy'].removeprefix('baseline:')}*.")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--horizons", default="7,14,30")
    ap.add_argument("--start", default="2020-01-01")
    ap.add_argument("--end", default="2023-12-31")
    ap.add_argument("--refit-days", type=int, default=30)
    ap.add_argument("--assets", default="all")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--no-shuffled", action="store_true")
    ap.add_argument("--lstm", action="store_true", help="LSTM as a member (small, see lstm settings below)")
    ap.add_argument("--lstm-epochs", type=int, default=15)
    ap.add_argument("--data", type=Path, default=None, help="directory of *_1d.csv candles (default: shared data)")
    ap.add_argument("--n-estimators", type=int, default=None, help="trees per tree member (smoke runs)")
    a = ap.parse_args(argv)
    from entasis.backtest.evaluation import score_window

    os.environ.setdefault("OMP_NUM_THREADS", str(a.n_jobs))
    inputs = load(a.assets, a.data)
    lstm = ({"seq_len": 90, "hidden": [128, 64, 32], "max_epochs": a.lstm_epochs, "batch_size": 256,
             "patience": 3, "num_threads": a.n_jobs} if a.lstm else None)
    models = specs(a.n_jobs, lstm, a.n_estimators)
    out: dict[str, Any] = {"assets": sorted(inputs.frame["symbol"].unique().tolist()), "start": a.start,
                           "end": a.end, "refit_days": a.refit_days, "models": models, "horizons": {}}
    total = 0.0
    md: list[str] = []
    for h in [int(x) for x in a.horizons.split(",")]:
        r, secs = run(inputs, h, start=a.start, end=a.end, refit_days=a.refit_days, n_boot=a.n_boot, models=models,
                      shuffled=not a.no_shuffled)
        total += secs
        res = {"seconds": secs, "fit_seconds": r.timings, "leakage": r.leakage,
               "stacked_weights_mean": r.to_json().get("stacked_weights_mean", {}),
               "choose": score_window(r.predictions, horizon=h, start=CHOOSE[0], end=CHOOSE[1], n_boot=a.n_boot),
               "confirm": score_window(r.predictions, horizon=h, start=CONFIRM[0], end=CONFIRM[1], n_boot=a.n_boot)}
        out["horizons"][str(h)] = res
        for w in ("choose", "confirm"):
            s = res[w]
            if not s["n"]:
                continue
            print(f"\n{h}d {w}:")
            for kind in ("models", "baselines"):
                for name, row in s[kind].items():
                    ll = row.get("d_log_loss_vs_best")
                    print(f"  {name:28s} n={row['n']:6d} acc={row['accuracy']:.4f} bal={row['balanced_accuracy']:.4f} "
                          f"ll={row['log_loss']:.4f} ece={row['ece']:.4f}" + (f" dLL={fmt_ci(ll)}" if ll else ""))
        md += [f"\n### Confirm window {CONFIRM[0]} – {CONFIRM[1]}", *table(res["confirm"], h)] if res["confirm"]["n"] \
            else []
        print(f"{h}d walk-forward: {secs:.0f}s; stacked weights (mean over folds): {res['stacked_weights_mean']}")
        if a.json:
            a.json.write_text(json.dumps(out, indent=1, default=str))
    out["total_seconds"] = total
    if a.json:
        a.json.write_text(json.dumps(out, indent=1, default=str))
    if a.markdown:
        a.markdown.write_text("\n".join(md) + "\n")
    target = 600.0
    metric = round(total, 1)
    out["bench_line"] = {"bench": "model_quality_walk_forward", "metric": metric, "reference": target,
                         "ratio": round(metric / target, 4), "target": "whole walk-forward <= 600 s on 2 cores",
                         "met": bool(metric <= target)}
    print(json.dumps(out["bench_line"]))
    return out


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
