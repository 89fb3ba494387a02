"""SVI fitting and the snapshot_features contract, against a planted surface computed independently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from entasis.options.surface import (
    FEATURE_COLUMNS,
    fit_smiles,
    interpolate_total_variance,
    snapshot_features,
)
from entasis.options.svi import fit_svi, svi_total_variance

from .conftest import make_chain, planted_svi


def test_batched_svi_recovers_planted_smiles_and_skips_thin_ones() -> None:
    rng = np.random.default_rng(3)
    S, n = 300, 17
    T = rng.uniform(0.01, 1.0, S)
    P = np.stack([rng.uniform(0.01, 0.3, S) * T, rng.uniform(0.02, 0.3, S) * np.sqrt(T), rng.uniform(-0.7, 0.5, S),
                  rng.uniform(-0.1, 0.1, S) * np.sqrt(T), rng.uniform(0.05, 0.5, S) * np.sqrt(T)], axis=1)
    k = np.linspace(-1, 1, n)[None, :] * np.sqrt(T)[:, None]
    iv = np.sqrt(svi_total_variance(P, k) / T[:, None])
    mask = rng.random((S, n)) < 0.85
    mask[:5] = False
    mask[:5, :4] = True                  # 4 points: too few for 5 parameters
    fit = fit_svi(k, iv, T, mask)
    assert np.isnan(fit.params[:5]).all() and np.isnan(fit.rmse[:5]).all()
    assert np.nanmax(fit.rmse[5:]) < 1e-8
    fitted = np.sqrt(fit.total_variance(k) / T[:, None])
    np.testing.assert_allclose(fitted[5:][mask[5:]], iv[5:][mask[5:]], atol=1e-8)
    # Lee's bound on wing slopes holds for every fit
    assert np.all(fit.params[5:, 1] * (1 + np.abs(fit.params[5:, 2])) <= 2.0 + 1e-12)


def _expected_features(snap: pd.Timestamp, days: tuple[float, ...]) -> dict[str, float]:
    """The contract's numbers straight from the planted SVI, with scipy root finding (independent path)."""
    t = np.array([d / 365 for d in days])
    atm, c25, p25 = [], [], []
    for ti in t:
        p = planted_svi(ti)

        def d1(k: float, p: np.ndarray = p) -> float:
            w = float(svi_total_variance(p, k))
            return float(-k / np.sqrt(w) + np.sqrt(w) / 2)

        atm.append(np.sqrt(svi_total_variance(p, 0.0) / ti))
        kc = brentq(lambda k: d1(k) - norm.ppf(0.25), 0.0, 3.0)
        kp = brentq(lambda k: d1(k) - norm.ppf(0.75), -3.0, 0.0)
        c25.append(np.sqrt(svi_total_variance(p, kc) / ti))
        p25.append(np.sqrt(svi_total_variance(p, kp) / ti))

    def at(vols: list[float], days_target: float) -> float:
        tt = days_target / 365
        w = np.interp(tt, t, np.array(vols) ** 2 * t)
        return float(np.sqrt(w / tt))

    a7, a30, c30, p30 = at(atm, 7), at(atm, 30), at(c25, 30), at(p25, 30)
    return {"atm_iv_7d": a7, "atm_iv_30d": a30, "rr25_30d": c30 - p30, "bf25_30d": (c30 + p30) / 2 - a30,
            "term_slope": a30 - a7}


def test_snapshot_features_match_planted_surface() -> None:
    days = (2, 5, 9, 16, 28, 35, 60)
    q = make_chain("2024-03-01 08:00", expiry_days=days, oi_put=30.0, oi_call=20.0)
    out = snapshot_features(q)
    assert list(out.columns) == FEATURE_COLUMNS
    assert len(out) == 1
    row = out.iloc[0]
    assert row["underlying"] == "BTC" and row["snapshot_ts"] == pd.Timestamp("2024-03-01 08:00", tz="UTC")
    exp = _expected_features(pd.Timestamp("2024-03-01 08:00", tz="UTC"), days)
    for col, val in exp.items():
        assert row[col] == pytest.approx(val, abs=1e-7), col
    assert row["pc_oi_ratio"] == pytest.approx(30.0 / 20.0)
    assert row["rr25_30d"] < 0 < row["bf25_30d"]         # the planted skew: puts over calls, convex smile


