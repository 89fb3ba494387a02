"""The LSTM on the real shared data (issue 12 item 5): choose its size on 2020–2021, confirm on 2022–2023.

usage:
  lstm_wf.py choose NAME   LSTM alone, walk-forward 2019-09-01 … 2021-12-31, quarterly refits; scores the
                           choose window (2020–2021) only -> OUT/choose_NAME.json
  lstm_wf.py full NAME     the product ensemble with the LSTM (config NAME) as a member + its members,
                           2019-09-01 … 2023-12-31, quarterly refits; scores choose and confirm windows, the
                           LSTM's mean stacked weight, and the same stacker refit WITHOUT the LSTM on the same
                           out-of-fold member forecasts (so "does it add anything" is answered on one run)
                           -> OUT/full_NAME.json, OUT/full_NAME.md, OUT/wf_NAME.pkl
OUT = $LSTMQ_OUT (default /tmp/lstmq). Horizon: $LSTMQ_H (default 7). One process, n_jobs=1, one thread.
Kept as run; not part of the package.
"""
from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import model_quality as mq  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from entasis.backtest.evaluation import score_window  # noqa: E402
from entasis.backtest.walkforward import walk_forward  # noqa: E402

CONFIGS = {  # small enough for 2 busy cores; every other LSTM setting is the model's default
    "A": {"seq_len": 30, "hidden": [32], "dense": 16, "max_epochs": 10, "patience": 2, "lr_patience": 1,
          "batch_size": 256, "num_threads": 1},
    "B": {"seq_len": 60, "hidden": [64, 32], "dense": 16, "max_epochs": 10, "patience": 2, "lr_patience": 1,
          "batch_size": 256, "num_threads": 1},
}
START, END_CHOOSE, END_FULL = "2019-09-01", "2021-12-31", "2023-12-31"
REFIT = 90
OUT = Path(os.environ.get("LSTMQ_OUT", "/tmp/lstmq"))  # noqa: S108 - a scratch folder of a one-off script
H = int(os.environ.get("LSTMQ_H", "7"))
COLS = ["p_bearish", "p_neutral", "p_bullish"]


def progress(t0: float):  # type: ignore[no-untyped-def]
    return lambda k, n, info: print(f"{H}d fold {k}/{n} {str(info['test_start'])[:10]} "
                                    f"{time.perf_counter() - t0:.0f}s", flush=True)


def line(name: str, r: dict) -> str:  # type: ignore[type-arg]
    s = (f"  {name:26s} n={r['n']:6d} acc={r['accuracy']:.4f} bal={r['balanced_accuracy']:.4f} "
         f"ll={r['log_loss']:.4f} brier={r['brier']:.4f} ece={r['ece']:.4f}")
    if "d_log_loss_vs_best" in r:
        s += f" dLL={mq.fmt_ci(r['d_log_loss_vs_best'])} dAcc={mq.fmt_ci(r['d_accuracy_vs_best'])}"
    return s


def choose(name: str) -> None:
    cfg = CONFIGS[name]
    inputs = mq.load("all")
    t0 = time.perf_counter()
    r = walk_forward(inputs.frame, horizon=H, start=START, end=END_CHOOSE, models=[{"name": "lstm", **cfg}],
                     prices=inputs.prices, refit_days=REFIT, n_boot=50, leakage="warn", progress=progress(t0))
    secs = time.perf_counter() - t0
    s = score_window(r.predictions, horizon=H, start=mq.CHOOSE[0], end=mq.CHOOSE[1], n_boot=1000)
    print(f"\nchoose {name} {cfg}: {secs:.0f}s, lstm fit {r.timings}")
    for kind in ("models", "baselines"):
        for m, row in s[kind].items():
            print(line(m, row))
    (OUT / f"choose_{name}.json").write_text(json.dumps({"config": cfg, "seconds": secs, "timings": r.timings,
                                                          "choose": s}, default=str, indent=1))


