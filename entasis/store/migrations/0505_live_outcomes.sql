-- The one live-accuracy definition (entasis.backtest.evaluation): reconciled published predictions per
-- model version, asset, horizon and target day. Rollback, the monitor and ml.model_status aggregate
-- these rows over their windows, so "live accuracy" means the same thing everywhere:
-- accuracy = sum(n_correct) / sum(n) over the rows whose day lies in the window; log-loss likewise
-- from sum_log_loss (mean of -ln p[actual class]).
CREATE VIEW ml.live_outcomes AS
SELECT model_version,
       asset,
       horizon,
       date_trunc('day', target_date) AS day,
       count(*)::bigint AS n,
       count(*) FILTER (WHERE correct)::bigint AS n_correct,
       sum(-ln(greatest(CASE actual_class WHEN 0 THEN p_bearish WHEN 1 THEN p_neutral ELSE p_bullish END,
                        1e-12)))::double precision AS sum_log_loss
FROM ml.predictions
WHERE correct IS NOT NULL AND actual_class IS NOT NULL
GROUP BY model_version, asset, horizon, date_trunc('day', target_date);

COMMENT ON VIEW ml.live_outcomes IS
    'Reconciled predictions per model_version, asset, horizon and target day: n, n_correct, sum_log_loss.';
