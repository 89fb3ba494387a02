"""Deribit conventions, and the real chain snapshot in shared data reproducing its own numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entasis.options import iv as ivm
from entasis.options.deribit import (
    deribit_greeks,
    infer_snapshot_ts,
    parse_instrument,
    read_chain_csv,
    year_fraction,
)
from entasis.options.iv import implied_vol_detail
from entasis.options.store import build_surface
from entasis.options.surface import snapshot_features

from .conftest import DERIBIT_CSV, make_chain


def test_parse_instrument_expires_at_0800_utc() -> None:
    got = parse_instrument("BTC-13MAR26-61000-C")
    assert got == {"underlying": "BTC", "expiry": pd.Timestamp("2026-03-13 08:00", tz="UTC").to_pydatetime(),
                   "strike": 61000.0, "kind": "call"}
    assert parse_instrument("ETH-5JAN24-2250-P")["kind"] == "put"
    assert parse_instrument("XRP_USDC-30AUG24-0d625-C")["strike"] == 0.625
    with pytest.raises(ValueError, match="not a Deribit option"):
        parse_instrument("BTC-PERPETUAL")


def test_year_fraction_is_act365_in_seconds_and_needs_tz() -> None:
    s = pd.Timestamp("2024-01-01 08:00", tz="UTC")
    assert year_fraction(s, s + pd.Timedelta(days=365))[0] == pytest.approx(1.0, abs=1e-15)
    assert year_fraction(s, pd.Timestamp("2024-01-01 10:00", tz="Europe/Paris"))[0] == pytest.approx(1 / 365 / 24)
    with pytest.raises(ValueError, match="timezone-aware"):
        year_fraction(pd.Timestamp("2024-01-01"), s)


def test_snapshot_time_recovered_from_greeks() -> None:
    q = make_chain("2024-05-02 13:37:21")
    assert infer_snapshot_ts(q) == pd.Timestamp("2024-05-02 13:37:21", tz="UTC")


@pytest.fixture
def real_chain(shared_data: Path) -> pd.DataFrame:
    path = shared_data / DERIBIT_CSV
    if not path.exists():
        pytest.skip(f"{path} not present")
    return read_chain_csv(path)


def test_real_chain_loads_as_option_quotes(real_chain: pd.DataFrame) -> None:
    from entasis.store.market import OPTION_COLUMNS
    from entasis.store.validate import OPTION_RULES, find_violations

    assert list(real_chain.columns) == OPTION_COLUMNS
    assert len(real_chain) == 166 and real_chain["expiry"].nunique() == 8
    assert (real_chain["expiry"].dt.hour == 8).all()
    ts = real_chain["snapshot_ts"].iloc[0]
    # the file does not store its time; the Greeks put it after the newest listing (2026-02-28 10:33)
    assert pd.Timestamp("2026-02-28 10:33", tz="UTC") < ts < real_chain["expiry"].min()
    assert find_violations(real_chain, OPTION_RULES, key_cols=("instrument", "snapshot_ts")).empty


def test_real_chain_greeks_follow_deribit_conventions(real_chain: pd.DataFrame) -> None:
    q = real_chain
    T = year_fraction(q["snapshot_ts"], q["expiry"])
    g = deribit_greeks(q["underlying_price"].to_numpy(), q["strike"].to_numpy(), T, q["mark_iv"].to_numpy() / 100,
                       q["kind"].to_numpy())
    np.testing.assert_allclose(g["delta"], q["delta"], atol=5e-5)           # N(d1), 5 decimals shown
    np.testing.assert_allclose(g["vega"], q["vega"], rtol=2e-4)            # USD per vol point
    np.testing.assert_allclose(g["theta"], q["theta"], rtol=5e-4)          # USD per day
    np.testing.assert_allclose(g["gamma"], q["gamma"], atol=5e-6)          # shown to 1e-5


def test_real_chain_reproduces_its_mark_ivs_from_mark_prices(real_chain: pd.DataFrame) -> None:
    q = real_chain
    F = q["underlying_price"].to_numpy()
    T = year_fraction(q["snapshot_ts"], q["expiry"])
    res = implied_vol_detail(q["mark_price"].to_numpy() * F, F, q["strike"].to_numpy(), T, q["kind"].to_numpy())
    assert (res.code == ivm.OK).all(), res.summary()
    err_pts = res.iv * 100 - q["mark_iv"].to_numpy()
    # mark prices are rounded to the 0.0001 BTC tick: allow one tick's worth of vol per option
    tick_in_vol_pts = 1e-4 * F / q["vega"].to_numpy()
    assert np.all(np.abs(err_pts) <= tick_in_vol_pts), np.max(np.abs(err_pts) / tick_in_vol_pts)
    assert abs(err_pts.mean()) < 0.01 and np.median(np.abs(err_pts)) < 0.03


def test_real_chain_calibrates_and_gives_features(real_chain: pd.DataFrame) -> None:
    surf = build_surface(real_chain)
    cal = surf.calibration
    assert cal is not None and cal.success and np.isfinite(cal.params.as_array()).all()
    assert cal.n_options == len(surf.points) > 80
    assert cal.rmse_iv < 0.01            # within a vol point on average over the whole chain
    assert 0.2**2 < cal.params.v0 < 0.8**2
    assert surf.smiles["fit_rmse"].max() < 0.005     # SVI within half a vol point per expiry
    assert np.all(np.abs(surf.smiles["heston_atm_iv"] - surf.smiles["atm_iv"]) < 0.02)
    feats = surf.features.iloc[0]
    assert feats["feller_ok"] == cal.feller_ok and feats["v0"] == cal.params.v0
    assert 0.45 < feats["atm_iv_30d"] < 0.56        # marks sit between 47.8% and 63.3%
    assert feats["rr25_30d"] < 0                    # puts over calls in this snapshot
    assert np.isnan(feats["atm_iv_7d"])             # first expiry is 11.8 days out: 7d not bracketed
    oi = real_chain.groupby("kind")["open_interest"].sum()
    assert feats["pc_oi_ratio"] == pytest.approx(oi["put"] / oi["call"])
    # the pure features function agrees with what the store path computes
    pure = snapshot_features(real_chain).iloc[0]
    for col in ("atm_iv_30d", "rr25_30d", "bf25_30d", "pc_oi_ratio"):
        assert pure[col] == pytest.approx(feats[col], rel=1e-12), col
