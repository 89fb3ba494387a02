-- Serving (entasis.api): what the API and dashboard read, as entasis_reader, beyond the published tables.
--
-- 1. ml.serving_state: one row whose generation goes up with every statement that writes
--    ml.predictions or ml.champions (publish, reconcile, promotion, rollback). The API keys its cache on
--    it, so an answer cached before a publish or a reconciliation is never served after it.
-- 2. ml.asset_prices: a deliberately narrow window onto market.candles (close prices only) so the
--    dashboard can draw the price under past predictions and /metrics can report data freshness. The
--    reader role still has no grant on market.* itself; the view runs with its owner's rights.
-- 3. ml.feature_drift: the monitor's population stability index per feature and run, for /metrics.

CREATE TABLE ml.serving_state (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    generation  bigint NOT NULL,
    changed_at  timestamptz NOT NULL
);
INSERT INTO ml.serving_state (id, generation, changed_at) VALUES (true, 1, now());

COMMENT ON TABLE ml.serving_state IS
    'One row: generation increases on every write to ml.predictions / ml.champions (the API cache key).';

CREATE FUNCTION ml.bump_serving_generation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, ml AS $$
BEGIN
    UPDATE ml.serving_state SET generation = generation + 1, changed_at = clock_timestamp();
    RETURN NULL;
END
$$;

CREATE TRIGGER predictions_bump_serving_generation
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ml.predictions
    FOR EACH STATEMENT EXECUTE FUNCTION ml.bump_serving_generation();
CREATE TRIGGER champions_bump_serving_generation
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ml.champions
    FOR EACH STATEMENT EXECUTE FUNCTION ml.bump_serving_generation();

CREATE VIEW ml.asset_prices AS
SELECT exchange, symbol AS asset, timeframe, ts, close
FROM market.candles;

COMMENT ON VIEW ml.asset_prices IS
    'Close prices from market.candles (bar open time ts), for the dashboard and data-freshness metrics.';

CREATE TABLE ml.feature_drift (
    as_of        timestamptz NOT NULL,
    timeframe    text NOT NULL,
    feature      text NOT NULL,
    psi          double precision,
    n_reference  integer NOT NULL,
    n_current    integer NOT NULL,
    PRIMARY KEY (as_of, timeframe, feature)
);

COMMENT ON TABLE ml.feature_drift IS
    'Population stability index per feature at each monitor run (recent window vs reference window).';

-- Objects made here are covered by 0601's default privileges when the same user migrates; granted
-- explicitly too, in case the role was created by hand after that migration ran.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'entasis_reader') THEN
        GRANT SELECT ON ml.serving_state, ml.asset_prices, ml.feature_drift TO entasis_reader;
    END IF;
END
$$;
