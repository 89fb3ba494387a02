-- ml.model_status reads the one live-accuracy aggregation, ml.live_scores (migration 0506), instead of
-- averaging ml.predictions itself, and shows the live log-loss beside the live accuracy. The window is
-- unchanged in meaning: the 30 target days up to the latest reconciled target date (live_window_end),
-- anchored on the data, not the wall clock. Columns as in 0600, plus live_log_loss_30d at the end.
CREATE OR REPLACE VIEW ml.model_status AS
WITH keys AS (
    SELECT DISTINCT asset, horizon FROM ml.predictions
    UNION
    SELECT asset, horizon FROM ml.champions
),
pred AS (
    SELECT asset, horizon,
           count(*) AS n_predictions,
           count(correct) AS n_reconciled,
           max(published_at) AS last_published,
           max(as_of) AS last_as_of,
           max(target_date) FILTER (WHERE correct IS NOT NULL AND actual_class IS NOT NULL) AS live_window_end
    FROM ml.predictions
    GROUP BY asset, horizon
)
SELECT k.asset,
       k.horizon,
       c.asset AS champion_scope,
       c.model_name,
       c.version AS champion_version,
       c.run_id,
       c.trained_at,
       c.promoted_at,
       c.unproven,
       c.test_accuracy,
       c.best_baseline,
       c.best_baseline_accuracy,
       c.beats_baseline,
       l.accuracy AS live_accuracy_30d,
       coalesce(l.n, 0)::bigint AS live_reconciled_30d,
       p.live_window_end,
       coalesce(p.n_predictions, 0) AS n_predictions,
       coalesce(p.n_reconciled, 0) AS n_reconciled,
       p.last_as_of,
       p.last_published,
       l.log_loss AS live_log_loss_30d
FROM keys k
LEFT JOIN LATERAL (
    SELECT * FROM ml.champions c
    WHERE c.horizon = k.horizon AND c.asset IN (k.asset, 'pooled')
    ORDER BY (c.asset = 'pooled')
    LIMIT 1
) c ON true
LEFT JOIN pred p ON p.asset = k.asset AND p.horizon = k.horizon
LEFT JOIN LATERAL ml.live_scores(p.live_window_end, 30, k.asset, k.horizon) l ON true;

COMMENT ON VIEW ml.model_status IS
    'Per asset and horizon: serving champion (asset-specific, else pooled), baseline comparison, '
    'rolling 30-day live accuracy and log-loss (ml.live_scores, window ending on the day of live_window_end), '
    'prediction counts.';
