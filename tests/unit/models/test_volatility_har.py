"""HAR-RV, EWMA, GARCH(1,1) and their out-of-sample scoring: exact values, no look-ahead, boundaries."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.models import har, vol_eval, vol_refs
from entasis.models.base import ModelError


def _candles(n: int, seed: int, start: str = "2019-01-01", vol0: float = 0.03) -> pd.DataFrame:
    """Daily OHLC with GARCH-like clustered vol (so the forecasts have something to find)."""
    rng = np.random.default_rng(seed)
    s2 = vol0**2
    r = np.empty(n)
    for i in range(n):
        r[i] = math.sqrt(s2) * rng.standard_normal()
        s2 = 0.05 * vol0**2 * 0.1 + 0.1 * r[i] ** 2 + 0.85 * s2
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.r_[100.0, close[:-1]]
    span = np.abs(r) + np.abs(rng.normal(0, 0.5, n)) * np.sqrt(np.maximum(r**2, 1e-6))
    high = np.maximum(open_, close) * np.exp(span * 0.5)
    low = np.minimum(open_, close) * np.exp(-span * 0.5)
    ts = pd.date_range(start, periods=n, freq="D", tz="UTC")
    return pd.DataFrame({"ts": ts, "open": open_, "high": high, "low": low, "close": close,
                         "volume": rng.uniform(1, 2, n)})


# -- components and targets ----------------------------------------------------------------------
def test_components_by_hand() -> None:
    c = _candles(40, 1)
    comp = har.components(c)
    r = np.log(c["close"] / c["close"].shift(1)).to_numpy()
    assert np.isnan(comp["r"].iloc[0])
    np.testing.assert_allclose(comp["rv_d"].to_numpy()[1:], 365 * r[1:] ** 2, rtol=1e-12)
    pk = 365 * np.log(c["high"] / c["low"]) ** 2 / (4 * math.log(2))
    np.testing.assert_allclose(comp["pk_d"], pk, rtol=1e-12)
    assert comp["rv_w"].isna().sum() == 7  # first bar has no return, then 6 short windows
    assert math.isclose(comp["rv_w"].iloc[10], float(np.mean(365 * r[4:11] ** 2)), rel_tol=1e-12)
    assert math.isclose(comp["pk_m"].iloc[35], float(np.mean(pk[6:36])), rel_tol=1e-12)


def write_candle_csvs(folder: Path, n: int, seed: int, vol_step: float) -> None:
    """Two synthetic assets' daily candle CSVs (AAAUSDT_1d.csv, BBBUSDT_1d.csv) in the bench readers' format."""
    for i, name in enumerate(("AAAUSDT_1d.csv", "BBBUSDT_1d.csv")):
        c = _candles(n, seed + i, start="2019-01-01", vol0=0.03 + vol_step * i)
        c.assign(timestamp=c["ts"].dt.strftime("%Y-%m-%d"))[["timestamp", "open", "high", "low", "close",
                                                             "volume"]].to_csv(folder / name, index=False)


def test_components_are_causal() -> None:
    c = _candles(120, 2)
    full = har.components(c)
    part = har.components(c.iloc[:80])
    pd.testing.assert_frame_equal(full.iloc[:80].reset_index(drop=True), part)


def test_panel_target_is_the_products_label() -> None:
    from entasis.features.compute import LabelParams, compute

    c = _candles(400, 3)
    p = har.panel({"AAA/USDT": c}, [7, 30])
    f = compute(c, timeframe="1d", exchange="x", symbol="AAA/USDT", labels=LabelParams(horizons=(7, 30)))
    for h in (7, 30):
        np.testing.assert_allclose(p[f"y_vol_{h}d"].to_numpy(), f[f"y_vol_{h}d"].to_numpy(), rtol=1e-9,
                                   equal_nan=True)
    assert p["y_vol_30d"].isna().sum() == 30


@pytest.mark.parametrize("bad", [
    {"close": -1.0}, {"low": 0.0}, {"high": 0.5},  # high < low
])
def test_bad_candles_are_refused_naming_the_bar(bad: dict) -> None:
    c = _candles(20, 4)
    for k, v in bad.items():
        c.loc[5, k] = v
    with pytest.raises(ModelError, match=str(c["ts"].iloc[5].date())):
        har.components(c)


def test_components_need_ohlc_columns() -> None:
    with pytest.raises(ModelError, match="high"):
        har.components(_candles(20, 4).drop(columns="high"))


# -- the HAR model ---------------------------------------------------------------------------------
def test_har_recovers_a_planted_relation_and_the_qlike_scale() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    f = pd.DataFrame({t: np.exp(rng.normal(-1, 0.5, n)) for t in ("rv_d", "rv_w", "rv_m", "pk_d", "pk_w", "pk_m")})
    logv = 0.1 + 0.2 * np.log(f["pk_d"]) + 0.5 * np.log(f["rv_m"]) + rng.normal(0, 0.3, n)
    f["y_vol_7d"] = np.sqrt(np.exp(logv))
    m = har.HARModel(7, har.VARIANTS["har_pk"]).fit(f)
    assert m.coef is not None
    np.testing.assert_allclose(m.coef[1:], [0, 0, 0.5, 0.2, 0, 0], atol=0.05)
    assert abs(m.coef[0] - 0.1) < 0.2  # the intercept is far from the regressors' mean: looser
    pred = m.predict(f)
    # the QLIKE-optimal constant: mean(y² / forecast²) is exactly 1 on the training rows
    assert math.isclose(float(np.mean(f["y_vol_7d"] ** 2 / pred**2)), 1.0, rel_tol=1e-9)
    # which sits above the median forecast exp(fit): E[exp(e)] = exp(σ²/2) for e ~ N(0, σ²)
    assert math.isclose(m.scale, math.exp(0.3**2 / 2), rel_tol=0.03)


def test_qlike_fit_is_the_qlike_optimum() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    f = pd.DataFrame({t: np.exp(rng.normal(-1, 0.5, n)) for t in har.TERMS})
    # heteroskedastic noise: OLS in logs + one scale is not the QLIKE optimum, the Gamma GLM is
    logv = 0.2 + 0.6 * np.log(f["pk_w"]) + rng.normal(0, 0.2 + 0.3 * (f["rv_m"] > 0.4), n)
    f["y_vol_7d"] = np.sqrt(np.exp(logv))
    ols = har.HARModel(7, har.VARIANTS["har_pk"]).fit(f)
    q = har.HARModel(7, har.VARIANTS["har_pk_q"], "qlike").fit(f)
    assert har.variant_fit("har_pk_q") == "qlike" and har.variant_fit("har_pk") == "ols"
    loss_ols = vol_eval.qlike(f["y_vol_7d"].to_numpy(), ols.predict(f)).mean()
    loss_q = vol_eval.qlike(f["y_vol_7d"].to_numpy(), q.predict(f)).mean()
    assert loss_q < loss_ols
    assert q.scale == pytest.approx(1.0, abs=1e-6)  # the intercept's first-order condition
    x = har.design(f, q.terms)
    assert q.coef is not None
    w = f["y_vol_7d"].to_numpy() ** 2 * np.exp(-(x @ q.coef))
    np.testing.assert_allclose(x.T @ (1 - w) / n, 0, atol=1e-6)  # gradient zero
    again = har.HARModel.from_dict(q.to_dict())
    assert again.fit_method == "qlike"
    np.testing.assert_array_equal(again.predict(f), q.predict(f))
    with pytest.raises(ModelError, match="fit must be"):
        har.HARModel(7, fit="mle")


def test_har_boundaries(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="subset"):
        har.HARModel(7, ("rv_d", "nope"))
    with pytest.raises(ModelError, match="positive"):
        har.HARModel(0)
    with pytest.raises(ModelError, match="not fitted"):
        har.HARModel(7).predict(pd.DataFrame({t: [1.0] for t in har.TERMS}))
    p = har.panel({"A/USDT": _candles(200, 5)}, [7])
    with pytest.raises(ModelError, match="lacks the target y_vol_14d"):
        har.HARModel(14).fit(p)
    terms = har.VARIANTS["har_pk"]
    need = 10 * (len(terms) + 1)
    ok = p.dropna(subset=[*terms, "y_vol_7d"])
    har.HARModel(7, terms).fit(ok.iloc[:need])  # exactly enough rows
    with pytest.raises(ModelError, match=f"only {need - 1} complete training rows"):
        har.HARModel(7, terms).fit(ok.iloc[: need - 1])
    m = har.HARModel(7, terms).fit(ok)
    m.save(tmp_path / "h")
    m2 = har.HARModel.load(tmp_path / "h")
    np.testing.assert_array_equal(m.predict(p), m2.predict(p))
    with pytest.raises(ModelError, match="not a saved HAR model"):
        har.HARModel.load(tmp_path / "none")


def test_trainable_cutoff_is_exact() -> None:
    p = har.panel({"A/USDT": _candles(60, 6)}, [7])
    cutoff = pd.Timestamp("2019-01-20", tz="UTC")
    tr = har.trainable(p, 7, cutoff)
    # bar opened 2019-01-12 closes 01-13, its window closes 01-20: in; the next bar is out
    assert tr["ts"].max() == pd.Timestamp("2019-01-12", tz="UTC")


def test_zero_returns_are_floored_not_infinite() -> None:
    c = _candles(100, 7)
    c.loc[50:60, ["open", "high", "low", "close"]] = 100.0  # flat days
    p = har.panel({"A/USDT": c}, [7])
    x = har.design(p, har.VARIANTS["har_pk"])
    ok = np.isfinite(x).all(axis=1)
    assert ok[40:].all()
    assert x[55, 1] == pytest.approx(math.log(har.VAR_FLOOR))


# -- references -------------------------------------------------------------------------------------
def test_ewma_recursion_by_hand() -> None:
    rng = np.random.default_rng(1)
    r = np.r_[np.nan, rng.normal(0, 0.02, 100)]
    v = vol_refs.ewma_variance(r)
    s2 = float(np.mean(r[1:31] ** 2))
    want = []
    for x in r[1:]:
        s2 = 0.94 * s2 + 0.06 * x * x
        want.append(s2)
    assert np.isnan(v[:30]).all()  # the first bar and the seed
    np.testing.assert_allclose(v[30:], want[29:], rtol=1e-12)
    np.testing.assert_allclose(vol_refs.ewma_vol(r, 7)[30:], np.sqrt(np.array(want[29:]) * 365 * 6 / 7))
    with pytest.raises(ModelError, match="lambda"):
        vol_refs.ewma_variance(r, 1.0)
    assert np.isnan(vol_refs.ewma_variance(r[:30])).all()  # fewer returns than the seed


@pytest.mark.parametrize("h,want", [(1, 1.0), (2, 0.5), (7, 6 / 7), (30, 29 / 30)])
def test_demean_factor(h: int, want: float) -> None:
    assert vol_refs.demean_factor(h) == pytest.approx(want)


def test_garch_filter_and_forecast_match_arch() -> None:
    from arch import arch_model

    c = _candles(1200, 8)
    r = np.log(c["close"] / c["close"].shift(1)).to_numpy()
    gp = vol_refs.fit_garch(r, "normal")
    x = r[1:] * 100
    res = arch_model(x, mean="Constant", vol="GARCH", p=1, q=1, dist="normal", rescale=False).fit(disp="off")
    assert gp.alpha == pytest.approx(float(res.params["alpha[1]"]))
    s2 = vol_refs.garch_filter(r, gp)[1:]
    # arch's conditional variance at t+1 is our s²_{t+1|t} at t; the seeds differ, then converge
    np.testing.assert_allclose(s2[500:-1], res.conditional_volatility[501:] ** 2, rtol=1e-6)
    fc = res.forecast(horizon=14, start=len(x) - 50, reindex=False).variance.to_numpy()
    mine = vol_refs.multi_step_mean(s2[-50:], gp, 14)
    np.testing.assert_allclose(mine, fc.mean(axis=1), rtol=1e-6)
    # label footing: annualized, times (h-1)/h
    np.testing.assert_allclose(vol_refs.garch_vol(r, gp, 14)[-50:], np.sqrt(fc.mean(axis=1) / 1e4 * 365 * 13 / 14),
                               rtol=1e-6)


def test_garch_integrated_forecast_grows_linearly() -> None:
    gp = vol_refs.GarchParams(mu=0.0, omega=0.1, alpha=0.1, beta=0.9)
    # φ = 1: E s²_{t+k} = s²_{t+1} + (k-1) ω, mean over k = 1..h: s² + ω (h-1)/2
    assert vol_refs.multi_step_mean(np.array([2.0]), gp, 5)[0] == pytest.approx(2.0 + 0.1 * 2)


def test_garch_needs_enough_returns() -> None:
    with pytest.raises(ModelError, match="250"):
        vol_refs.fit_garch(np.random.default_rng(0).normal(size=249))
    with pytest.raises(ModelError, match="dist"):
        vol_refs.fit_garch(np.zeros(300), dist="skewt")


# -- scoring ----------------------------------------------------------------------------------------
def test_qlike_and_mse_logvol() -> None:
    y = np.array([0.5, 0.5, 0.5, 0.0])
    f = np.array([0.5, 0.25, 1.0, 0.5])
    q = vol_eval.qlike(y, f)
    assert q[0] == 0.0
    assert q[1] > q[2] > 0  # under-forecasting by 2x costs more than over-forecasting by 2x
    assert q[1] == pytest.approx(4 - math.log(4) - 1) and q[2] == pytest.approx(0.25 - math.log(0.25) - 1)
    assert np.isfinite(q[3])  # a zero realized vol is floored
    m = vol_eval.mse_logvol(y, f)
    assert m[0] == 0 and m[1] == pytest.approx(math.log(2) ** 2) == m[2]


def _fc(rows: list[tuple[str, int]]) -> pd.DataFrame:
    return pd.DataFrame({"symbol": "A", "ts": [pd.Timestamp(t, tz="UTC") for t, _ in rows],
                         "horizon": [h for _, h in rows], "y": 0.5, "m": 0.5})


@pytest.mark.parametrize("ts,h,kept", [
    ("2021-12-31", 7, False),   # closes 2022-01-01 = start of the next window: not in [start, end)
    ("2021-12-23", 7, True),    # closes 12-24, window closes 12-31 < end
    ("2021-12-24", 7, True),    # closes 12-25, window closes exactly at end: kept
    ("2021-12-25", 7, False),   # window runs past end
    ("2018-12-31", 7, True),    # closes exactly at start
    ("2018-12-30", 7, False),
])
def test_window_boundaries(ts: str, h: int, kept: bool) -> None:
    w = vol_eval.window(_fc([(ts, h)]), "2019-01-01", "2022-01-01")
    assert (len(w) == 1) is kept


def test_choose_lowest_qlike_ties_to_first_listed() -> None:
    s = {7: {"qlike": {"a": 0.3, "b": 0.3, "c": 0.31}}, 14: {"qlike": {"a": 0.4, "b": 0.39, "c": float("nan")}}}
    assert vol_eval.choose(s, ["a", "b", "c"]) == {7: "a", 14: "b"}
    assert vol_eval.choose(s, ["b", "a"]) == {7: "b", 14: "b"}
    with pytest.raises(ModelError, match="no candidate"):
        vol_eval.choose({7: {"qlike": {"a": float("nan")}}}, ["a"])


def test_score_pairs_rows_and_signs_differences() -> None:
    rng = np.random.default_rng(3)
    n = 400
    y = np.exp(rng.normal(-0.5, 0.3, n))
    fc = pd.DataFrame({"symbol": "A", "ts": pd.date_range("2020-01-01", periods=n, tz="UTC"), "horizon": 7, "y": y,
                       "good": y * np.exp(rng.normal(0, 0.05, n)), "garch": y * 1.6, "ewma": y * 0.7,
                       "naive": np.r_[np.nan, y[1:]]})
    s = vol_eval.score(fc, n_boot=300)[7]
    assert s["n"] == n - 1  # the row without a naive forecast is dropped for every model
    assert s["qlike"]["good"] < s["qlike"]["garch"]
    d = s["diff"]["good-garch:qlike"]
    assert d["hi"] < 0 and d["lo"] <= d["estimate"] <= d["hi"]
    assert "garch-ewma:qlike" not in s["diff"]  # references are not candidates
    with pytest.raises(ModelError, match="lack model"):
        vol_eval.score(fc, ["good", "missing"])


def test_walk_forward_never_reads_the_future() -> None:
    """Truncation: forecasts made before a date are identical whatever the candles after it are."""
    cut = pd.Timestamp("2021-03-01", tz="UTC")
    full = {"A/USDT": _candles(800, 10), "B/USDT": _candles(800, 11, vol0=0.05)}
    shocked = {s: c.assign(**{k: np.where(c["ts"] >= cut, c[k] * (3 if k == "high" else 1.0), c[k])
                              for k in ("high",)}) for s, c in full.items()}
    kw = {"garch_dists": ("normal",), "lgbm_every": None}
    a = vol_eval.walk_forward(full, [7], "2020-10-01", "2021-04-01", **kw)
    b = vol_eval.walk_forward(shocked, [7], "2020-10-01", "2021-04-01", **kw)
    before = (a["ts"] + pd.Timedelta(days=1) <= cut).to_numpy()
    cols = ["har_rv", "har_pk", "har_pk_mkt", "garch", "ewma", "naive"]
    assert before.sum() > 200 and np.isfinite(a.loc[before, cols].to_numpy()).all()
    pd.testing.assert_frame_equal(a.loc[before, cols], b.loc[before, cols])
    assert not np.allclose(a.loc[~before, "har_pk"], b.loc[~before, "har_pk"])
    # the realized label differs only where its window reaches past the cut (it is the target, not an input)
    assert (a["ts"].min() + pd.Timedelta(days=1)) == pd.Timestamp("2020-10-01", tz="UTC")
