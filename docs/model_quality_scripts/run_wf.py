"""Walk-forward of the product config (current code) 2019-09..2023-12 for one horizon; saves predictions
(incl. the ensemble's members' raw forecasts) for the offline stacker replay."""
from __future__ import annotations
import os, sys, time, pickle
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, "/work/main/bench")
import model_quality as mq
from entasis.backtest.walkforward import walk_forward
h = int(sys.argv[1])
inputs = mq.load("all")
models = mq.specs(1, None)
t0 = time.perf_counter()
r = walk_forward(inputs.frame, horizon=h, start="2019-09-01", end="2023-12-31", models=models, prices=inputs.prices,
                 refit_days=30, n_boot=50, leakage="warn", permutation_check=False,
                 progress=lambda k, n, info: print(f"{h}d fold {k}/{n} {str(info['test_start'])[:10]} {time.perf_counter()-t0:.0f}s", flush=True))
print("seconds", time.perf_counter() - t0, flush=True)
with open(f"/tmp/stk/wf_{h}.pkl", "wb") as fh:
    pickle.dump({"predictions": r.predictions, "folds": r.folds if hasattr(r, "folds") else None, "models": models}, fh)
print("saved", flush=True)
