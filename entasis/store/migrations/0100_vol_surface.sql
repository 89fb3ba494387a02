-- Options stage: fitted smiles per expiry and surface features + Heston parameters per snapshot.
-- Vols are annualised fractions (0.55 = 55%); t_years is ACT/365 from snapshot to expiry.
CREATE TABLE IF NOT EXISTS features.vol_surface (
    underlying     text NOT NULL,
    snapshot_ts    timestamptz NOT NULL,
    expiry         timestamptz NOT NULL,
    t_years        double precision NOT NULL,
    forward        double precision NOT NULL,
    n_quotes       integer NOT NULL,
    k_min          double precision,            -- quoted log-moneyness range ln(K/F)
    k_max          double precision,
    atm_iv         double precision,            -- smile at k = 0 (ATM forward)
    iv_25c         double precision,            -- smile where Black forward delta N(d1) = 0.25
    iv_25p         double precision,            -- ... and = 0.75 (put delta -0.25)
    rr25           double precision,            -- iv_25c - iv_25p
    bf25           double precision,            -- (iv_25c + iv_25p)/2 - atm_iv
    svi_a          double precision,            -- raw SVI: w(k) = a + b(rho(k-m) + sqrt((k-m)^2 + sigma^2))
    svi_b          double precision,
    svi_rho        double precision,
    svi_m          double precision,
    svi_sigma      double precision,
    fit_rmse       double precision,            -- SVI fit error in vol
    arb_free       boolean,                     -- Gatheral g(k) >= 0 over the quoted range
    heston_atm_iv  double precision,            -- the snapshot's Heston fit at this expiry, ATM
    PRIMARY KEY (underlying, snapshot_ts, expiry)
);

CREATE TABLE IF NOT EXISTS features.option_features (
    underlying   text NOT NULL,
    snapshot_ts  timestamptz NOT NULL,
    atm_iv_7d    double precision,
    atm_iv_30d   double precision,
    rr25_30d     double precision,
    bf25_30d     double precision,
    term_slope   double precision,              -- atm_iv_30d - atm_iv_7d
    pc_oi_ratio  double precision,              -- put open interest / call open interest
    v0           double precision,              -- Heston, calibrated to this snapshot
    kappa        double precision,
    theta        double precision,
    sigma        double precision,
    rho          double precision,
    feller_ok    boolean,                       -- 2 kappa theta > sigma^2
    calib_rmse   double precision,              -- Heston implied-vol rmse
    PRIMARY KEY (underlying, snapshot_ts)
);
