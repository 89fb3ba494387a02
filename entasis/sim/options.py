"""Deribit-style option chains for the simulator, priced from a Heston stochastic-volatility model.

Why the Heston pricer is here and not in :mod:`entasis.options`: the simulated exchange needs only
this compact, vectorised Lewis integral. Black-76 prices, implied vols and the Greeks in Deribit's
units come from the options stage (:mod:`entasis.options.black`, :mod:`entasis.options.iv`,
:func:`entasis.options.deribit.deribit_greeks`), the one implementation of each.

Consistency: the Heston spot variance is the asset's current variance regime in the simulator
(times a variance risk premium), its long-run variance is the asset's volatility level, so implied
vol rises after turbulent weeks exactly when realised vol does. Each strike gets one implied vol
(inverted from the Heston price), and calls and puts are priced from it with Black-76 on the
expiry's forward, so put-call parity holds on mark prices: C - P = (F - K) / F in coin.

Conventions (Deribit's): inverse options, prices in the underlying coin (USD value / forward),
``mark_iv`` in percent, expiries at 08:00 UTC, greeks in USD (delta per 1 coin of underlying,
gamma per USD, vega per volatility point, theta per calendar day). Gamma is rounded to 8 decimals
(Deribit shows 5, which leaves one significant digit for BTC).

Listing: every day has a daily expiry listed 3 days ahead, Fridays 4 weeks ahead, the last Friday
of a month ~3 months ahead and the last Friday of Mar/Jun/Sep/Dec a year ahead; expiries less than
an hour away are left out. Strikes cover the forward +-3.5 standard deviations (at least -8%/+10%)
on a round step that grows with maturity, plus the grid laid out when the expiry was listed.
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from entasis.domain import DAY_MS, HOUR_MS

if TYPE_CHECKING:
    import pandas as pd

    from entasis.sim.market import MarketSim

F64 = NDArray[np.float64]
YEAR_MS = 365.0 * DAY_MS
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]

QUOTE_COLUMNS = [
    "snapshot_ts", "instrument", "underlying", "expiry", "strike", "kind", "bid", "ask", "mark_price",
    "mark_iv", "delta", "gamma", "vega", "theta", "underlying_price", "open_interest",
]

#: Heston kappa, xi (vol of vol), rho per currency; others get the generic row
HESTON: dict[str, tuple[float, float, float]] = {"BTC": (2.0, 0.9, -0.25), "ETH": (2.0, 1.0, -0.3)}
HESTON_GENERIC = (2.0, 1.0, -0.2)
VOL_PREMIUM = 1.1  # implied vol trades above realised vol
ANNUAL_BASIS = 0.05  # futures contango per year


def heston_call(
    f: float, k: F64, t: float, v0: float, theta: float, kappa: float, xi: float, rho: float, n: int = 2048
) -> F64:
    """Undiscounted Heston call on the forward, by Lewis's single integral (little-trap char. function)."""
    v_lo = max(min(v0, theta), 0.01)
    u_max = min(math.sqrt(80.0 / (v_lo * t)), 20_000.0)
    # the 1/(u^2 + 1/4) peak at the origin needs a fine step whatever the maturity
    if u_max <= 40.0:
        u = np.linspace(0.0, u_max, n)
    else:
        u = np.r_[np.linspace(0.0, 40.0, 1201), np.linspace(40.0, u_max, n)[1:]]
    z = u - 0.5j  # phi evaluated at u - i/2
    beta = kappa - rho * xi * 1j * z
    d = np.sqrt(beta * beta + xi * xi * (z * z + 1j * z))
    g = (beta - d) / (beta + d)
    e = np.exp(-d * t)
    c_term = kappa * theta / xi**2 * ((beta - d) * t - 2.0 * np.log((1.0 - g * e) / (1.0 - g)))
    d_term = (beta - d) / xi**2 * (1.0 - e) / (1.0 - g * e)
    phi = np.exp(c_term + d_term * v0)
    x = np.log(f / k)[:, None]
    integrand = np.real(np.exp(1j * u[None, :] * x) * phi[None, :]) / (u * u + 0.25)[None, :]
    integral = np.trapezoid(integrand, u, axis=1)
    return np.asarray(f - np.sqrt(f * k) / math.pi * integral, dtype=np.float64)


# ---------------------------------------------------------------------------------------- listing
def _last_friday(year: int, month: int) -> int:
    """Day of month of the last Friday."""
    import calendar

    last = calendar.monthrange(year, month)[1]
    wd = calendar.weekday(year, month, last)  # Monday=0 .. Friday=4
    return last - ((wd - 4) % 7)


