"""The walk-forward on small synthetic markets with tiny tree models (a few seconds each)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from entasis.backtest.baselines import FoldBaselines, rule_signals
from entasis.backtest.folds import BacktestError, LeakageError
from entasis.backtest.walkforward import POOLED, resolve_specs, walk_forward
from tests.unit.backtest.synth import FEATURES, make_market, tiny

START, END = "2020-09-01", "2020-11-29"
KW: dict[str, Any] = {"refit_days": 30, "n_boot": 300, "min_train_rows": 100}


@pytest.fixture(scope="module")
def market() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_market(strength=2.0, n_days=360, seed=1)


@pytest.fixture(scope="module")
def run(market: tuple[pd.DataFrame, pd.DataFrame]):  # type: ignore[no-untyped-def]
    frame, prices = market
    return walk_forward(frame, horizon=7, start=START, end=END, prices=prices,
                        models=[tiny("lgbm"), tiny("rf"), "ensemble"], permutation_check=True,
                        leakage="warn", **KW)


def test_every_forecast_is_kept_on_the_same_rows(run) -> None:  # type: ignore[no-untyped-def]
    p = run.predictions
    expected = {"lgbm", "rf", "ensemble", "ensemble:fixed", "ensemble:base_rate", "shuffled:lgbm",
                "baseline:majority", "baseline:persistence", "baseline:always_bullish", "baseline:momentum",
                "baseline:trailing_majority", "baseline:trailing_freq"}
    assert set(p["model"]) == expected
    assert {"symbol", "ts", "fold", "model", "p_bearish", "p_neutral", "p_bullish", "predicted_class",
            "actual_class", "forward_return"} <= set(p.columns)
    keys = {m: set(zip(g["symbol"], g["ts"], strict=True)) for m, g in p.groupby("model")}
    assert len({frozenset(k) for k in keys.values()}) == 1       # identical (symbol, ts) per model
    assert p["ts"].min() >= pd.Timestamp(START, tz="UTC") and p["ts"].max() <= pd.Timestamp(END, tz="UTC")
    n = {m: run.metrics[m][POOLED]["n"] for m in run.metrics}
    assert len(set(n.values())) == 1 and next(iter(n.values())) > 100
    ok = p[p["scored"]]
    assert np.allclose(ok[["p_bearish", "p_neutral", "p_bullish"]].sum(axis=1), 1.0)
    assert ok["actual_class"].isin([0, 1, 2]).all()
    # a model's class is the argmax of its probabilities
    lg = ok[ok["model"] == "lgbm"]
    assert (lg[["p_bearish", "p_neutral", "p_bullish"]].to_numpy().argmax(axis=1) == lg["predicted_class"]).all()


def test_folds_are_purged(run) -> None:  # type: ignore[no-untyped-def]
    folds = run.folds
    assert len(folds) == 3 and "skipped" not in folds.columns
    for f in folds.itertuples():
        assert f.train_max_ts + pd.Timedelta(days=7) < f.test_start
    assert run.leakage["purge"] == "ok"


def test_baselines_are_refit_on_each_fold(market, run) -> None:  # type: ignore[no-untyped-def]
    frame, prices = market
    f = frame.sort_values(["symbol", "ts"]).reset_index(drop=True)
    fold = run.folds.iloc[1]
    y = pd.to_numeric(f["y_cls_7d"]).to_numpy(dtype=float, na_value=np.nan)
    tr = (f["ts"] < fold.train_end) & ~np.isnan(y)
    te = (f["ts"] >= fold.test_start) & (f["ts"] < fold.test_end)
    rules = rule_signals(f, target="y_cls_7d", horizon=7, prices=prices)
    fb = FoldBaselines(f.loc[tr, "symbol"].to_numpy(), y[tr], rules[tr])
    out = fb.predict(f.loc[te, "symbol"].to_numpy(), rules[te])
    got = run.predictions[(run.predictions["fold"] == fold.fold)]
    for name in ("majority", "persistence", "momentum"):
        g = got[got["model"] == f"baseline:{name}"].sort_values(["symbol", "ts"])
        assert g["predicted_class"].to_numpy() == pytest.approx(out[name].pred.astype(float))
        assert g[["p_bearish", "p_neutral", "p_bullish"]].to_numpy() == pytest.approx(out[name].proba)
    # the majority class of each coin is that coin's most frequent training class
    for sym, g in f[tr].groupby("symbol"):
        top = int(pd.Series(y[tr.to_numpy()][f[tr]["symbol"].to_numpy() == sym]).value_counts().idxmax())
        pm = got[(got["model"] == "baseline:majority") & (got["symbol"] == sym)]["predicted_class"]
        assert (pm == top).all()


def test_signal_is_learned_and_shuffled_labels_score_at_baseline(run) -> None:  # type: ignore[no-untyped-def]
    best = run.best_baseline("accuracy")
    best_acc = run.metrics[best][POOLED]["accuracy"]
    for m in ("lgbm", "rf", "ensemble"):
        c = run.comparison(m, best, "accuracy")
        assert c["estimate"] > 0.05 and c["lo"] > 0       # a planted signal is found, out of sample
    sh = run.metrics["shuffled:lgbm"][POOLED]
    assert sh["accuracy"] <= best_acc + 0.05             # labels shuffled: no better than the baselines
    assert sh["log_loss"] > run.metrics["lgbm"][POOLED]["log_loss"]
    # warn mode records the implausible edge instead of raising
    assert any("implausible" in p for p in run.leakage["problems"])
    assert run.leakage["shuffled_accuracy"] == pytest.approx(sh["accuracy"])


def test_summary_and_trading(run) -> None:  # type: ignore[no-untyped-def]
    s = run.summary()
    assert s["model"].tolist()[-1] == "buy_and_hold"
    assert s.set_index("model").loc["lgbm", "d_acc_lo"] <= s.set_index("model").loc["lgbm", "d_acc_vs_best"]
    assert set(run.trading) >= {"lgbm", "baseline:majority", "buy_and_hold"}
    port = run.trading["lgbm"]["portfolio"]
    assert {"sharpe", "sortino", "calmar", "max_drawdown", "hit_rate", "turnover_per_bar",
            "var_95_historical", "es_95_parametric"} <= set(port)
    # buy-and-hold equals the always-bullish rule traded long/short (it never shorts)
    assert run.trading["buy_and_hold"]["portfolio"]["total_return"] == pytest.approx(
        run.trading["baseline:always_bullish"]["portfolio"]["total_return"])
    assert run.run_id.startswith("bt-") and len(run.data_hash) == 64
    monthly = run.accuracy_over_time()
    assert "lgbm" in monthly.columns and len(monthly) == 3


def test_members_shared_from_the_ensemble_match_a_separate_fit(market, run) -> None:  # type: ignore[no-untyped-def]
    frame, prices = market
    specs = {s.label: s for s in resolve_specs([tiny("lgbm"), tiny("rf"), "ensemble"])}
    assert specs["rf"].shared_from == "ensemble" and specs["ensemble"].params["members"] == ["lgbm", "rf"]
    alone = walk_forward(frame, horizon=7, start=START, end=END, prices=prices, models=[tiny("rf")],
                         leakage="off", baselines=["majority"], **KW)
    a = alone.predictions[alone.predictions["model"] == "rf"].sort_values(["symbol", "ts"])
    b = run.predictions[run.predictions["model"] == "rf"].sort_values(["symbol", "ts"])
    assert a[["p_bearish", "p_neutral", "p_bullish"]].to_numpy() == pytest.approx(
        b[["p_bearish", "p_neutral", "p_bullish"]].to_numpy())


def test_a_model_that_sees_the_label_is_caught(market) -> None:  # type: ignore[no-untyped-def]
    frame, prices = market
    leaky = frame.assign(peek=pd.to_numeric(frame["y_cls_7d"]).astype("float64"))  # the label as a "feature"
    with pytest.raises(LeakageError, match="implausible"):
        walk_forward(leaky, horizon=7, start=START, end=END, prices=prices, models=[tiny("lgbm")],
                     features=["peek", *FEATURES], **KW)


def test_noise_scores_at_baseline_level() -> None:
    frame, prices = make_market(strength=0.0, n_days=300, seed=3)
    r = walk_forward(frame, horizon=7, start="2020-08-01", end="2020-10-27", prices=prices, models=[tiny("lgbm")],
                     permutation_check=True, **KW)  # leakage='raise' by default: must not raise
    best = r.best_baseline("accuracy")
    for m in ("lgbm", "shuffled:lgbm"):
        c = r.comparison(m, best, "accuracy")
        assert c["estimate"] < 0.10 and c["lo"] < 0     # no edge that the interval can tell from zero
    assert not r.leakage["problems"]


def test_bad_inputs_are_named(market) -> None:  # type: ignore[no-untyped-def]
    frame, prices = market
    with pytest.raises(BacktestError, match="y_cls_14d"):
        walk_forward(frame, horizon=14, start=START, end=END, models=[tiny("rf")])
    with pytest.raises(BacktestError, match="duplicate"):
        walk_forward(pd.concat([frame, frame.iloc[:1]]), horizon=7, start=START, end=END, models=[tiny("rf")])
    with pytest.raises(BacktestError, match="unknown model"):
        walk_forward(frame, horizon=7, start=START, end=END, models=["nope"], **KW)
    with pytest.raises(BacktestError, match="duplicate model label"):
        resolve_specs(["rf", "rf"])
    with pytest.raises(BacktestError, match="no fold could be run"):
        walk_forward(frame, horizon=7, start="2020-01-05", end="2020-01-20", models=[tiny("rf")], **KW)
    bad_px = prices.assign(close=-1.0)
    with pytest.raises(BacktestError, match="positive"):
        walk_forward(frame, horizon=7, start=START, end=END, models=[tiny("rf")], prices=bad_px, **KW)


def test_stacked_ensemble_learns_from_earlier_folds_only(run) -> None:  # type: ignore[no-untyped-def]
    folds = run.folds
    # the first fold has no earlier forecasts: purged inner folds; later folds use the walk-forward's own
    assert folds["oof[ensemble]"].iloc[0] == "inner:1"
    assert (folds["oof[ensemble]"].iloc[1:] == "given").all() or folds["oof[ensemble]"].iloc[1] == "inner:1"
    w = folds.filter(like="w[ensemble]")
    assert {"w[ensemble].lgbm", "w[ensemble].rf", "w[ensemble].prior:asset_freq"} <= set(w.columns)
    assert (w.to_numpy() >= 0).all()
    # planted signal: the stack trusts the members
    assert (w["w[ensemble].lgbm"] + w["w[ensemble].rf"]).mean() > 0.2


def test_oof_rows_respect_the_purge() -> None:
    from entasis.backtest.walkforward import _oof_before

    ts = pd.date_range("2021-01-01", periods=10, freq="1D", tz="UTC")
    ts_ns = ts.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    y = np.array([0, 1, 2, 0, np.nan, 1, 2, 0, 1, 2], dtype=float)
    syms = np.array(["A"] * 10)
    p = np.full((10, 3), 1 / 3)
    out = _oof_before([np.arange(5), np.arange(5, 10)], {"rf": [p[:5], p[5:]]}, ts_ns, y, syms,
                      pd.Timestamp("2021-01-07", tz="UTC"))
    # rows strictly before the cut-off with a known label: days 1-4 and 6 (day 5 unlabelled)
    assert out.y.tolist() == [0, 1, 2, 0, 1] and out.probas["rf"].shape == (5, 3)
    # with their times, for the stacker's trailing-frequency input
    assert out.ts is not None and out.ts.tolist() == ts_ns[[0, 1, 2, 3, 5]].tolist()
    assert _oof_before([], {}, ts_ns, y, syms, pd.Timestamp("2021-01-07", tz="UTC")) is None


def test_json_has_every_model_and_baseline_with_cis(run) -> None:  # type: ignore[no-untyped-def]
    j = run.to_json()
    assert set(j["models"]) == {"lgbm", "rf", "ensemble", "ensemble:fixed", "ensemble:base_rate", "shuffled:lgbm"}
    assert "trailing_freq" in j["baselines"] and "majority" in j["baselines"]
    e = j["models"]["ensemble"]
    for k in ("n", "accuracy", "balanced_accuracy", "log_loss", "brier", "ece"):
        assert e[k] is not None
    d = e["d_log_loss_vs_best"]
    assert d["baseline"] == j["best_baseline"]["log_loss"] and d["lo"] <= d["estimate"] <= d["hi"]
    assert e["d_balanced_accuracy_vs_best"]["lo"] <= e["d_balanced_accuracy_vs_best"]["hi"]
    # the same probabilities, two decision rules
    p = run.predictions
    a = p[p["model"] == "ensemble"][["p_bearish", "p_neutral", "p_bullish"]].to_numpy()
    b = p[p["model"] == "ensemble:base_rate"][["p_bearish", "p_neutral", "p_bullish"]].to_numpy()
    np.testing.assert_array_equal(a, b)


# -- the parallel path (issue 14): same forecasts as fitting everything in order, in this process -----------
def test_worker_processes_give_identical_results(market, run) -> None:  # type: ignore[no-untyped-def]
    frame, prices = market
    par = walk_forward(frame, horizon=7, start=START, end=END, prices=prices,
                       models=[tiny("lgbm"), tiny("rf"), "ensemble"], permutation_check=True,
                       leakage="warn", n_workers=2, **KW)
    pd.testing.assert_frame_equal(par.predictions, run.predictions)   # exact, not approximate
    pd.testing.assert_frame_equal(par.folds, run.folds)
    pd.testing.assert_frame_equal(par.comparisons, run.comparisons)
    with pytest.raises(BacktestError, match="n_workers"):
        walk_forward(frame, horizon=7, start=START, end=END, models=[tiny("rf")], n_workers=0, **KW)


def test_stacked_ensemble_equals_a_plain_sequential_fit(market, run) -> None:  # type: ignore[no-untyped-def]
    """Members fit as separate jobs + the stacker in order == ``EnsembleModel.fit`` doing it all, fold by
    fold, on the frames the module docstring describes (fold 0: inner folds; fold 1: fold 0's forecasts)."""
    from entasis.backtest.folds import make_folds, split_valid
    from entasis.backtest.walkforward import _oof_before
    from entasis.models.factory import build_model

    frame, _ = market
    f = frame.assign(ts=pd.to_datetime(frame["ts"], utc=True)).sort_values(["symbol", "ts"], kind="stable")
    f = f.reset_index(drop=True)
    ts = f["ts"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    y = pd.to_numeric(f["y_cls_7d"]).astype("float64").to_numpy()
    spec = next(s for s in resolve_specs([tiny("lgbm"), tiny("rf"), "ensemble"]) if s.label == "ensemble")
    xcols = ["symbol", "ts", *(["warmup"] if "warmup" in f.columns else []), *FEATURES]
    oof_idx: list[np.ndarray] = []
    oof_p: dict[str, list[np.ndarray]] = {}
    folds = make_folds(START, END, horizon=7, refit_days=30)
    for fold in folds[:2]:
        te = np.flatnonzero(fold.test_mask(ts))
        tr = np.flatnonzero(fold.train_mask(ts) & ~np.isnan(y))
        inner, valid = split_valid(ts[tr], 7, 0.15)
        used = np.zeros(len(f), dtype=bool)
        used[tr[inner]] = used[tr[valid]] = True
        cut = np.datetime64(fold.train_end.tz_convert(None).to_datetime64())
        lo = np.datetime64(fold.test_start.tz_convert(None).to_datetime64())
        hist_fit = f.loc[(ts < cut) & ~used & (ts >= ts.min() - np.timedelta64(400, "D")), xcols]
        hist_pred = f.loc[(ts < lo) & (ts >= lo - np.timedelta64(400, "D")), xcols]
        ens: Any = build_model("ensemble", features=FEATURES, **spec.params)
        oof = _oof_before(oof_idx, oof_p, ts, y, f["symbol"].astype(str).to_numpy(), fold.train_end)
        ens.fit(f.loc[tr[inner], [*xcols, "y_cls_7d"]], "y_cls_7d", valid=f.loc[tr[valid], [*xcols, "y_cls_7d"]],
                history=hist_fit if len(hist_fit) else None, oof=oof)
        raw = ens.member_proba(f.loc[te, xcols], history=hist_pred, calibrated=False)
        p = ens.combine(f.loc[te, xcols], raw)
        got = run.predictions[(run.predictions["model"] == "ensemble") & (run.predictions["fold"] == fold.index)]
        assert got[["p_bearish", "p_neutral", "p_bullish"]].to_numpy().tobytes() == p.tobytes()
        assert run.folds["oof[ensemble]"].iloc[fold.index] == ens.oof_source
        oof_idx.append(te)
        for m, v in raw.items():
            oof_p.setdefault(m, []).append(v)


def test_inner_fallback_is_decided_by_the_same_count_as_the_stacker() -> None:
    """Boundary table: exactly ``min_oof_rows`` labelled earlier forecasts before the cut-off use them; one
    fewer (or a row at the cut-off itself, or an unlabelled one) falls back to inner folds."""
    from entasis.backtest.folds import Fold
    from entasis.backtest.walkforward import _Data, _FoldPlan, _needs_inner_oof

    ts = pd.date_range("2021-01-01", periods=10, freq="1D", tz="UTC")
    ts_ns = ts.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    y = np.array([0, 1, 2, 0, np.nan, 1, 2, 0, 1, 2], dtype=float)
    d = _Data(f=pd.DataFrame(), xf=pd.DataFrame(), keep_cols=[], feats=[], target="y", horizon=2, ts_ns=ts_ns, y=y,
              fwd=y, symbols=np.array(["A"] * 10), rules=pd.DataFrame(), context_days=0)
    e = np.zeros(0, dtype=np.int64)

    def plan(i: int, test_start: str, train_end: str, te: np.ndarray, skipped: bool = False) -> _FoldPlan:
        f = Fold(i, None, pd.Timestamp(train_end, tz="UTC"), pd.Timestamp(test_start, tz="UTC"),
                 pd.Timestamp(test_start, tz="UTC") + pd.Timedelta(days=5))
        return _FoldPlan(f, {"skipped": "x"} if skipped else {}, te, e, e, e)

    first = plan(0, "2021-01-01", "2020-12-30", np.arange(0, 7))
    # rows before 2021-01-07 with a label: days 1-4 and 6 -> 5 usable (day 5 unlabelled, day 7 at the cut-off)
    second = plan(1, "2021-01-09", "2021-01-07", np.arange(7, 10))
    plans = [first, second]
    assert _needs_inner_oof(plans, 0, d, 1)            # nothing earlier
    assert not _needs_inner_oof(plans, 1, d, 5)        # exactly the minimum: the given rows
    assert _needs_inner_oof(plans, 1, d, 6)            # one short: inner folds
    skipped = [plan(0, "2021-01-01", "2020-12-30", np.arange(0, 7), skipped=True), second]
    assert _needs_inner_oof(skipped, 1, d, 1)          # a skipped fold forecast nothing