def test_many_snapshots_and_underlyings_one_row_each_and_no_look_ahead() -> None:
    a = make_chain("2024-03-01 08:00", underlying="BTC")
    b = make_chain("2024-03-01 09:00", underlying="BTC", spot=61_000.0)
    c = make_chain("2024-03-01 08:00", underlying="ETH", spot=3_000.0, oi_put=10.0, oi_call=40.0)
    both = snapshot_features(pd.concat([a, b, c], ignore_index=True))
    keys = list(zip(both["underlying"], both["snapshot_ts"].dt.hour, strict=True))
    assert keys == [("BTC", 8), ("BTC", 9), ("ETH", 8)]
    alone = snapshot_features(a).iloc[0]
    # a snapshot's features do not move when a later snapshot is added
    for col in FEATURE_COLUMNS[2:]:
        assert both.iloc[0][col] == pytest.approx(alone[col], rel=1e-12, abs=1e-14), col
    assert both.iloc[2]["pc_oi_ratio"] == pytest.approx(0.25)


def test_nan_where_not_computable() -> None:
    # expiries 10..60 days: 7d is not bracketed -> NaN (and term slope), 30d still fine
    q = make_chain(expiry_days=(10, 20, 45, 60))
    row = snapshot_features(q).iloc[0]
    assert np.isnan(row["atm_iv_7d"]) and np.isnan(row["term_slope"])
    assert np.isfinite(row["atm_iv_30d"]) and np.isfinite(row["rr25_30d"])
    # only 3 strikes per expiry: no smile, so no vols at all; OI ratio still there
    thin = make_chain(n_strikes=3)
    r2 = snapshot_features(thin).iloc[0]
    assert np.isnan(r2[["atm_iv_7d", "atm_iv_30d", "rr25_30d", "bf25_30d", "term_slope"]].astype(float)).all()
    assert r2["pc_oi_ratio"] == pytest.approx(1.5)
    # no call open interest: ratio undefined
    r3 = snapshot_features(make_chain(oi_call=0.0)).iloc[0]
    assert np.isnan(r3["pc_oi_ratio"])


def test_25_delta_points_far_past_the_quotes_are_not_invented() -> None:
    # strikes only within +-0.1 ATM std devs: the 25-delta strikes (~0.7 sd out) lie further
    # past the last quote than the 0.5 sd allowance, so they are NaN rather than extrapolated
    q = make_chain(expiry_days=(5, 9, 28, 35), n_strikes=121)
    t = (q["expiry"] - q["snapshot_ts"]).dt.total_seconds() / (365 * 86400)
    sd = np.sqrt([svi_total_variance(planted_svi(ti), 0.0) for ti in t])
    narrow_q = q[np.abs(np.log(q["strike"] / q["underlying_price"])) <= 0.1 * sd + 1e-12]
    sm = fit_smiles(narrow_q)
    assert (sm["n_quotes"] >= 5).all()
    assert sm["atm_iv"].notna().all()
    assert sm["iv_25c"].isna().all() and sm["iv_25p"].isna().all()
    assert np.isnan(snapshot_features(narrow_q).iloc[0]["rr25_30d"])


def test_iv_taken_from_coin_mark_price_when_mark_iv_missing() -> None:
    q = make_chain()
    with_iv = snapshot_features(q).iloc[0]
    q2 = q.assign(mark_iv=np.nan)
    from_price = snapshot_features(q2).iloc[0]
    for col in ("atm_iv_7d", "atm_iv_30d", "rr25_30d", "bf25_30d"):
        assert from_price[col] == pytest.approx(with_iv[col], abs=1e-9), col


def test_interpolation_is_in_total_variance_and_never_extrapolates() -> None:
    t = np.array([0.1, 0.2])
    vol = np.array([0.5, 0.4])
    got = interpolate_total_variance(t, vol, 0.15)
    assert got == pytest.approx(np.sqrt((0.5 * 0.025 + 0.5 * 0.032) / 0.15))
    assert np.isnan(interpolate_total_variance(t, vol, 0.05))
    assert np.isnan(interpolate_total_variance(t, vol, 0.25))
    assert interpolate_total_variance(t, vol, 0.1) == pytest.approx(0.5)


def test_bad_input_is_named() -> None:
    q = make_chain()
    with pytest.raises(ValueError, match="lack column"):
        snapshot_features(q.drop(columns=["underlying_price"]))
    with pytest.raises(ValueError, match="timezone-aware"):
        snapshot_features(q.assign(snapshot_ts=q["snapshot_ts"].dt.tz_localize(None)))
    with pytest.raises(ValueError, match="several exchanges"):
        snapshot_features(pd.concat([q, q.assign(exchange="okx")]))
    with pytest.raises(ValueError, match="'kind'"):
        snapshot_features(q.assign(kind="C"))
    empty = snapshot_features(q.iloc[:0])
    assert empty.empty and list(empty.columns) == FEATURE_COLUMNS
