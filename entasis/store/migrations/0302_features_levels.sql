-- Support/resistance distances (entasis.signals.levels via entasis.features.extensions). NULL until the
-- next build computes them (the feature version changed, so that build recomputes every row).
ALTER TABLE features.bars
    ADD COLUMN IF NOT EXISTS support_dist_atr double precision,
    ADD COLUMN IF NOT EXISTS resistance_dist_atr double precision;
