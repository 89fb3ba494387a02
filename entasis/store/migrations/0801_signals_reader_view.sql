-- ml.flash_crashes: a narrow window onto signals.* for the API's /metrics and analysts, readable by
-- entasis_reader (whose reach is exactly ml.*); the view runs with its owner's rights. One row per
-- crash: the alert (detected_at) and, once final, the event's figures.
CREATE VIEW ml.flash_crashes AS
SELECT a.exchange, a.symbol, a.start_ts, a.detected_at,
       coalesce(e.depth, a.depth) AS depth,
       coalesce(e.volume_ratio, a.volume_ratio) AS volume_ratio,
       coalesce(e.peak_price, a.peak_price) AS peak_price,
       coalesce(e.trough_price, a.trough_price) AS trough_price,
       e.trough_ts, e.recovery, e.final_at, e.final_at IS NOT NULL AS final
FROM signals.flash_crash_alerts a
LEFT JOIN signals.flash_crash_events e USING (exchange, symbol, start_ts);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'entasis_reader') THEN
        GRANT SELECT ON ml.flash_crashes TO entasis_reader;
    END IF;
END
$$;
