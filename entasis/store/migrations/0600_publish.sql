-- Publish stage: the champion of record per (asset, horizon), its history, and ml.model_status.
--
-- ml.champions is the registry's @champion copied into SQL (by entasis.publish.champions.record_champion,
-- called by promotion and by the publisher), so analysts can see what is serving without MLflow.
-- asset is a symbol such as 'BTC/USDT', or 'pooled' for one model shared by every asset.

CREATE TABLE ml.champions (
    asset                   text NOT NULL,
    horizon                 integer NOT NULL CHECK (horizon > 0),
    model_name              text NOT NULL,
    version                 text NOT NULL,
    run_id                  text,
    trained_at              timestamptz,
    unproven                boolean NOT NULL DEFAULT false,
    test_accuracy           double precision,
    best_baseline           text,
    best_baseline_accuracy  double precision,
    beats_baseline          boolean,
    tags                    jsonb NOT NULL DEFAULT '{}'::jsonb,
    promoted_at             timestamptz NOT NULL,
    PRIMARY KEY (asset, horizon)
);

COMMENT ON TABLE ml.champions IS
    'Current @champion per (asset, horizon); asset = ''pooled'' for a model shared by all assets.';
COMMENT ON COLUMN ml.champions.unproven IS
    'True when the model was promoted without beating the naive baselines (e.g. the first model).';
COMMENT ON COLUMN ml.champions.beats_baseline IS
    'test_accuracy > best_baseline_accuracy on the out-of-sample walk-forward windows.';

CREATE TABLE ml.champion_history (
    asset        text NOT NULL,
    horizon      integer NOT NULL,
    model_name   text NOT NULL,
    version      text NOT NULL,
    run_id       text,
    unproven     boolean NOT NULL,
    promoted_at  timestamptz NOT NULL,
    PRIMARY KEY (asset, horizon, model_name, version, promoted_at)
);

COMMENT ON TABLE ml.champion_history IS 'Every champion change recorded in ml.champions, oldest first.';

-- Reconciliation scans predictions still waiting for their outcome.
CREATE INDEX predictions_unreconciled_idx ON ml.predictions (target_date) WHERE actual_class IS NULL;
CREATE INDEX predictions_asset_target_idx ON ml.predictions (asset, horizon, target_date);

-- Per asset and horizon: the champion serving it (asset-specific, else pooled), its registry facts,
-- and how the published predictions have done. Live accuracy covers the reconciled predictions whose
-- target date lies in the 30 days up to the latest reconciled one (live_window_end): anchored on the
-- data rather than the wall clock, so the view gives the same answer whenever it is read.
CREATE VIEW ml.model_status AS
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
           max(target_date) FILTER (WHERE correct IS NOT NULL) AS live_window_end
    FROM ml.predictions
    GROUP BY asset, horizon
),
live AS (
    SELECT p.asset, p.horizon,
           avg(CASE WHEN p.correct THEN 1.0 ELSE 0.0 END)::double precision AS live_accuracy_30d,
           count(*) AS live_reconciled_30d
    FROM ml.predictions p
    JOIN pred USING (asset, horizon)
    WHERE p.correct IS NOT NULL
      AND p.target_date > pred.live_window_end - interval '30 days'
    GROUP BY p.asset, p.horizon
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
       l.live_accuracy_30d,
       coalesce(l.live_reconciled_30d, 0) AS live_reconciled_30d,
       p.live_window_end,
       coalesce(p.n_predictions, 0) AS n_predictions,
       coalesce(p.n_reconciled, 0) AS n_reconciled,
       p.last_as_of,
       p.last_published
FROM keys k
LEFT JOIN LATERAL (
    SELECT * FROM ml.champions c
    WHERE c.horizon = k.horizon AND c.asset IN (k.asset, 'pooled')
    ORDER BY (c.asset = 'pooled')
    LIMIT 1
) c ON true
LEFT JOIN pred p ON p.asset = k.asset AND p.horizon = k.horizon
LEFT JOIN live l ON l.asset = k.asset AND l.horizon = k.horizon;

COMMENT ON VIEW ml.model_status IS
    'Per asset and horizon: serving champion (asset-specific, else pooled), baseline comparison, '
    'rolling 30-day live accuracy (window ending at live_window_end), prediction counts.';
