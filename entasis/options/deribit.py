"""Deribit's conventions, in one place.

* Options are inverse: ``mark_price``, bid and ask are in the coin (BTC, ETH); multiply by the
  underlying price for USD. ``mark_iv`` is in percent.
* ``underlying_price`` is the forward of that expiry: the matching future, or Deribit's synthetic
  forward / index when no future lists. We price with Black-76 on it and no discounting (r = 0),
  as Deribit does.
* Every option expires at 08:00 UTC; time to expiry is ACT/365 in seconds.
* Greeks as Deribit shows them: delta = N(d1) (forward delta, not premium-adjusted), gamma per
  USD, vega in USD per 1 vol point, theta in USD per calendar day.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from entasis.domain import utc_timestamp
from entasis.options.black import FloatArray, as_call_flag, black_greeks

if TYPE_CHECKING:
    import pandas as pd

EXPIRY_HOUR_UTC = 8
SECONDS_PER_YEAR = 365.0 * 86400.0
_INSTRUMENT = re.compile(
    r"^(?P<und>[A-Z0-9_]+)-(?P<day>\d{1,2})(?P<mon>[A-Z]{3})(?P<yy>\d{2})-(?P<strike>\d+(?:D\d+)?)-(?P<kind>[CP])$"
)
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])}


def parse_instrument(name: str) -> dict[str, Any]:
    """'BTC-13MAR26-61000-C' -> underlying, expiry (08:00 UTC), strike, kind."""
    m = _INSTRUMENT.match(name.strip().upper())
    if not m or m.group("mon") not in _MONTHS:
        raise ValueError(f"not a Deribit option instrument name: {name!r} (expected like 'BTC-13MAR26-61000-C')")
    expiry = datetime(2000 + int(m.group("yy")), _MONTHS[m.group("mon")], int(m.group("day")), EXPIRY_HOUR_UTC,
                      tzinfo=UTC)
    return {
        "underlying": m.group("und").split("_")[0],
        "expiry": expiry,
        "strike": float(m.group("strike").replace("D", ".")),
        "kind": "call" if m.group("kind") == "C" else "put",
    }


def epoch_seconds(ts: Any) -> FloatArray:
    """Seconds since 1970 of tz-aware timestamps (scalar, array or Series); naive ones are refused."""
    import pandas as pd

    ser = ts if isinstance(ts, pd.Series) else pd.Series(np.atleast_1d(ts))
    ser = pd.to_datetime(ser)
    if not isinstance(ser.dtype, pd.DatetimeTZDtype):
        raise ValueError("timestamps must be timezone-aware (UTC)")
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    return np.asarray((ser.dt.tz_convert("UTC") - epoch).dt.total_seconds().to_numpy(), dtype=float)


def year_fraction(snapshot_ts: Any, expiry: Any) -> FloatArray:
    """ACT/365 years from snapshot to expiry, to the second; both must be tz-aware."""
    return (epoch_seconds(expiry) - epoch_seconds(snapshot_ts)) / SECONDS_PER_YEAR


def coin_to_usd(price_coin: ArrayLike, underlying_price: ArrayLike) -> FloatArray:
    """Inverse option premium in coin -> USD at the forward it is quoted against."""
    return np.asarray(np.asarray(price_coin, float) * np.asarray(underlying_price, float), dtype=float)


def usd_to_coin(price_usd: ArrayLike, underlying_price: ArrayLike) -> FloatArray:
    return np.asarray(np.asarray(price_usd, float) / np.asarray(underlying_price, float), dtype=float)


def deribit_greeks(
    F: ArrayLike, K: ArrayLike, T: ArrayLike, sigma: ArrayLike, is_call: ArrayLike
) -> dict[str, FloatArray]:
    """Greeks in Deribit's display units (see the module docstring), plus the coin mark price."""
    g = black_greeks(F, K, T, sigma, as_call_flag(is_call))
    F_ = np.asarray(F, dtype=float)
    return {
        "mark_price": g.price / F_,
        "delta": g.delta,
        "gamma": g.gamma,
        "vega": g.vega / 100.0,
        "theta": g.theta / 365.0,
    }


