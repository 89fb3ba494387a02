"""Choose-window (2019-2021) quality of the RF member: max_samples None vs 0.25 (n_jobs 1), same folds.

Run from the repository root: .venv/bin/python docs/model_quality_scripts/rf_max_samples.py [refit_days=91]
(issue 14; result: 0.25 had the lower log-loss, 1.0555 vs 1.0637, paired Δ −0.0082 [−0.0121, −0.0052]).
"""
import json
import sys
import time

import numpy as np

sys.path.insert(0, "bench")
import walkforward as b

from entasis.backtest.metrics import block_bootstrap_diff, row_log_loss
from entasis.backtest.walkforward import walk_forward

inputs = b.load("all")
models = [{"name": "rf", "label": "rf_full", "max_samples": None, "n_jobs": 1},
          {"name": "rf", "label": "rf_ms025", "max_samples": 0.25, "n_jobs": 1}]
t0 = time.perf_counter()
r = walk_forward(inputs.frame, models=models, prices=inputs.prices, leakage="off", n_boot=1000, horizon=7,
                 start="2019-01-01", end="2021-12-31", refit_days=int(sys.argv[1]) if len(sys.argv) > 1 else 91)
print("seconds", time.perf_counter() - t0, r.timings)
print(json.dumps(r.to_json(), indent=1, default=str))
p = r.predictions[r.predictions["scored"]]
a = p[p.model == "rf_full"].sort_values(["symbol", "ts"])
c = p[p.model == "rf_ms025"].sort_values(["symbol", "ts"])
y = a["actual_class"].to_numpy()
la = row_log_loss(a[["p_bearish", "p_neutral", "p_bullish"]].to_numpy(), y)
lc = row_log_loss(c[["p_bearish", "p_neutral", "p_bullish"]].to_numpy(), y)
day = a["ts"].dt.tz_convert(None).to_numpy().astype("datetime64[D]").astype(np.int64)
print("rf_ms025 - rf_full log-loss", block_bootstrap_diff(day, lc - la, block=14, n_boot=2000, seed=0))
print("means", la.mean(), lc.mean())
