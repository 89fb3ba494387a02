"""Per-expiry smiles and per-snapshot surface features from option quotes.

Input rows are shaped like ``market.option_quotes``. For each (underlying, snapshot, expiry):

* the forward is the median ``underlying_price`` of that expiry (Deribit quotes each option
  against its expiry's future or synthetic forward);
* each strike contributes one implied vol from its out-of-the-money side (put below the forward,
  call at or above; the other side when that one is missing): ``mark_iv / 100`` when present,
  else the implied vol of ``mark_price`` (coin x underlying for Deribit's inverse options);
* a raw SVI smile is fitted (:mod:`entasis.options.svi`) when at least 5 strikes have a vol.

From a smile: ATM vol at k = ln(K/F) = 0, and the 25-delta call and put vols where the Black
forward delta N(d1) (Deribit's delta) is 0.25 and -0.25. A 25-delta strike may lie at most
``MAX_EXTRAPOLATION_SD`` ATM standard deviations beyond the quoted strikes, else it is NaN:
a smile is not evidence far past its last quote.

Across expiries, quantities at 7 and 30 calendar days are interpolated linearly in total
variance (vol² x T) between the nearest expiries on either side that have them; no
extrapolation in time. Features of one snapshot use that snapshot's quotes only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import special

from entasis.options.black import FloatArray
from entasis.options.deribit import SECONDS_PER_YEAR, year_fraction
from entasis.options.iv import implied_vol
from entasis.options.svi import butterfly_density_ok, fit_svi, svi_total_variance

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_COLUMNS = ("exchange", "snapshot_ts", "underlying", "expiry", "strike", "kind", "underlying_price")
FEATURE_COLUMNS = ["underlying", "snapshot_ts", "atm_iv_7d", "atm_iv_30d", "rr25_30d", "bf25_30d", "term_slope",
                   "pc_oi_ratio"]
SMILE_COLUMNS = ["underlying", "snapshot_ts", "expiry", "t_years", "forward", "n_quotes", "k_min", "k_max",
                 "atm_iv", "iv_25c", "iv_25p", "rr25", "bf25", "svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma",
                 "fit_rmse", "arb_free"]
COIN_QUOTED_EXCHANGES = frozenset({"deribit"})   # inverse options: premiums in the coin
MIN_EXPIRY_DAYS = 1.0          # shorter expiries are dominated by noise in their marks
MAX_EXTRAPOLATION_SD = 0.5     # how far past the last strike a 25-delta point may sit, in ATM std devs
MAX_FIT_RMSE = 0.05            # a smile that misses its quotes by more than 5 vol points is not used
TENORS_DAYS = (7.0, 30.0)
_DELTA_25_D1 = float(special.ndtri(0.25))   # call: N(d1) = 0.25  ->  d1 = -0.674


def _check(quotes: pd.DataFrame) -> None:
    import pandas as pd

    if not isinstance(quotes, pd.DataFrame):
        raise TypeError(f"quotes must be a pandas DataFrame, got {type(quotes).__name__}")
    miss = [c for c in REQUIRED_COLUMNS if c not in quotes.columns]
    if "mark_iv" not in quotes.columns and "mark_price" not in quotes.columns:
        miss.append("mark_iv or mark_price")
    if miss:
        raise ValueError(f"option quotes lack column(s) {miss}")
    if quotes.empty:
        return
    for c in ("snapshot_ts", "expiry"):
        if not isinstance(quotes[c].dtype, pd.DatetimeTZDtype):
            raise ValueError(f"option quotes column {c!r} must be timezone-aware (UTC), got {quotes[c].dtype}")
    bad_kind = ~quotes["kind"].isin(["call", "put"])
    if bad_kind.any():
        bad = quotes.loc[bad_kind, "kind"].iloc[0]
        raise ValueError(f"option quotes column 'kind' must be 'call' or 'put'; got {bad!r}")
    multi = quotes.groupby(["underlying", "snapshot_ts"])["exchange"].nunique()
    if (multi > 1).any():
        u, ts = multi[multi > 1].index[0]
        raise ValueError(f"quotes for {u} at {ts} come from several exchanges; pass one exchange's quotes")


def prepare_quotes(quotes: pd.DataFrame) -> pd.DataFrame:
    """One implied vol per (underlying, snapshot_ts, expiry, strike), with t, forward and k.

    Columns: underlying, snapshot_ts, expiry, t_years, forward, strike, k, iv. Expiries under
    ``MIN_EXPIRY_DAYS`` and rows without a usable vol are dropped.
    """
    import pandas as pd

    _check(quotes)
    cols = ["exchange", "underlying", "snapshot_ts", "expiry", "strike", "kind", "underlying_price",
            "mark_iv", "mark_price"]
    q = quotes.reindex(columns=cols).copy()
    q["snapshot_ts"] = q["snapshot_ts"].dt.tz_convert("UTC")
    q["expiry"] = q["expiry"].dt.tz_convert("UTC")
    q["t_years"] = year_fraction(q["snapshot_ts"], q["expiry"])
    q = q[q["t_years"] * SECONDS_PER_YEAR >= MIN_EXPIRY_DAYS * 86400.0]
    q = q[(q["strike"] > 0) & (q["underlying_price"] > 0)]
    if q.empty:
        return _empty_prepared()
    q["forward"] = q.groupby(["underlying", "snapshot_ts", "expiry"])["underlying_price"].transform("median")
    iv = pd.to_numeric(q["mark_iv"], errors="coerce").to_numpy(float) / 100.0
    need = ~(np.isfinite(iv) & (iv > 0))
    if need.any():
        price = pd.to_numeric(q["mark_price"], errors="coerce").to_numpy(float)
        coin = q["exchange"].isin(COIN_QUOTED_EXCHANGES).to_numpy()
        usd = np.where(coin, price * q["underlying_price"].to_numpy(float), price)
        sub = np.flatnonzero(need)
        iv[sub] = implied_vol(usd[sub], q["underlying_price"].to_numpy(float)[sub], q["strike"].to_numpy(float)[sub],
                              q["t_years"].to_numpy(float)[sub], q["kind"].to_numpy()[sub] == "call")
    q["iv"] = iv
    q = q[np.isfinite(q["iv"]) & (q["iv"] > 0)]
    # out-of-the-money side first, then the other side as a fallback, one row per strike
    q["otm"] = np.where(q["strike"] >= q["forward"], q["kind"] == "call", q["kind"] == "put")
    q = q.sort_values(["underlying", "snapshot_ts", "expiry", "strike", "otm"],
                      ascending=[True, True, True, True, False])
    q = q.drop_duplicates(["underlying", "snapshot_ts", "expiry", "strike"], keep="first")
    q["k"] = np.log(q["strike"] / q["forward"])
    return q[["underlying", "snapshot_ts", "expiry", "t_years", "forward", "strike", "k", "iv"]].reset_index(drop=True)


def _empty_prepared() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({
        "underlying": pd.Series(dtype=object), "snapshot_ts": pd.Series(dtype="datetime64[ns, UTC]"),
        "expiry": pd.Series(dtype="datetime64[ns, UTC]"), "t_years": pd.Series(dtype=float),
        "forward": pd.Series(dtype=float), "strike": pd.Series(dtype=float), "k": pd.Series(dtype=float),
        "iv": pd.Series(dtype=float),
    })


def fit_smiles(quotes: pd.DataFrame, *, prepared: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (underlying, snapshot_ts, expiry): SVI fit, ATM and 25-delta vols (``SMILE_COLUMNS``)."""
    import pandas as pd

    q = prepare_quotes(quotes) if prepared is None else prepared
    if q.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in SMILE_COLUMNS}).astype(
            {"underlying": object, "snapshot_ts": "datetime64[ns, UTC]", "expiry": "datetime64[ns, UTC]",
             "n_quotes": "int64", "arb_free": "boolean"})
    keys = ["underlying", "snapshot_ts", "expiry"]
    gid = q.groupby(keys, sort=True).ngroup().to_numpy()
    n_groups = int(gid.max()) + 1
    pos = q.groupby(gid).cumcount().to_numpy()
    width = int(pos.max()) + 1
    k = np.zeros((n_groups, width))
    iv = np.zeros((n_groups, width))
    mask = np.zeros((n_groups, width), dtype=bool)
    k[gid, pos] = q["k"].to_numpy(float)
    iv[gid, pos] = q["iv"].to_numpy(float)
    mask[gid, pos] = True
    head = q.groupby(gid).first()
    t = head["t_years"].to_numpy(float)
    fit = fit_svi(k, iv, t, mask)
    usable = np.isfinite(fit.rmse) & (fit.rmse <= MAX_FIT_RMSE)
    params = np.where(usable[:, None], fit.params, np.nan)

    k_min = np.where(mask, k, np.inf).min(axis=1)
    k_max = np.where(mask, k, -np.inf).max(axis=1)
    w_atm = svi_total_variance(params, np.zeros(n_groups))
    atm = np.sqrt(np.maximum(w_atm, 0.0) / t)
    iv_c, iv_p = _delta25_vols(params, t, w_atm, k_min, k_max)
    grid = np.linspace(k_min, k_max, 41).T
    arb_free = np.where(usable, butterfly_density_ok(np.nan_to_num(params, nan=1.0), grid), False)

    out = pd.DataFrame({
        "underlying": head["underlying"].to_numpy(),
        "snapshot_ts": head["snapshot_ts"].to_numpy(),
        "expiry": head["expiry"].to_numpy(),
        "t_years": t,
        "forward": head["forward"].to_numpy(float),
        "n_quotes": fit.n,
        "k_min": k_min,
        "k_max": k_max,
        "atm_iv": atm,
        "iv_25c": iv_c,
        "iv_25p": iv_p,
        "rr25": iv_c - iv_p,
        "bf25": 0.5 * (iv_c + iv_p) - atm,
        "svi_a": params[:, 0], "svi_b": params[:, 1], "svi_rho": params[:, 2], "svi_m": params[:, 3],
        "svi_sigma": params[:, 4],
        "fit_rmse": fit.rmse,
        "arb_free": pd.array(np.where(usable, arb_free, pd.NA), dtype="boolean"),
    })
    out["snapshot_ts"] = pd.to_datetime(out["snapshot_ts"], utc=True)
    out["expiry"] = pd.to_datetime(out["expiry"], utc=True)
    return out[SMILE_COLUMNS]


