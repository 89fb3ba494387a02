"""Synthetic Deribit-shaped option chains with a known (planted) SVI surface."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest

from entasis.options.deribit import deribit_greeks, year_fraction
from entasis.options.svi import svi_total_variance

DERIBIT_CSV = "deribit/option_chain_snapshot_tessicin/deribit_options.csv"


def planted_svi(t: float) -> np.ndarray:
    """A BTC-like skewed smile whose level and width scale with maturity."""
    return np.array([0.24 * t, 0.12 * np.sqrt(t), -0.35, 0.01 * np.sqrt(t), 0.25 * np.sqrt(t)])


def make_chain(
    snapshot_ts: str | pd.Timestamp = "2024-03-01 08:00",
    underlying: str = "BTC",
    spot: float = 60_000.0,
    expiry_days: Sequence[float] = (2, 5, 9, 16, 28, 35, 60),
    n_strikes: int = 21,
    params_fn: Callable[[float], np.ndarray] = planted_svi,
    oi_put: float = 30.0,
    oi_call: float = 20.0,
) -> pd.DataFrame:
    """Calls and puts priced on the planted SVI smile, in Deribit's units (coin prices, IV in %)."""
    snap = pd.Timestamp(snapshot_ts)
    snap = snap.tz_localize("UTC") if snap.tzinfo is None else snap
    rows = []
    for d in expiry_days:
        expiry = (snap + pd.Timedelta(days=float(d)))
        t = float(year_fraction(snap, expiry)[0])
        fwd = spot * np.exp(0.08 * t)
        p = params_fn(t)
        sd = np.sqrt(svi_total_variance(p, 0.0))
        k = np.linspace(-3.0 * sd, 3.0 * sd, n_strikes)
        strikes = fwd * np.exp(k)
        vol = np.sqrt(svi_total_variance(p, k) / t)
        for kind in ("call", "put"):
            g = deribit_greeks(fwd, strikes, t, vol, kind)
            for i, K in enumerate(strikes):
                mark = float(g["mark_price"][i])
                rows.append({
                    "exchange": "deribit",
                    "instrument": f"{underlying}-{expiry:%d%b%y}-{K:.2f}-{kind[0].upper()}".upper(),
                    "snapshot_ts": snap,
                    "underlying": underlying,
                    "expiry": expiry,
                    "strike": float(K),
                    "kind": kind,
                    "bid": mark * 0.98,
                    "ask": mark * 1.02,
                    "mark_price": mark,
                    "mark_iv": float(vol[i] * 100.0),
                    "delta": float(g["delta"][i]),
                    "gamma": float(g["gamma"][i]),
                    "vega": float(g["vega"][i]),
                    "theta": float(g["theta"][i]),
                    "underlying_price": fwd,
                    "open_interest": oi_call if kind == "call" else oi_put,
                })
    df = pd.DataFrame(rows)
    df["snapshot_ts"] = pd.to_datetime(df["snapshot_ts"], utc=True)
    df["expiry"] = pd.to_datetime(df["expiry"], utc=True)
    return df


@pytest.fixture
def chain_factory() -> Callable[..., pd.DataFrame]:
    return make_chain