def listed_expiries(ms: int) -> list[tuple[int, int, str]]:
    """(expiry_ms, creation_ms, settlement_period) of the expiries listed at ``ms``."""
    import datetime as dt

    out = []
    day0 = ms // DAY_MS
    for d in range(day0, day0 + 372):
        exp = d * DAY_MS + 8 * HOUR_MS
        if exp - ms < HOUR_MS:
            continue
        date = dt.date(1970, 1, 1) + dt.timedelta(days=d)
        horizon, period = 3 * DAY_MS, "day"
        if date.weekday() == 4:
            horizon, period = 28 * DAY_MS, "week"
            if date.day == _last_friday(date.year, date.month):
                horizon, period = 92 * DAY_MS, "month"
                if date.month in (3, 6, 9, 12):
                    horizon = 366 * DAY_MS
        creation = exp - horizon
        if creation <= ms:
            out.append((exp, creation, period))
    return out


def expiry_code(exp_ms: int) -> str:
    """'5JAN24' style, as in Deribit instrument names (no leading zero)."""
    import datetime as dt

    d = dt.datetime.fromtimestamp(exp_ms / 1000, tz=dt.UTC)
    return f"{d.day}{MONTHS[d.month - 1]}{d.year % 100:02d}"


def strike_code(k: float) -> str:
    return str(int(k)) if float(k).is_integer() else repr(float(k)).replace(".", "d")


