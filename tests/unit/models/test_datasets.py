"""Splits (purge / embargo), context building, scaling on train only, the tabular view, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from entasis.models.base import ModelError, default_features
from entasis.models.datasets import (
    Standardizer,
    asset_onehot,
    make_context,
    prepare_predict,
    split_frame,
    tabular,
    tabular_matrix,
    tabular_min_history,
)
from entasis.models.factory import build_model
from entasis.models.trees import LightGBMModel

from ._synth import FEATS, TARGET, TINY


@pytest.mark.parametrize("h", [7, 14, 30])
def test_purge_and_embargo_hold_at_every_boundary(planted: pd.DataFrame, h: int) -> None:
    sp = split_frame(planted, h)
    day = pd.Timedelta(days=1)
    b1, b2 = sp.boundaries["valid_start"], sp.boundaries["test_start"]
    # purge: the last label window of each earlier segment ends before the boundary
    assert sp.train["ts"].max() + h * day < b1
    assert sp.valid["ts"].max() + h * day < b2
    # embargo: the later segment starts h days after the boundary
    assert sp.valid["ts"].min() >= b1 + h * day
    assert sp.test["ts"].min() >= b2 + h * day
    # segments never share a (symbol, ts) and stay time-ordered
    keys = [set(zip(p["symbol"], p["ts"], strict=True)) for p in (sp.train, sp.valid, sp.test)]
    assert not (keys[0] & keys[1]) and not (keys[1] & keys[2]) and not (keys[0] & keys[2])
    # roughly 70/15/15 of the distinct days before purging
    n = planted["ts"].nunique()
    assert abs(sp.train["ts"].nunique() - (0.70 * n - h)) <= 2


def test_split_rejects_bad_input(planted: pd.DataFrame) -> None:
    with pytest.raises(ModelError, match="fractions"):
        split_frame(planted, 7, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ModelError, match="horizon"):
        split_frame(planted, 0)
    with pytest.raises(ModelError, match="empty"):
        split_frame(planted[planted["ts"] < planted["ts"].min() + pd.Timedelta(days=40)], 30)


def test_history_rows_never_override_samples_and_duplicates_are_refused(planted: pd.DataFrame) -> None:
    rows = planted[planted["symbol"] == "BTC/USDT"].iloc[100:110]
    ctx = make_context({"rows": rows}, FEATS, history=planted)
    assert (ctx.part == "rows").sum() == 10  # the history copies of these rows were dropped
    assert len(ctx.part) == len(planted)
    dup = pd.concat([rows, rows.iloc[[0]]], ignore_index=True)
    with pytest.raises(ModelError, match="duplicate"):
        make_context({"rows": dup}, FEATS)


def test_missing_column_and_bad_label_are_named(planted: pd.DataFrame) -> None:
    with pytest.raises(ModelError, match="noise_0"):
        build_model("rf", features=FEATS, **TINY["rf"]).fit(planted.drop(columns=["noise_0"]), TARGET)
    bad = planted.copy()
    bad[TARGET] = bad[TARGET].astype("float64").fillna(1.0)
    bad.loc[5, TARGET] = 7.0
    with pytest.raises(ModelError, match="0/1/2"):
        build_model("rf", features=FEATS, **TINY["rf"]).fit(bad, TARGET)


def test_scaler_is_fit_on_training_rows_only(planted: pd.DataFrame) -> None:
    df = planted.copy()
    sp = split_frame(df, 7)
    # Shift valid/test features hugely: a scaler that saw them would move its mean.
    later = df["ts"] >= sp.boundaries["valid_start"]
    df.loc[later, "ret_1d"] += 100.0
    sp = split_frame(df, 7)
    m = LightGBMModel(features=FEATS, **TINY["lgbm"]).fit(sp.train, TARGET, valid=sp.valid, history=sp.frame)
    train_mean = sp.train["ret_1d"].mean()
    assert m.scaler.mean is not None
    assert m.scaler.mean[FEATS.index("ret_1d")] == pytest.approx(train_mean, abs=1e-9)
    assert abs(train_mean) < 1.0


def test_standardizer_roundtrip_and_nan_handling(tmp_path: object) -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0], [np.nan, 5.0]])
    s = Standardizer().fit(x)
    z = s.transform(x)
    assert z[0, 0] == pytest.approx(-1.0) and z[1, 0] == pytest.approx(1.0)
    assert z[2, 0] == 0.0  # NaN -> training mean
    assert (z[:, 1] == 0).all()  # constant feature -> std 1, centred
    from pathlib import Path

    p = Path(str(tmp_path)) / "s.npz"
    s.save(p)
    assert np.array_equal(Standardizer.load(p).transform(x), z)


def test_tabular_view_matches_pandas_groupby(planted: pd.DataFrame) -> None:
    df = planted.sort_values(["symbol", "ts"]).reset_index(drop=True)
    ctx = make_context({"rows": df}, ["ret_1d", "noise_0"])
    z = ctx.values  # unscaled, to compare with pandas directly
    ends = ctx.samples("rows", 30)
    x = tabular(z, ends, lags=[1, 3], roll=[7])
    g = df.groupby("symbol")["noise_0"]
    expect_lag3 = g.shift(3).to_numpy()[ends]
    expect_mean7 = g.transform(lambda s: s.rolling(7).mean()).to_numpy()[ends]
    expect_std7 = g.transform(lambda s: s.rolling(7).std(ddof=0)).to_numpy()[ends]
    # columns: [f...], lag1[f...], lag3[f...], mean7[f...], std7[f...] with f = (ret_1d, noise_0)
    np.testing.assert_allclose(x[:, 5], expect_lag3, rtol=1e-5)
    np.testing.assert_allclose(x[:, 7], expect_mean7, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x[:, 9], expect_std7, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("lags", "roll", "need"), [
    ((), (), 1),            # the last bar only
    ((1,), (), 2),          # a lag of k bars needs k + 1
    ((), (2,), 2),          # a window of w bars needs w
    ((3,), (4,), 4),        # tie: lag 3 and window 4 need the same
    ((1, 3), (7,), 7),
    ((7,), (5, 2), 8),
])
def test_tabular_min_history(lags: tuple[int, ...], roll: tuple[int, ...], need: int) -> None:
    assert tabular_min_history(lags, roll) == need


def test_tabular_matrix_is_the_view_then_the_asset_one_hot(planted: pd.DataFrame) -> None:
    scaler = Standardizer()
    scaler.fit(planted[FEATS].to_numpy(dtype=np.float64))
    prep = prepare_predict(features=FEATS, scaler=scaler, min_history=8, rows=planted, history=None)
    s = prep.samples["rows"]
    view = tabular(prep.z, s, lags=[7], roll=[5])
    plain = tabular_matrix(prep, s, lags=[7], roll=[5], assets=[])
    assert plain.dtype == np.float32 and plain.tobytes() == view.tobytes()
    assets = ["ETH/USDT", "BTC/USDT", "XYZ/USDT"]   # XYZ never seen: an all-zero column
    x = tabular_matrix(prep, s, lags=[7], roll=[5], assets=assets)
    assert x.shape == (len(s), view.shape[1] + 3)
    np.testing.assert_array_equal(x[:, : view.shape[1]], view)
    np.testing.assert_array_equal(x[:, view.shape[1]:], asset_onehot(prep.ctx.symbols[s], assets))
    assert (x[:, -1] == 0).all() and (x[:, -3:-1].sum(axis=1) == (prep.ctx.symbols[s] != "SOL/USDT")).all()


@pytest.mark.parametrize("name", ["lgbm", "lstm"])
def test_rows_lacking_history_get_nan_and_appending_rows_changes_nothing(planted: pd.DataFrame, name: str) -> None:
    sp = split_frame(planted, 7)
    m = build_model(name, features=FEATS, **TINY[name]).fit(sp.train, TARGET, valid=sp.valid, history=sp.frame)
    btc = planted[planted["symbol"] == "BTC/USDT"].reset_index(drop=True)
    p = m.predict_proba(btc.iloc[:200])
    assert list(p.index) == list(range(200))
    need = m.min_history
    assert p.iloc[: need - 1].isna().all().all()
    assert p.iloc[need - 1:].notna().all().all()
    np.testing.assert_allclose(p.iloc[need - 1:].sum(axis=1), 1.0, atol=1e-9)
    # No look-ahead: predictions for the first 200 rows are unchanged by appending later rows.
    p_more = m.predict_proba(btc.iloc[:300]).iloc[:200]
    np.testing.assert_allclose(p.to_numpy(), p_more.to_numpy(), rtol=0, atol=1e-12)
    # History passed separately gives the same numbers as history inside the rows.
    p_hist = m.predict_proba(btc.iloc[150:200], history=btc.iloc[:150])
    np.testing.assert_allclose(p_hist.to_numpy(), p.iloc[150:200].to_numpy(), atol=1e-6)


def test_warmup_rows_are_not_scored(planted: pd.DataFrame) -> None:
    df = planted.copy()
    df["warmup"] = df.groupby("symbol").cumcount() < 60
    m = build_model("rf", features=FEATS, **TINY["rf"]).fit(df, TARGET)
    p = m.predict_proba(df)
    assert p[df["warmup"].to_numpy()].isna().all().all()
    assert p[~df["warmup"].to_numpy()].notna().all().all()


def test_default_features_prefer_the_registry_and_fall_back_to_numeric_columns(planted: pd.DataFrame) -> None:
    got = default_features(planted)
    assert got == [c for c in planted.columns if c in FEATS]  # synthetic names are not in the registry
    assert not any(c.startswith("y_") for c in got)
    registry_frame = planted.assign(rsi_14=50.0, log_ret_1=0.0)
    assert default_features(registry_frame) == ["log_ret_1", "rsi_14"]
