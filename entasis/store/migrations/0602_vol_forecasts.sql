-- Volatility forecast published beside every prediction (entasis.publish.volatility; docs/volatility.md).
--
-- One row per (asset, horizon, as_of): the same key as a prediction without its model_version, because
-- the vol forecast does not depend on which direction model is serving. entasis_reader reads it through
-- 0601's default privileges (granted explicitly below too, for a role created by hand later).

CREATE TABLE ml.vol_forecasts (
    asset           text NOT NULL,
    horizon         integer NOT NULL CHECK (horizon > 0),
    as_of           timestamptz NOT NULL,
    model           text NOT NULL,
    vol_annualized  double precision NOT NULL CHECK (vol_annualized > 0),
    vol_horizon     double precision NOT NULL CHECK (vol_horizon > 0),
    ref_price       double precision NOT NULL CHECK (ref_price > 0),
    expected_move   double precision NOT NULL CHECK (expected_move >= 0),
    price_low_1sd   double precision NOT NULL,
    price_high_1sd  double precision NOT NULL,
    bar_ts          timestamptz NOT NULL,
    n_train         integer NOT NULL,
    published_at    timestamptz NOT NULL,
    realized_vol    double precision,
    PRIMARY KEY (asset, horizon, as_of)
);

COMMENT ON TABLE ml.vol_forecasts IS
    'Forecast of the annualized volatility of the next horizon days per (asset, horizon, as_of), '
    'with the ±1 sigma expected move in price; see docs/volatility.md.';
COMMENT ON COLUMN ml.vol_forecasts.vol_annualized IS
    'Forecast sd of the next horizon daily log returns x sqrt(365) (the y_vol label''s definition).';
COMMENT ON COLUMN ml.vol_forecasts.vol_horizon IS 'vol_annualized x sqrt(horizon / 365): sd of the horizon-day log return.';
COMMENT ON COLUMN ml.vol_forecasts.ref_price IS 'Close of the daily bar the forecast was made at (bar_ts = its open).';
COMMENT ON COLUMN ml.vol_forecasts.expected_move IS 'ref_price x vol_horizon: the ±1 sigma move in price.';
COMMENT ON COLUMN ml.vol_forecasts.price_low_1sd IS 'ref_price x exp(-vol_horizon).';
COMMENT ON COLUMN ml.vol_forecasts.price_high_1sd IS 'ref_price x exp(+vol_horizon).';
COMMENT ON COLUMN ml.vol_forecasts.realized_vol IS 'Realized annualized vol over the window, once it has closed.';

CREATE VIEW ml.predictions_vol AS
SELECT p.*,
       v.model AS vol_model,
       v.vol_annualized,
       v.vol_horizon,
       v.ref_price,
       v.expected_move,
       v.price_low_1sd,
       v.price_high_1sd,
       v.realized_vol
FROM ml.predictions p
LEFT JOIN ml.vol_forecasts v USING (asset, horizon, as_of);

COMMENT ON VIEW ml.predictions_vol IS 'ml.predictions with the volatility forecast of the same asset, horizon and as_of.';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'entasis_reader') THEN
        GRANT SELECT ON ml.vol_forecasts, ml.predictions_vol TO entasis_reader;
    END IF;
END
$$;
