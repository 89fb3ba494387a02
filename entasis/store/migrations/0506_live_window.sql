-- The one live-accuracy aggregation (entasis.backtest.evaluation.live_scores): rollback, the monitor and
-- ml.model_status all call ml.live_scores, so they count the same rows the same way.
--
-- 1. ml.live_outcomes' day is now the UTC day of target_date whatever the session's TimeZone (0505 used
--    the session's, so a reader in another time zone could see different day buckets). Same columns.
CREATE OR REPLACE VIEW ml.live_outcomes AS
SELECT model_version,
       asset,
       horizon,
       date_trunc('day', target_date, 'UTC') AS day,
       count(*)::bigint AS n,
       count(*) FILTER (WHERE correct)::bigint AS n_correct,
       sum(-ln(greatest(CASE actual_class WHEN 0 THEN p_bearish WHEN 1 THEN p_neutral ELSE p_bullish END,
                        1e-12)))::double precision AS sum_log_loss
FROM ml.predictions
WHERE correct IS NOT NULL AND actual_class IS NOT NULL
GROUP BY model_version, asset, horizon, date_trunc('day', target_date, 'UTC');

-- 2. The window: the reconciled predictions whose target UTC day d satisfies
--    E - p_window_days < d <= E, E = the UTC day of p_window_end (whole days, both callers' edges alike:
--    a target exactly p_window_days before the end is out, one on the end day is in). Optional filters
--    (NULL = all). One row always: n = 0 and accuracy / log_loss NULL when nothing was reconciled in it
--    (never 0). p_window_days < 1 or a NULL end gives the empty window.
CREATE FUNCTION ml.live_scores(p_window_end timestamptz, p_window_days integer, p_asset text DEFAULT NULL,
                               p_horizon integer DEFAULT NULL, p_model_version text DEFAULT NULL)
RETURNS TABLE (n bigint, n_correct bigint, accuracy double precision, log_loss double precision)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(o.n), 0)::bigint,
           coalesce(sum(o.n_correct), 0)::bigint,
           (sum(o.n_correct)::double precision / nullif(sum(o.n), 0)::double precision),
           (sum(o.sum_log_loss) / nullif(sum(o.n), 0)::double precision)
    FROM ml.live_outcomes o
    WHERE o.day <= date_trunc('day', p_window_end, 'UTC')
      AND o.day > date_trunc('day', p_window_end, 'UTC') - make_interval(days => p_window_days)
      AND (p_asset IS NULL OR o.asset = p_asset)
      AND (p_horizon IS NULL OR o.horizon = p_horizon)
      AND (p_model_version IS NULL OR o.model_version = p_model_version)
$$;

COMMENT ON FUNCTION ml.live_scores(timestamptz, integer, text, integer, text) IS
    'Live accuracy and log-loss of reconciled predictions with target UTC day in (day(end) - days, day(end)].';
