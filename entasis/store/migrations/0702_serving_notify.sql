-- Serving: every bump of ml.serving_state.generation also sends NOTIFY entasis_serving '<generation>'.
--
-- The API holds one LISTEN connection and keeps the generation in memory (entasis.api.generation), so a
-- cached answer costs no database round trip. The notification is part of the writer's transaction:
-- PostgreSQL delivers it only after that transaction commits (and never for one rolled back), so a
-- listener learns of a publish as soon as the new rows are visible.
CREATE OR REPLACE FUNCTION ml.bump_serving_generation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, ml AS $$
DECLARE
    g bigint;
BEGIN
    UPDATE ml.serving_state SET generation = generation + 1, changed_at = clock_timestamp()
    RETURNING generation INTO g;
    PERFORM pg_notify('entasis_serving', g::text);
    RETURN NULL;
END
$$;
