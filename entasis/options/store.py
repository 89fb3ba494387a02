"""Fit one snapshot's surface (smiles + Heston) and store it, idempotently.

``build_surface`` is the pure part (quotes in, tables out) shared with the CLI's ``--csv`` path;
``build_and_store_surface`` reads ``market.option_quotes`` and upserts ``features.vol_surface``
(one row per expiry) and ``features.option_features`` (one row per snapshot). Re-running it for
the same snapshot computes the same floats and the upsert skips identical rows, so the tables
stay byte-identical.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.domain import utc_timestamp
from entasis.options.heston import calibrate, heston_price
from entasis.options.iv import implied_vol
from entasis.options.surface import (
    FEATURE_COLUMNS,
    SMILE_COLUMNS,
    features_from_smiles,
    fit_smiles,
    prepare_quotes,
    put_call_oi_ratio,
)
from entasis.store.upsert import upsert_frame

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.options.heston import Calibration

log = logging.getLogger(__name__)

QUOTE_COLUMNS = ["exchange", "instrument", "snapshot_ts", "underlying", "expiry", "strike", "kind", "bid", "ask",
                 "mark_price", "mark_iv", "delta", "gamma", "vega", "theta", "underlying_price", "open_interest"]
SURFACE_TABLE = "features.vol_surface"
SURFACE_KEY = ["underlying", "snapshot_ts", "expiry"]
SURFACE_COLUMNS = [*SMILE_COLUMNS, "heston_atm_iv"]
OPTION_FEATURES_TABLE = "features.option_features"
OPTION_FEATURES_KEY = ["underlying", "snapshot_ts"]
HESTON_COLUMNS = ["v0", "kappa", "theta", "sigma", "rho", "feller_ok", "calib_rmse"]
OPTION_FEATURES_COLUMNS = [*FEATURE_COLUMNS, *HESTON_COLUMNS]


@dataclass(frozen=True)
class Surface:
    """One snapshot's fitted surface: per-expiry smiles, the feature row, the Heston fit (or None)."""

    smiles: pd.DataFrame
    features: pd.DataFrame
    calibration: Calibration | None
    points: pd.DataFrame          # the per-strike vols everything was fitted to


def build_surface(quotes: pd.DataFrame, *, calibrate_heston: bool = True) -> Surface:
    """Smiles, features and a Heston calibration for quotes of exactly one (underlying, snapshot)."""
    import pandas as pd

    keys = quotes[["underlying", "snapshot_ts"]].drop_duplicates()
    if len(keys) != 1:
        raise ValueError(f"build_surface needs quotes of one underlying and one snapshot; got {len(keys)} pairs")
    points = prepare_quotes(quotes)
    smiles = fit_smiles(quotes, prepared=points)
    feats = features_from_smiles(smiles, put_call_oi_ratio(quotes))
    if feats.empty:   # no quote survived (all expired or without a vol)
        und, ts = keys.iloc[0]
        feats = pd.DataFrame([{"underlying": und, "snapshot_ts": ts}], columns=FEATURE_COLUMNS)
        feats["snapshot_ts"] = pd.to_datetime(feats["snapshot_ts"], utc=True)
    cal = None
    heston_atm = np.full(len(smiles), np.nan)
    if calibrate_heston and len(points) >= 5:
        try:
            cal = calibrate(points["forward"], points["strike"], points["t_years"], points["iv"])
        except ValueError as e:
            log.warning("Heston calibration skipped: %s", e)
        if cal is not None and len(smiles):
            f = smiles["forward"].to_numpy(float)
            t = smiles["t_years"].to_numpy(float)
            heston_atm = implied_vol(heston_price(f, f, t, cal.params, True), f, f, t, True)
    smiles = smiles.assign(heston_atm_iv=heston_atm)[SURFACE_COLUMNS]
    heston: dict[str, Any] = dict.fromkeys(HESTON_COLUMNS, np.nan)
    if cal is not None:
        heston = {**cal.params.as_dict(), "feller_ok": cal.feller_ok, "calib_rmse": cal.rmse_iv}
    feats = feats.assign(**{k: [v] * len(feats) for k, v in heston.items()})
    feats["feller_ok"] = pd.array(feats["feller_ok"].where(feats["feller_ok"].notna(), pd.NA), dtype="boolean")
    return Surface(smiles=smiles, features=feats[OPTION_FEATURES_COLUMNS], calibration=cal, points=points)


