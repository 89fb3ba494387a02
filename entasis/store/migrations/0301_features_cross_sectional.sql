-- Momentum (ret_7d/30d/90d) and the cross-sectional / market-regime columns of the second pass
-- (entasis.features.cross). NULL until the next build computes them (the feature version changed,
-- so that build recomputes every row).
ALTER TABLE features.bars
    ADD COLUMN IF NOT EXISTS ret_7d double precision,
    ADD COLUMN IF NOT EXISTS ret_30d double precision,
    ADD COLUMN IF NOT EXISTS ret_90d double precision,
    ADD COLUMN IF NOT EXISTS xs_rank_ret_7d double precision,
    ADD COLUMN IF NOT EXISTS xs_rank_ret_30d double precision,
    ADD COLUMN IF NOT EXISTS xs_rank_ret_90d double precision,
    ADD COLUMN IF NOT EXISTS xs_rank_rvol_20 double precision,
    ADD COLUMN IF NOT EXISTS rel_btc_ret_7d double precision,
    ADD COLUMN IF NOT EXISTS rel_btc_ret_30d double precision,
    ADD COLUMN IF NOT EXISTS rel_mkt_ret_7d double precision,
    ADD COLUMN IF NOT EXISTS rel_mkt_ret_30d double precision,
    ADD COLUMN IF NOT EXISTS mkt_ret_1 double precision,
    ADD COLUMN IF NOT EXISTS mkt_ret_7d double precision,
    ADD COLUMN IF NOT EXISTS mkt_rvol_20 double precision,
    ADD COLUMN IF NOT EXISTS mkt_breadth_50 double precision,
    ADD COLUMN IF NOT EXISTS btc_qv_share double precision;
