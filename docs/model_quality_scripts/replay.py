"""Offline replay of stacker variants on a walk-forward's own member forecasts (members do not depend on
the stacker, so every variant sees exactly the same out-of-fold rows and test forecasts).

usage: replay.py H WINDOW(choose|confirm) VARIANTS(comma)"""
from __future__ import annotations
import os, sys, pickle, json
import numpy as np, pandas as pd
sys.path.insert(0, "/work/main/bench")
import model_quality as mq
from entasis.backtest.walkforward import _prepare_frame, _labels
from entasis.backtest.folds import make_folds, split_valid
from entasis.backtest.evaluation import score_window
from entasis.models.stacking import (LogLinearPool, LabelHistory, class_frequencies, prior_inputs, PRIORS,
                                     PRIOR_TRAILING)

VARIANTS = {
    "old": dict(trailing=False, offsets="free", prior_pull="point"),
    "A_nooff": dict(trailing=True, offsets="none", prior_pull="sum"),
    "B_shrunk": dict(trailing=True, offsets="shrunk", prior_pull="sum"),
}
h = int(sys.argv[1]); window = sys.argv[2]; variants = sys.argv[3].split(",")
W = mq.CHOOSE if window == "choose" else mq.CONFIRM
d = pickle.load(open(f"/tmp/stk/wf_{h}.pkl", "rb"))
P = d["predictions"]; members = list(d["models"][0]["members"])
target = f"y_cls_{h}d"
f = _prepare_frame(mq.load("all").frame, target)
ts_ns = f["ts"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
y = _labels(f[target]); sym = f["symbol"].astype(str).to_numpy()
folds = make_folds("2019-09-01", "2023-12-31", horizon=h, refit_days=30)
cols = ["p_bearish", "p_neutral", "p_bullish"]
ens = P[P["model"] == "ensemble"].reset_index(drop=True)
mem = {m: P[P["model"] == m].reset_index(drop=True) for m in members}
for m in members:
    assert (mem[m][["symbol", "ts"]].to_numpy() == ens[["symbol", "ts"]].to_numpy()).all()
ets = ens["ts"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
ey = ens["actual_class"].to_numpy(dtype=np.float64)
esym = ens["symbol"].astype(str).to_numpy()
out = {v: np.full((len(ens), 3), np.nan) for v in variants}
brate = np.full((len(ens), 3), np.nan)
wts = {v: [] for v in variants}
lo_w, hi_w = np.datetime64(W[0]), np.datetime64(W[1]) + np.timedelta64(1, "D")
for fold in folds:
    te = np.flatnonzero(ens["fold"].to_numpy() == fold.index)
    if te.size == 0:
        continue
    if not ((ets[te] >= lo_w) & (ets[te] < hi_w)).any():
        continue
    tend = np.datetime64(fold.train_end.tz_convert(None).to_datetime64())
    earlier = np.flatnonzero(ens["fold"].to_numpy() < fold.index)
    keep = earlier[(ets[earlier] < tend) & ~np.isnan(ey[earlier])]
    if keep.size < 300:
        print("fold", fold.index, "would use inner OOF; skipped", flush=True); continue
    tr = np.flatnonzero(fold.train_mask(ts_ns) & ~np.isnan(y))
    inner, valid = split_valid(ts_ns[tr], h, 0.15)
    tr = tr[inner | valid]          # the ensemble's train + valid frames (split_valid purges between them)
    freq, base = class_frequencies(sym[tr], y[tr].astype(int))
    brate[te] = base
    labels = LabelHistory.from_labels(sym[tr], ts_ns[tr], y[tr].astype(int), h)
    ok = np.all([~np.isnan(mem[m][cols].to_numpy()[keep]).any(axis=1) for m in members], axis=0)
    k2 = keep[ok]
    for v in variants:
        cfg = VARIANTS[v]
        lab = labels if cfg["trailing"] else None
        inp = {m: mem[m][cols].to_numpy()[k2] for m in members}
        inp.update(prior_inputs(esym[k2], freq, base, labels=lab, ts=ets[k2] if lab else None))
        names = [*members, *PRIORS, *([PRIOR_TRAILING] if lab else [])]
        pool = LogLinearPool(names, offsets=cfg["offsets"], prior_pull=cfg["prior_pull"]).fit(inp, ey[k2])
        tin = {m: mem[m][cols].to_numpy()[te] for m in members}
        tin.update(prior_inputs(esym[te], freq, base, labels=lab, ts=ets[te] if lab else None))
        out[v][te] = pool.predict(tin)
        wts[v].append({**pool.weights(), "b": [round(x, 3) for x in pool.b]})
res = {}
base_rows = P[P["model"].str.startswith("baseline:")]
for v in variants:
    e = ens.copy()
    e[cols] = out[v]
    e["predicted_class"] = np.where(np.isnan(out[v]).any(axis=1), np.nan, np.nan_to_num(out[v]).argmax(axis=1))
    e["model"] = "stack:" + v
    inwin = (ets >= lo_w) & (ets < hi_w) & e["scored"].to_numpy()
    assert not np.isnan(out[v][inwin]).any(), f"{v}: replay missing rows in window"
    s = score_window(pd.concat([e, ens.assign(model="ensemble_run"), base_rows], ignore_index=True),
                     horizon=h, start=W[0], end=W[1], n_boot=1000)
    res[v] = s
    r = s["models"]["stack:" + v]
    ww = pd.DataFrame([{k: x for k, x in w.items() if k != "b"} for w in wts[v]]).mean().round(3).to_dict()
    print(f"{h}d {window} {v}: n={r['n']} ll={r['log_loss']:.4f} ece={r['ece']:.4f} acc={r['accuracy']:.4f} "
          f"bal={r['balanced_accuracy']:.4f} dLL={mq.fmt_ci(r['d_log_loss_vs_best'])} "
          f"dAcc={mq.fmt_ci(r['d_accuracy_vs_best'])} weights={ww} last_b={wts[v][-1]['b']}", flush=True)
    if v == variants[0]:
        rr = s["models"]["ensemble_run"]
        print(f"   (ensemble as run in the walk-forward: ll={rr['log_loss']:.4f} ece={rr['ece']:.4f}; "
              f"max |replay-run| {v} = {np.nanmax(np.abs(out[v][inwin] - ens[cols].to_numpy()[inwin])):.2e})")
        for b, br in s["baselines"].items():
            print(f"   {b:28s} ll={br['log_loss']:.4f} ece={br['ece']:.4f} acc={br['accuracy']:.4f} bal={br['balanced_accuracy']:.4f}")
json.dump(res, open(f"/tmp/stk/replay_{h}_{window}.json", "w"), default=str, indent=1)

if len(sys.argv) > 4:   # markdown table: the chosen variant as the ensemble, beside the first version
    from entasis.models.stacking import decide
    ch = sys.argv[4]
    rows = []
    for lab, v, rule in (("ensemble", ch, "argmax"), ("ensemble:base_rate", ch, "base_rate"),
                         ("ensemble:first_version", "old", "argmax")):
        e = ens.copy(); e[cols] = out[v]
        if rule == "argmax":
            c = np.nan_to_num(out[v]).argmax(axis=1).astype(float)
        else:
            c = np.array([decide(out[v][i:i+1], "base_rate", brate[i])[0] if not np.isnan(out[v][i]).any() else -1
                          for i in range(len(e))], dtype=float)
        c[np.isnan(out[v]).any(axis=1)] = np.nan
        e["predicted_class"] = c; e["model"] = lab
        rows.append(e)
    others = P[P["model"].isin([*members, "ensemble:fixed"])]
    s2 = score_window(pd.concat([*rows, others, base_rows], ignore_index=True), horizon=h, start=W[0], end=W[1],
                      n_boot=1000)
    open(f"/tmp/stk/table_{h}_{window}.md", "w").write("\n".join(mq.table(s2, h)) + "\n")
    json.dump(s2, open(f"/tmp/stk/table_{h}_{window}.json", "w"), default=str, indent=1)
    print("\n".join(mq.table(s2, h)))
