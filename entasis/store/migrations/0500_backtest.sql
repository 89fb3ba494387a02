-- Backtest stage: walk-forward runs, their metrics and out-of-sample forecasts, and promotion decisions.
--
-- run_id is a hash of the run's configuration and data snapshot, so re-running the same backtest
-- upserts the same rows (created_at keeps the first run's time).

CREATE TABLE ml.backtest_runs (
    run_id          text PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    exchange        text,
    timeframe       text NOT NULL,
    assets          jsonb NOT NULL,             -- ["BTC/USDT", ...]
    horizon         integer NOT NULL CHECK (horizon > 0),
    start_ts        timestamptz NOT NULL,
    end_ts          timestamptz NOT NULL,
    models          jsonb NOT NULL,             -- model labels, baselines excluded
    window_kind     text NOT NULL CHECK (window_kind IN ('expanding', 'rolling')),
    refit_days      integer NOT NULL,
    train_days      integer,
    purge_days      integer NOT NULL,
    embargo_days    integer NOT NULL,
    n_folds         integer NOT NULL,
    n_scored        integer NOT NULL,
    first_test_ts   timestamptz,
    last_test_ts    timestamptz,
    best_baseline   text,
    leakage_status  text NOT NULL,              -- ok | warned | off
    data_hash       text NOT NULL,
    config          jsonb NOT NULL,
    report_path     text,
    mlflow_run_id   text,
    duration_s      double precision
);

COMMENT ON TABLE ml.backtest_runs IS 'One row per walk-forward backtest (asset set, horizon, window, models).';

CREATE TABLE ml.backtest_metrics (
    run_id  text NOT NULL REFERENCES ml.backtest_runs (run_id) ON DELETE CASCADE,
    model   text NOT NULL,                      -- model label, 'baseline:<name>' or 'buy_and_hold'
    scope   text NOT NULL,                      -- 'pooled' / 'portfolio' or an asset symbol
    metric  text NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('classification', 'comparison', 'trading')),
    value   double precision,
    PRIMARY KEY (run_id, model, scope, metric)
);

COMMENT ON TABLE ml.backtest_metrics IS
    'Long-format metrics of a backtest run: classification per scope, model-minus-baseline bootstrap '
    'intervals (d_<metric>_vs_<baseline>_{estimate,lo,hi,p_le_0}) and trading performance.';

CREATE TABLE ml.backtest_predictions (
    run_id           text NOT NULL REFERENCES ml.backtest_runs (run_id) ON DELETE CASCADE,
    model            text NOT NULL,
    symbol           text NOT NULL,
    ts               timestamptz NOT NULL,
    fold             integer NOT NULL,
    p_bearish        double precision,
    p_neutral        double precision,
    p_bullish        double precision,
    predicted_class  smallint CHECK (predicted_class IN (0, 1, 2)),
    actual_class     smallint CHECK (actual_class IN (0, 1, 2)),
    forward_return   double precision,
    scored           boolean NOT NULL,
    PRIMARY KEY (run_id, model, symbol, ts)
);

COMMENT ON TABLE ml.backtest_predictions IS 'Every out-of-sample forecast of a backtest, baselines included.';

CREATE TABLE ml.promotion_decisions (
    model_name            text NOT NULL,        -- registered model, e.g. entasis-pooled-7d
    decided_at            timestamptz NOT NULL,
    action                text NOT NULL CHECK (action IN ('promote', 'keep', 'rollback', 'no_rollback')),
    asset                 text NOT NULL,        -- symbol or 'pooled'
    horizon               integer NOT NULL,
    challenger_version    text,
    champion_version      text,                 -- champion before the decision
    new_champion_version  text,                 -- champion after it
    promoted              boolean NOT NULL,
    unproven              boolean,
    reason                text NOT NULL,
    challenger_accuracy   double precision,
    challenger_log_loss   double precision,
    champion_accuracy     double precision,
    champion_log_loss     double precision,
    best_baseline         text,
    best_baseline_accuracy double precision,
    best_baseline_log_loss double precision,
    live_accuracy         double precision,
    margin                double precision,
    window_start          timestamptz,
    window_end            timestamptz,
    backtest_run_id       text,
    details               jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (model_name, decided_at, action)
);

COMMENT ON TABLE ml.promotion_decisions IS
    'Every champion/challenger promotion and rollback decision, with its reason and the numbers behind it.';

CREATE INDEX promotion_decisions_asset_idx ON ml.promotion_decisions (asset, horizon, decided_at);
