-- Serving: the volatility forecasts published beside predictions (ml.vol_forecasts, migration 0602) also
-- move the API's cache generation, so a forecast written after its prediction is never hidden by a
-- cached answer. A no-op on a store without that table.
DO $$
BEGIN
    IF to_regclass('ml.vol_forecasts') IS NOT NULL THEN
        CREATE TRIGGER vol_forecasts_bump_serving_generation
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ml.vol_forecasts
            FOR EACH STATEMENT EXECUTE FUNCTION ml.bump_serving_generation();
    END IF;
END
$$;