def _delta25_vols(params: FloatArray, t: FloatArray, w_atm: FloatArray, k_min: FloatArray, k_max: FloatArray
                  ) -> tuple[FloatArray, FloatArray]:
    """Vols at the 25-delta call and put strikes, by bisection on k (vectorised over smiles)."""
    sd = np.sqrt(np.maximum(w_atm, 1e-12))
    out = []
    for target, lo, hi in ((_DELTA_25_D1, np.zeros_like(sd), 8.0 * sd), (-_DELTA_25_D1, -8.0 * sd, np.zeros_like(sd))):
        def f(kk: FloatArray, target: float = target) -> FloatArray:
            w = np.maximum(svi_total_variance(params, kk), 1e-300)
            return -kk / np.sqrt(w) + 0.5 * np.sqrt(w) - target     # d1(k) - target, decreasing in k

        f_lo, f_hi = f(lo), f(hi)
        bracketed = (f_lo > 0) & (f_hi < 0)
        a, b = lo.copy(), hi.copy()
        for _ in range(60):
            mid = 0.5 * (a + b)
            fm = f(mid)
            a = np.where(fm > 0, mid, a)
            b = np.where(fm > 0, b, mid)
        k25 = 0.5 * (a + b)
        inside = (k25 >= k_min - MAX_EXTRAPOLATION_SD * sd) & (k25 <= k_max + MAX_EXTRAPOLATION_SD * sd)
        vol = np.sqrt(np.maximum(svi_total_variance(params, k25), 0.0) / t)
        out.append(np.where(bracketed & inside & np.isfinite(params).all(axis=1), vol, np.nan))
    return out[0], out[1]


