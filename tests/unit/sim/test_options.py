"""Simulated option chains: Heston-consistent, arbitrage-free on marks, Deribit-shaped."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from entasis.options.black import black_price as black76
from entasis.options.iv import implied_vol
from entasis.sim.market import MarketSim
from entasis.sim.options import (
    QUOTE_COLUMNS,
    heston_call,
    listed_expiries,
)

SNAP = "2023-03-15T10:00Z"


@pytest.fixture(scope="module")
def sim() -> MarketSim:
    return MarketSim(seed=7)


@pytest.fixture(scope="module")
def chain(sim: MarketSim) -> pd.DataFrame:
    return sim.option_chain("BTC", SNAP)


def test_heston_reduces_to_black_when_vol_of_vol_vanishes() -> None:
    k = np.array([30000.0, 40000.0, 46000.0, 52000.0, 60000.0])
    for t in (2 / 365, 30 / 365, 1.0):
        h = heston_call(46000.0, k, t, 0.36, 0.36, 2.0, 1e-4, 0.0)
        b = black76(np.full(5, 46000.0), k, np.full(5, t), np.full(5, 0.6), np.ones(5, bool))
        np.testing.assert_allclose(h, b, atol=0.05)


def test_implied_vol_round_trip() -> None:
    f, k = np.full(4, 100.0), np.array([70.0, 95.0, 105.0, 140.0])
    t, sig = np.full(4, 0.25), np.array([0.9, 0.6, 0.55, 0.7])
    calls = k >= f
    price = black76(f, k, t, sig, calls)
    np.testing.assert_allclose(implied_vol(price, f, k, t, calls), sig, atol=1e-9)


def test_chain_shape_and_names(chain: pd.DataFrame) -> None:
    assert list(chain.columns) == QUOTE_COLUMNS
    assert len(chain) >= 300 and chain["expiry"].nunique() >= 8
    assert (chain["expiry"].dt.hour == 8).all() and (chain["expiry"] > pd.Timestamp(SNAP, tz="UTC")).all()
    assert chain["instrument"].is_unique
    pat = re.compile(r"^BTC-\d{1,2}[A-Z]{3}\d{2}-\d+-[CP]$")
    assert chain["instrument"].map(lambda s: bool(pat.match(s))).all()
    row = chain.iloc[0]
    exp = row["expiry"]
    assert row["instrument"].startswith(f"BTC-{exp.day}{exp.strftime('%b').upper()}{exp:%y}-")
    assert set(chain["kind"]) == {"call", "put"} and (chain["underlying"] == "BTC").all()
    assert (chain["strike"] > 0).all() and (chain["open_interest"] > 0).all()
    assert str(chain["snapshot_ts"].dt.tz) == "UTC"


def test_put_call_parity_on_marks(chain: pd.DataFrame) -> None:
    c = chain[chain["kind"] == "call"].set_index(["expiry", "strike"])
    p = chain[chain["kind"] == "put"].set_index(["expiry", "strike"])
    c, p = c.align(p, join="inner")
    assert len(c) > 100
    lhs = c["mark_price"] - p["mark_price"]
    rhs = 1.0 - c.index.get_level_values("strike") / c["underlying_price"]
    np.testing.assert_allclose(lhs, rhs, rtol=1e-6, atol=2e-6)  # marks to 1e-8, forwards to the cent
    assert (c["mark_iv"] == p["mark_iv"]).all()


def test_smile_and_term_structure(chain: pd.DataFrame) -> None:
    calls = chain[chain["kind"] == "call"]
    curvatures = []
    for _, e in calls.groupby("expiry"):
        if len(e) < 8:
            continue
        x = np.log(e["strike"] / e["underlying_price"])
        curvatures.append(np.polyfit(x, e["mark_iv"], 2)[0])
        assert e["mark_iv"].max() - e["mark_iv"].min() > 0.5  # not flat
    assert np.median(curvatures) > 0  # a smile, not a straight line


def test_greeks_signs_and_quotes(chain: pd.DataFrame) -> None:
    calls, puts = chain[chain["kind"] == "call"], chain[chain["kind"] == "put"]
    assert calls["delta"].between(0, 1).all() and puts["delta"].between(-1, 0).all()
    assert (chain["gamma"] >= 0).all() and (chain["vega"] >= 0).all() and (chain["theta"] <= 0).all()
    for _, e in calls.groupby("expiry"):
        assert (np.diff(e.sort_values("strike")["delta"].to_numpy()) <= 1e-9).all()
    quoted = chain.dropna(subset=["bid"])
    assert (quoted["bid"] <= quoted["mark_price"]).all() and (chain["ask"] >= chain["mark_price"]).all()
    assert (chain["ask"] >= 0.0001).all() and chain["bid"].isna().mean() < 0.3


def test_implied_vol_follows_the_variance_regime(sim: MarketSim) -> None:
    """Short-dated at-the-money IV sits near the asset's current vol times the risk premium."""
    for ts in ("2022-05-10T12:00Z", "2023-01-20T12:00Z"):
        ms = int(pd.Timestamp(ts, tz="UTC").value // 1_000_000)
        v0, _ = sim.variance_at("BTC/USDT", ms)
        full = sim.option_chain_full("BTC", ts)
        near = full[full["expiry"] == full["expiry"].min()]
        atm = near.iloc[(np.log(near["strike"] / near["underlying_price"])).abs().argmin()]
        assert atm["mark_iv"] / 100 == pytest.approx(np.sqrt(v0) * 1.1, rel=0.25)


def test_listing_calendar() -> None:
    ms = int(pd.Timestamp("2023-03-15 10:00", tz="UTC").value // 1_000_000)
    exps = listed_expiries(ms)
    days = [pd.Timestamp(e, unit="ms", tz="UTC") for e, _, _ in exps]
    assert days[0] == pd.Timestamp("2023-03-16 08:00", tz="UTC")
    assert pd.Timestamp("2023-03-31 08:00", tz="UTC") in days  # month/quarter end
    assert pd.Timestamp("2023-12-29 08:00", tz="UTC") in days  # December quarterly, listed a year ahead
    assert all(c <= ms for _, c, _ in exps)


def test_no_look_ahead_and_determinism(sim: MarketSim) -> None:
    early = MarketSim(seed=7, now="2023-03-15T10:00Z")
    with pytest.raises(ValueError, match="look-ahead"):
        early.option_chain("BTC", "2023-03-15T11:00Z")
    pd.testing.assert_frame_equal(early.option_chain("ETH", SNAP), sim.option_chain("ETH", SNAP))
    other = MarketSim(seed=8).option_chain("ETH", SNAP)
    assert not np.array_equal(other["mark_price"].to_numpy()[:10], sim.option_chain("ETH", SNAP)["mark_price"][:10])


#: A seeded BTC chain as the simulator served it while it had its own Black-76 Greeks (before issue 15
#: moved it onto entasis.options): (instrument, bid, ask, mark_price, mark_iv, delta, gamma, vega, theta).
SEEDED_ROWS = [
    ("BTC-10FEB23-46000-P", 0.005, 0.006, 0.00549064, 61.41, -0.56039, 0.00075573, 3.35107, -823.15748),
    ("BTC-10FEB23-46000-C", 0.0036, 0.0038, 0.00369748, 61.41, 0.43961, 0.00075573, 3.35107, -823.15748),
    ("BTC-10FEB23-45000-C", 0.02, 0.0205, 0.02015839, 61.61, 0.96216, 0.00015733, 0.69992, -172.48839),
    ("BTC-10FEB23-46500-P", 0.013, 0.014, 0.01344918, 61.31, -0.86544, 0.00041583, 1.84086, -451.45153),
    ("BTC-3MAR23-46000-P", 0.057, 0.059, 0.05814716, 61.45, -0.46658, 5.837e-05, 44.0587, -64.08064),
    ("BTC-3MAR23-30000-C", 0.3485, 0.349, 0.34893373, 66.62, 0.99708, 1.21e-06, 0.99043, -1.56171),
    ("BTC-3MAR23-68000-P", 0.476, 0.4765, 0.47627273, 60.02, -0.99566, 1.92e-06, 1.41185, -2.00566),
    ("BTC-29DEC23-40000-C", 0.3085, 0.314, 0.31113133, 63.76, 0.73019, 1.143e-05, 149.89623, -14.8349),
    ("BTC-29DEC23-440000-P", 8.1145, 8.115, 8.11463607, 67.01, -0.9993, 8e-08, 1.09624, -0.11402),
]
#: sha256 of the whole chain's prices and Greeks (to_csv, %.10g) from that same run
SEEDED_SHA256 = "7f116e6e8bb56895d80f9ff6fe6c1abb1a2bcd57dfc2497e6753f6c4fbd0ab93"


def test_seeded_chain_prices_and_greeks_unchanged_on_the_shared_black76() -> None:
    """The sim prices and Greeks through entasis.options (one implementation): the chain is identical."""
    import hashlib

    from entasis.options.deribit import deribit_greeks
    from entasis.sim.options import build_chain

    sim = MarketSim(seed=11, symbols=["BTC/USDT", "ETH/USDT"], start="2023-01-01", end="2023-03-01")
    ms = 1676005200000  # 2023-02-10 05:00 UTC
    c = build_chain(sim, "BTC", ms)
    assert len(c) == 528
    got = c.set_index("instrument")
    cols = ["bid", "ask", "mark_price", "mark_iv", "delta", "gamma", "vega", "theta"]
    for name, *values in SEEDED_ROWS:
        assert got.loc[name, cols].tolist() == values, name
    csv = c[["instrument", "mark_price", "mark_iv", "delta", "gamma", "vega", "theta", "bid", "ask"]].to_csv(
        index=False, float_format="%.10g")
    assert hashlib.sha256(csv.encode()).hexdigest() == SEEDED_SHA256
    # and the served Greeks are deribit_greeks at the served vol and forward, rounded as Deribit shows them
    t = (c["expiry_ms"].to_numpy() - ms) / (365.0 * 86_400_000)
    g = deribit_greeks(c["underlying_price"].to_numpy(), c["strike"].to_numpy(), t, c["mark_iv"].to_numpy() / 100,
                       c["kind"].to_numpy())
    np.testing.assert_allclose(c["delta"], g["delta"], atol=1e-3)  # underlying_price is rounded to cents
    np.testing.assert_allclose(c["mark_price"], g["mark_price"], atol=1e-5)