def _nice_step(x: float) -> float:
    mag = 10.0 ** math.floor(math.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * mag >= x:
            return m * mag
    return 10.0 * mag  # pragma: no cover


def strike_grid(f: float, t: float, sigma: float) -> F64:
    """Round strikes around the forward; the step grows with maturity, as on Deribit."""
    days = t * 365.0
    pct = 0.01 if days <= 3 else 0.02 if days <= 35 else 0.04 if days <= 100 else 0.08
    width = max(3.5 * sigma * math.sqrt(t), 0.08)
    lo, hi = f * math.exp(-width), f * math.exp(width * 1.25)
    step = _nice_step(f * pct)
    while (hi - lo) / step > 60:
        step = _nice_step(step * 1.01)
    first = math.ceil(lo / step) * step
    ks = np.arange(first, hi + step * 0.5, step)
    return np.round(ks[ks > 0], 10)


# ---------------------------------------------------------------------------------------- chain
def build_chain(sim: MarketSim, currency: str, ms: int) -> pd.DataFrame:
    """The whole chain of ``currency`` at ``ms`` with every field the simulated Deribit serves."""
    import pandas as pd

    # pricing and implied vols come from the option library (imported here: scipy is slow to import
    # and the exchange server should start fast)
    from entasis.options.black import black_price as black76
    from entasis.options.deribit import deribit_greeks
    from entasis.options.iv import implied_vol

    symbol = f"{currency}/USDT"
    spot = sim.price_at(symbol, ms)
    v_now, v_long = sim.variance_at(symbol, ms)
    v0, theta = v_now * VOL_PREMIUM**2, v_long * VOL_PREMIUM**2
    kappa, xi, rho = HESTON.get(currency, HESTON_GENERIC)
    basis = ANNUAL_BASIS + 20.0 * (sim.premium_at(symbol, ms) - 0.0001)
    seed_key = zlib.crc32(currency.encode())
    frames = []
    for exp, creation, period in listed_expiries(ms):
        t = (exp - ms) / YEAR_MS
        fwd = spot * math.exp(basis * t)
        vol_guess = math.sqrt(max(v0, theta))
        ks = strike_grid(fwd, t, vol_guess)
        c_ms = max(creation, sim.start_ms + HOUR_MS)
        if c_ms < ms:
            f_c = sim.price_at(symbol, c_ms)
            ks = np.union1d(ks, strike_grid(f_c, (exp - c_ms) / YEAR_MS, vol_guess))
        call = heston_call(fwd, ks, t, v0, theta, kappa, xi, rho)
        otm_call = ks >= fwd
        otm_price = np.where(otm_call, call, call - (fwd - ks))  # put via parity
        ok = otm_price > 1e-4 * fwd  # worth at least one 0.0001-coin tick, where IV is well defined
        ks, otm_price, otm_call = ks[ok], otm_price[ok], otm_call[ok]
        if len(ks) == 0:
            continue
        tt = np.full(len(ks), t)
        ff = np.full(len(ks), fwd)
        iv = np.round(implied_vol(otm_price, ff, ks, tt, otm_call), 4)  # mark_iv to 2 dp in percent
        frames.append(pd.DataFrame({
            "expiry_ms": exp, "creation_ms": creation, "settlement_period": period, "t": t, "fwd": fwd,
            "strike": ks, "iv": iv,
        }))
    if not frames:
        raise ValueError(f"no {currency} options listed at {pd.Timestamp(ms, unit='ms', tz='UTC')}")
    per_strike = pd.concat(frames, ignore_index=True)
    both = pd.concat([per_strike.assign(kind="call"), per_strike.assign(kind="put")], ignore_index=True)
    both = both.sort_values(["expiry_ms", "strike", "kind"], kind="stable").reset_index(drop=True)
    is_call = (both["kind"] == "call").to_numpy()
    f = both["fwd"].to_numpy()
    k = both["strike"].to_numpy()
    t = both["t"].to_numpy()
    iv = both["iv"].to_numpy()
    usd = black76(f, k, t, iv, is_call)
    mark = np.round(usd / f, 8)
    moneyness = np.abs(np.log(k / f)) / (iv * np.sqrt(t))
    half = 0.5 * (0.015 + 0.006 * moneyness + 0.01 * (t < 7 / 365))
    bid_iv, ask_iv = np.maximum(iv - half, 0.01), iv + half
    bid_raw = black76(f, k, t, bid_iv, is_call) / f
    ask_raw = black76(f, k, t, ask_iv, is_call) / f
    tick_b = np.where(bid_raw >= 0.005, 0.0005, 0.0001)
    tick_a = np.where(ask_raw >= 0.005, 0.0005, 0.0001)
    bid = np.round(np.floor(bid_raw / tick_b + 1e-9) * tick_b, 4)
    ask = np.round(np.maximum(np.ceil(ask_raw / tick_a - 1e-9) * tick_a, 0.0001), 4)
    bid = np.where(bid > 0, np.minimum(bid, mark), np.nan)
    greeks = deribit_greeks(f, k, t, iv, is_call)  # USD: delta per coin, vega per vol point, theta per day
    code = both["expiry_ms"].map(expiry_code)
    names = [f"{currency}-{c}-{strike_code(s)}-{'C' if cl else 'P'}" for c, s, cl in zip(code, k, is_call, strict=True)]
    futures_style = both["settlement_period"].to_numpy() != "day"
    underlying_index = np.where(futures_style, currency + "-" + code, "SYN." + currency + "-" + code)
    # open interest: fixed per instrument, grows with age, concentrated near the money at listing
    draw = np.array([np.random.default_rng([sim.seed, zlib.crc32(nm.encode()), seed_key]).random(2) for nm in names])
    age = np.clip((ms - both["creation_ms"].to_numpy()) / (7 * DAY_MS), 0.05, 1.0)
    atm = np.exp(-0.5 * (np.log(k / f) / max(0.3, 1e-9)) ** 2)
    scale = 1500.0 if currency == "BTC" else 15000.0 if currency == "ETH" else 5000.0
    oi = np.round(scale * atm * age * (0.2 + draw[:, 0]) * np.exp(0.5 * draw[:, 1]) + 0.1, 1)
    vol_traded = np.round(oi * 0.05 * draw[:, 1], 1)
    snap = pd.Timestamp(ms, unit="ms", tz="UTC")
    return pd.DataFrame({
        "snapshot_ts": snap,
        "instrument": names,
        "underlying": currency,
        "expiry": pd.to_datetime(both["expiry_ms"].to_numpy(), unit="ms", utc=True),
        "strike": k,
        "kind": both["kind"].to_numpy(),
        "bid": bid,
        "ask": ask,
        "mark_price": mark,
        "mark_iv": np.round(iv * 100.0, 2),
        "delta": np.round(greeks["delta"], 5),
        "gamma": np.round(greeks["gamma"], 8),
        "vega": np.round(greeks["vega"], 5),
        "theta": np.round(greeks["theta"], 5),
        "underlying_price": np.round(f, 2),
        "open_interest": oi,
        # extra fields for the simulated Deribit
        "bid_iv": np.where(np.isnan(bid), 0.0, np.round(bid_iv * 100.0, 2)),
        "ask_iv": np.round(ask_iv * 100.0, 2),
        "index_price": round(spot, 2),
        "underlying_index": underlying_index,
        "creation_ms": both["creation_ms"].to_numpy(),
        "expiry_ms": both["expiry_ms"].to_numpy(),
        "settlement_period": both["settlement_period"].to_numpy(),
        "volume": vol_traded,
    })