def interpolate_total_variance(t: FloatArray, vol: FloatArray, t_target: float) -> float:
    """Vol at ``t_target`` from linear interpolation of vol² t between the nearest valid expiries."""
    ok = np.isfinite(vol) & np.isfinite(t) & (t > 0)
    if not ok.any():
        return float("nan")
    tt, vv = t[ok], vol[ok]
    order = np.argsort(tt)
    tt, vv = tt[order], vv[order]
    if t_target < tt[0] * (1 - 1e-9) or t_target > tt[-1] * (1 + 1e-9):
        return float("nan")
    w = float(np.interp(t_target, tt, vv * vv * tt))
    return float(np.sqrt(w / t_target)) if w >= 0 else float("nan")


def features_from_smiles(smiles: pd.DataFrame, oi: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-snapshot features (``FEATURE_COLUMNS``) from :func:`fit_smiles` rows and put/call OI sums."""
    import pandas as pd

    rows = []
    t7, t30 = (d * 86400.0 / SECONDS_PER_YEAR for d in TENORS_DAYS)
    for (und, ts), g in smiles.groupby(["underlying", "snapshot_ts"], sort=True):
        t = g["t_years"].to_numpy(float)
        a7 = interpolate_total_variance(t, g["atm_iv"].to_numpy(float), t7)
        a30 = interpolate_total_variance(t, g["atm_iv"].to_numpy(float), t30)
        c30 = interpolate_total_variance(t, g["iv_25c"].to_numpy(float), t30)
        p30 = interpolate_total_variance(t, g["iv_25p"].to_numpy(float), t30)
        rows.append({"underlying": und, "snapshot_ts": ts, "atm_iv_7d": a7, "atm_iv_30d": a30,
                     "rr25_30d": c30 - p30, "bf25_30d": 0.5 * (c30 + p30) - a30, "term_slope": a30 - a7})
    feats = pd.DataFrame(rows, columns=FEATURE_COLUMNS[:-1])
    if oi is not None and not oi.empty:
        feats = feats.merge(oi, on=["underlying", "snapshot_ts"], how="outer")
    else:
        feats["pc_oi_ratio"] = np.nan
    feats["snapshot_ts"] = pd.to_datetime(feats["snapshot_ts"], utc=True)
    return feats.sort_values(["underlying", "snapshot_ts"]).reset_index(drop=True)[FEATURE_COLUMNS]


def put_call_oi_ratio(quotes: pd.DataFrame) -> pd.DataFrame:
    """Put open interest over call open interest per (underlying, snapshot_ts), all expiries."""
    import pandas as pd

    if "open_interest" not in quotes.columns:
        keys = quotes[["underlying", "snapshot_ts"]].drop_duplicates()
        return keys.assign(pc_oi_ratio=np.nan)
    oi = pd.to_numeric(quotes["open_interest"], errors="coerce")
    frame = pd.DataFrame({"underlying": quotes["underlying"], "snapshot_ts": quotes["snapshot_ts"].dt.tz_convert("UTC"),
                          "put": oi.where(quotes["kind"] == "put"), "call": oi.where(quotes["kind"] == "call")})
    sums = frame.groupby(["underlying", "snapshot_ts"], sort=True)[["put", "call"]].sum(min_count=1)
    ratio = (sums["put"] / sums["call"].where(sums["call"] > 0)).rename("pc_oi_ratio")
    return ratio.reset_index()


def snapshot_features(quotes: pd.DataFrame) -> pd.DataFrame:
    """Surface features per (underlying, snapshot_ts); pure, vectorised, NaN where not computable.

    Columns: underlying, snapshot_ts, atm_iv_7d, atm_iv_30d (ATM-forward implied vols at 7 and 30
    calendar days, fractions, interpolated in total variance), rr25_30d (25-delta call vol minus
    25-delta put vol), bf25_30d (their mean minus ATM vol), term_slope (atm_iv_30d - atm_iv_7d,
    vol per 23 days: positive in contango) and pc_oi_ratio (put over call open interest, all
    expiries). A snapshot whose expiries do not bracket 7 (30) days gets NaN there.
    """
    import pandas as pd

    _check(quotes)
    if quotes.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in FEATURE_COLUMNS}).astype(
            {"underlying": object, "snapshot_ts": "datetime64[ns, UTC]"})
    smiles = fit_smiles(quotes)
    oi = put_call_oi_ratio(quotes)
    # snapshots with quotes but no usable smile still get a row (NaN vols, their OI ratio)
    return features_from_smiles(smiles, oi)


def smile_points(quotes: pd.DataFrame) -> pd.DataFrame:
    """The per-strike vols the smiles were fitted to (for plots and tables)."""
    return prepare_quotes(quotes)