def infer_snapshot_ts(quotes: pd.DataFrame) -> pd.Timestamp:
    """When a Deribit chain was taken, from its own Greeks, for files that did not store it.

    Deribit's delta gives d1 = N^-1(call delta) and its vega (USD per vol point) equals
    F phi(d1) sqrt(T) / 100, so each option tells its T; the median over the chain is the
    snapshot time (to a minute or so), rounded to the second.
    """
    import pandas as pd
    from scipy import special

    need = ["expiry", "kind", "delta", "vega", "underlying_price"]
    miss = [c for c in need if c not in quotes.columns]
    if miss:
        raise ValueError(f"infer_snapshot_ts: quotes lack column(s) {miss}")
    call = as_call_flag(quotes["kind"].to_numpy())
    delta = quotes["delta"].to_numpy(float)
    call_delta = np.where(call, delta, delta + 1.0)
    ok = (call_delta > 0.02) & (call_delta < 0.98) & (quotes["vega"].to_numpy(float) > 0)
    if ok.sum() < 3:
        raise ValueError("infer_snapshot_ts: fewer than 3 options with usable delta and vega")
    d1 = special.ndtri(call_delta[ok])
    pdf = np.exp(-0.5 * d1 * d1) / np.sqrt(2 * np.pi)
    sqrt_t = 100.0 * quotes["vega"].to_numpy(float)[ok] / (quotes["underlying_price"].to_numpy(float)[ok] * pdf)
    snap_s = epoch_seconds(pd.to_datetime(quotes["expiry"], utc=True))[ok] - sqrt_t**2 * SECONDS_PER_YEAR
    return pd.Timestamp(float(np.median(snap_s)), unit="s", tz="UTC").round("s")


def read_chain_csv(path: str | Path, *, snapshot_ts: Any = None, currency: str | None = None) -> pd.DataFrame:
    """A Deribit option-chain CSV (get_book_summary / ticker fields) as market.option_quotes rows.

    Expects instrument_name, strike, expiration_timestamp (ms), mark_price, best_bid_price,
    best_ask_price, underlying_price, mark_iv, open_interest, delta, gamma, theta, vega
    (``type`` and ``currency`` optional: taken from the name). Deribit sends 0 for a missing
    bid or ask; those become NaN. ``snapshot_ts``: a column of that name, else this argument,
    else inferred from the Greeks (:func:`infer_snapshot_ts`).
    """
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"option chain CSV not found: {p}")
    raw = pd.read_csv(p)
    need = ["instrument_name", "mark_price", "underlying_price", "mark_iv"]
    miss = [c for c in need if c not in raw.columns]
    if miss:
        raise ValueError(f"{p}: not a Deribit chain CSV, missing column(s) {miss}")
    parsed = pd.DataFrame([parse_instrument(str(n)) for n in raw["instrument_name"]])
    out = pd.DataFrame({
        "exchange": "deribit",
        "instrument": raw["instrument_name"].astype(str),
        "underlying": parsed["underlying"],
        "expiry": (pd.to_datetime(raw["expiration_timestamp"], unit="ms", utc=True)
                   if "expiration_timestamp" in raw.columns else pd.to_datetime(parsed["expiry"], utc=True)),
        "strike": raw["strike"].astype(float) if "strike" in raw.columns else parsed["strike"],
        "kind": raw["type"].str.lower() if "type" in raw.columns else parsed["kind"],
    })
    for src, dst in (("best_bid_price", "bid"), ("best_ask_price", "ask")):
        vals = raw[src].astype(float) if src in raw.columns else pd.Series(np.nan, index=raw.index)
        out[dst] = vals.where(vals > 0)
    for c in ("mark_price", "mark_iv", "delta", "gamma", "vega", "theta", "underlying_price", "open_interest"):
        out[c] = raw[c].astype(float) if c in raw.columns else np.nan
    if currency is not None:
        out = out[out["underlying"] == currency.upper()].reset_index(drop=True)
        if out.empty:
            raise ValueError(f"{p}: no {currency.upper()} options in the file")
    if "snapshot_ts" in raw.columns:
        ts = pd.to_datetime(raw.loc[out.index, "snapshot_ts"], utc=True).to_numpy()
        out.insert(2, "snapshot_ts", pd.to_datetime(ts, utc=True))
    else:
        ts_one = utc_timestamp(snapshot_ts if snapshot_ts is not None else infer_snapshot_ts(out), "snapshot_ts")
        out.insert(2, "snapshot_ts", ts_one)
    return out