def latest_snapshot(conn: psycopg.Connection, underlying: str, exchange: str = "deribit") -> pd.Timestamp | None:
    """The newest snapshot_ts of ``underlying`` in market.option_quotes, or None when there is none."""
    import pandas as pd

    row = conn.execute(
        "SELECT max(snapshot_ts) FROM market.option_quotes WHERE underlying = %s AND exchange = %s",
        (underlying, exchange),
    ).fetchone()
    return None if row is None or row[0] is None else pd.Timestamp(row[0]).tz_convert("UTC")


def load_quotes(conn: psycopg.Connection, underlying: str, snapshot_ts: Any = None, *,
                exchange: str = "deribit") -> pd.DataFrame:
    """market.option_quotes rows of one snapshot (the latest when ``snapshot_ts`` is None)."""
    import pandas as pd

    ts = (utc_timestamp(snapshot_ts, "snapshot_ts") if snapshot_ts is not None
          else latest_snapshot(conn, underlying, exchange))
    if ts is None:
        return pd.DataFrame(columns=QUOTE_COLUMNS)
    cols = ", ".join(QUOTE_COLUMNS)
    rows = conn.execute(
        f"SELECT {cols} FROM market.option_quotes WHERE underlying = %s AND exchange = %s AND snapshot_ts = %s "  # type: ignore[arg-type]
        "ORDER BY expiry, strike, kind",
        (underlying, exchange, ts.to_pydatetime()),
    ).fetchall()
    df = pd.DataFrame(rows, columns=QUOTE_COLUMNS)
    for c in ("snapshot_ts", "expiry"):
        df[c] = pd.to_datetime(df[c], utc=True)
    for c in QUOTE_COLUMNS[5:]:
        if c != "kind":
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def build_and_store_surface(conn: psycopg.Connection, underlying: str, snapshot_ts: Any = None, *,
                            exchange: str = "deribit", calibrate_heston: bool = True) -> int:
    """Fit and upsert one snapshot's surface; returns the number of expiries stored (0: no quotes).

    Reads market.option_quotes for ``underlying`` at ``snapshot_ts`` (the latest when None),
    upserts per-expiry rows into features.vol_surface and one row (snapshot features + Heston
    v0, kappa, theta, sigma, rho, feller_ok, calib_rmse) into features.option_features.
    An explicit ``snapshot_ts`` with no quotes is an error; no quotes at all just returns 0.
    """
    if not underlying or not isinstance(underlying, str):
        raise ValueError(f"underlying must be a currency like 'BTC', got {underlying!r}")
    quotes = load_quotes(conn, underlying, snapshot_ts, exchange=exchange)
    if quotes.empty:
        if snapshot_ts is not None:
            at = utc_timestamp(snapshot_ts, "snapshot_ts")
            raise LookupError(f"no {exchange} {underlying} option quotes at snapshot {at}")
        log.warning("no %s %s option quotes in market.option_quotes; nothing to fit", exchange, underlying)
        return 0
    return store_surface(conn, build_surface(quotes, calibrate_heston=calibrate_heston))


def store_surface(conn: psycopg.Connection, surface: Surface) -> int:
    """Upsert a fitted surface (per-expiry rows and the snapshot row); returns the expiries stored."""
    r1 = upsert_frame(conn, SURFACE_TABLE, surface.smiles, SURFACE_KEY)
    r2 = upsert_frame(conn, OPTION_FEATURES_TABLE, surface.features, OPTION_FEATURES_KEY)
    f = surface.features.iloc[0]
    log.info("%s surface at %s: %d expiries (%d rows written), snapshot row %s", f["underlying"], f["snapshot_ts"],
             len(surface.smiles), r1.written, "written" if r2.written else "unchanged")
    return len(surface.smiles)