def replay_without(res_pred: pd.DataFrame, folds_cfg: dict, drop: str) -> np.ndarray:  # type: ignore[type-arg]
    """The run's stacker refit on the same out-of-fold rows with ``drop`` left out of its members (as
    ``EnsembleModel`` fits it: earlier folds' member forecasts whose labels are known before the training
    cut-off; priors from the same training rows). Folds that used inner OOF in the run are left NaN."""
    from entasis.backtest.folds import make_folds, split_valid
    from entasis.backtest.walkforward import _labels, _prepare_frame
    from entasis.models.stacking import (
        PRIOR_TRAILING,
        PRIORS,
        LabelHistory,
        LogLinearPool,
        class_frequencies,
        prior_inputs,
    )

    members = [m for m in folds_cfg["members"] if m != drop]
    target = f"y_cls_{H}d"
    f = _prepare_frame(mq.load("all").frame, target)
    ts_ns = f["ts"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    y = _labels(f[target])
    sym = f["symbol"].astype(str).to_numpy()
    ens = res_pred[res_pred["model"] == "ensemble"].reset_index(drop=True)
    mem = {m: res_pred[res_pred["model"] == m].reset_index(drop=True) for m in folds_cfg["members"]}
    for m in mem:
        assert (mem[m][["symbol", "ts"]].to_numpy() == ens[["symbol", "ts"]].to_numpy()).all()
    ets = ens["ts"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    ey = ens["actual_class"].to_numpy(dtype=np.float64)
    esym = ens["symbol"].astype(str).to_numpy()
    out = np.full((len(ens), 3), np.nan)
    for fold in make_folds(START, END_FULL, horizon=H, refit_days=REFIT):
        te = np.flatnonzero(ens["fold"].to_numpy() == fold.index)
        if te.size == 0:
            continue
        tend = np.datetime64(fold.train_end.tz_convert(None).to_datetime64())
        earlier = np.flatnonzero(ens["fold"].to_numpy() < fold.index)
        keep = earlier[(ets[earlier] < tend) & ~np.isnan(ey[earlier])]
        if keep.size < 300:  # the run used inner OOF folds here: not replayable, left out
            continue
        tr = np.flatnonzero(fold.train_mask(ts_ns) & ~np.isnan(y))
        inner, valid = split_valid(ts_ns[tr], H, 0.15)
        tr = tr[inner | valid]
        freq, base = class_frequencies(sym[tr], y[tr].astype(int))
        labels = LabelHistory.from_labels(sym[tr], ts_ns[tr], y[tr].astype(int), H)
        ok = np.all([~np.isnan(mem[m][COLS].to_numpy()[keep]).any(axis=1) for m in members], axis=0)
        k2 = keep[ok]
        inp = {m: mem[m][COLS].to_numpy()[k2] for m in members}
        inp.update(prior_inputs(esym[k2], freq, base, labels=labels, ts=ets[k2]))
        pool = LogLinearPool([*members, *PRIORS, PRIOR_TRAILING]).fit(inp, ey[k2])
        tin = {m: mem[m][COLS].to_numpy()[te] for m in members}
        tin.update(prior_inputs(esym[te], freq, base, labels=labels, ts=ets[te]))
        out[te] = pool.predict(tin)
    return out


def full(name: str) -> None:
    cfg = CONFIGS[name]
    inputs = mq.load("all")
    models = mq.specs(1, cfg)
    t0 = time.perf_counter()
    r = walk_forward(inputs.frame, horizon=H, start=START, end=END_FULL, models=models, prices=inputs.prices,
                     refit_days=REFIT, n_boot=50, leakage="warn", progress=progress(t0))
    secs = time.perf_counter() - t0
    print(f"walk-forward {secs:.0f}s; fit seconds {r.timings}", flush=True)
    P = r.predictions
    with open(OUT / f"wf_{name}.pkl", "wb") as fh:
        pickle.dump({"predictions": P, "folds": r.folds, "models": models}, fh)
    # the same stacker without the LSTM, on the same out-of-fold member forecasts
    t1 = time.perf_counter()
    ens = P[P["model"] == "ensemble"].reset_index(drop=True)
    nolstm = ens.copy()
    nolstm[COLS] = replay_without(P, models[0], "lstm")
    bad = np.isnan(nolstm[COLS].to_numpy()).any(axis=1)
    nolstm["predicted_class"] = np.where(bad, np.nan, np.nan_to_num(nolstm[COLS].to_numpy()).argmax(axis=1))
    nolstm["model"] = "ensemble:without_lstm"
    print(f"replay without lstm {time.perf_counter() - t1:.0f}s", flush=True)
    allp = pd.concat([P, nolstm], ignore_index=True)
    res: dict = {"config": cfg, "models": models, "seconds": secs, "timings": r.timings, "refit_days": REFIT}  # type: ignore[type-arg]
    w = r.folds.filter(like="w[")
    md = []
    for win, (lo, hi) in (("choose", mq.CHOOSE), ("confirm", mq.CONFIRM)):
        ts = pd.to_datetime(r.folds["test_start"], utc=True)
        inw = (ts >= pd.Timestamp(lo, tz="UTC")) & (ts <= pd.Timestamp(hi, tz="UTC"))
        res[f"weights_{win}"] = {c: float(w.loc[inw, c].mean()) for c in w.columns}
        # the replay covers every fold in both windows (inner-OOF folds are in 2019 only); checked here
        win_rows = allp[(allp["model"] == "ensemble:without_lstm") & allp["scored"]
                        & (allp["ts"] >= pd.Timestamp(lo, tz="UTC")) & (allp["ts"] <= pd.Timestamp(hi, tz="UTC"))]
        assert not win_rows[COLS].isna().any().any(), f"replay misses rows in {win}"
        s = score_window(allp, horizon=H, start=lo, end=hi, n_boot=1000)
        res[win] = s
        print(f"\n{H}d {win} {lo}..{hi}; mean stacked weights {res[f'weights_{win}']}")
        for kind in ("models", "baselines"):
            for m, row in s[kind].items():
                print(line(m, row))
        md += [f"\n### {win} window {lo} – {hi}", *mq.table(s, H)]
    (OUT / f"full_{name}.json").write_text(json.dumps(res, default=str, indent=1))
    (OUT / f"full_{name}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    {"choose": choose, "full": full}[sys.argv[1]](sys.argv[2])
