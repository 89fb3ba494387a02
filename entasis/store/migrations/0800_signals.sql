-- Signals stage (entasis.signals): flash-crash events and alerts, support/resistance levels.
--
-- signals.flash_crash_events: one row per detected crash, written once by the 5-minute DAG run whose
--   interval contains the event's final_at (when no later bar can change it); keyed by its start.
-- signals.flash_crash_alerts: one row per crash, raised by the run whose interval contains the close of
--   the first bar that met the rule (detected_at), before the event is final. The API's /metrics and
--   alert rules read it (entasis.signals.store.recent_flash_crash_events).
-- ml.levels: nearest support (below the close) and resistance (above) of an asset's bar, as of the
--   bar's close; the publisher writes them for every prediction's (asset, as_of), so analysts join
--   them to ml.predictions on (asset, as_of) or read ml.prediction_levels. In ml so entasis_reader
--   can read it (its reach is exactly ml.*).

CREATE SCHEMA IF NOT EXISTS signals;

CREATE TABLE signals.flash_crash_events (
    exchange      text NOT NULL,
    symbol        text NOT NULL,
    start_ts      timestamptz NOT NULL,
    trough_ts     timestamptz NOT NULL,
    detected_at   timestamptz NOT NULL,
    final_at      timestamptz NOT NULL,
    peak_price    double precision NOT NULL CHECK (peak_price > 0),
    trough_price  double precision NOT NULL CHECK (trough_price > 0),
    depth         double precision NOT NULL CHECK (depth > 0 AND depth < 1),
    volume_ratio  double precision NOT NULL,
    recovery      double precision,
    n_bars        integer NOT NULL,
    reported_in   timestamptz NOT NULL,  -- end of the DAG interval that wrote it
    PRIMARY KEY (exchange, symbol, start_ts)
);
CREATE INDEX flash_crash_events_final_idx ON signals.flash_crash_events (final_at);

CREATE TABLE signals.flash_crash_alerts (
    exchange      text NOT NULL,
    symbol        text NOT NULL,
    start_ts      timestamptz NOT NULL,
    detected_at   timestamptz NOT NULL,
    depth         double precision NOT NULL,  -- as known at detection (the event row has the final one)
    volume_ratio  double precision NOT NULL,
    peak_price    double precision NOT NULL,
    trough_price  double precision NOT NULL,
    raised_in     timestamptz NOT NULL,  -- end of the DAG interval that raised it
    PRIMARY KEY (exchange, symbol, start_ts)
);
CREATE INDEX flash_crash_alerts_detected_idx ON signals.flash_crash_alerts (detected_at);

CREATE TABLE ml.levels (
    asset         text NOT NULL,
    as_of         timestamptz NOT NULL,  -- the bar's close: levels use data up to it, nothing later
    side          text NOT NULL CHECK (side IN ('support', 'resistance')),
    rank          smallint NOT NULL CHECK (rank >= 1),  -- 1 = nearest to the close
    exchange      text NOT NULL,
    timeframe     text NOT NULL,
    price         double precision NOT NULL CHECK (price > 0),
    strength      double precision NOT NULL,
    touches       integer NOT NULL,
    distance_atr  double precision NOT NULL,  -- |close - price| / ATR
    close         double precision NOT NULL,
    atr           double precision NOT NULL,
    PRIMARY KEY (asset, as_of, side, rank)
);

CREATE VIEW ml.prediction_levels AS
SELECT p.asset, p.horizon, p.as_of, p.model_version, p.predicted_class, p.confidence,
       s.price AS support, s.strength AS support_strength, s.touches AS support_touches,
       s.distance_atr AS support_distance_atr,
       r.price AS resistance, r.strength AS resistance_strength, r.touches AS resistance_touches,
       r.distance_atr AS resistance_distance_atr
FROM ml.predictions p
LEFT JOIN ml.levels s ON s.asset = p.asset AND s.as_of = p.as_of AND s.side = 'support' AND s.rank = 1
LEFT JOIN ml.levels r ON r.asset = p.asset AND r.as_of = p.as_of AND r.side = 'resistance' AND r.rank = 1;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'entasis_reader') THEN
        GRANT SELECT ON ml.levels, ml.prediction_levels TO entasis_reader;
    END IF;
END
$$;
