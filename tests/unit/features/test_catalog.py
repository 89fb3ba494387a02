"""The feature catalogue is the binding contract with the models and publish stages."""

from __future__ import annotations

import pytest

from entasis.features import catalog

# Pinned: reordering or renaming breaks trained models; change it on purpose, with a migration.
PINNED = [
    "ret_1", "ret_24h", "log_ret_1", "hl_spread", "rsi_14", "macd_rel", "macd_signal_rel", "macd_hist_rel",
    "bb_upper_rel", "bb_lower_rel", "bb_pctb", "bb_width", "ema_20_rel", "ema_50_rel", "sma_20_rel",
    "sma_50_rel", "volume_ma_20_ratio", "log_volume", "volume_change", "log_quote_volume",
    "quote_volume_change", "rvol_20", "atr_14_rel", "ret_7d", "ret_30d", "ret_90d",
    "funding_rate", "funding_rate_7d", "oi_change_24h", "perp_basis", "atm_iv_7d", "atm_iv_30d", "rr25_30d",
    "bf25_30d", "term_slope", "pc_oi_ratio", "sentiment", "support_dist_atr", "resistance_dist_atr",
    "xs_rank_ret_7d", "xs_rank_ret_30d", "xs_rank_ret_90d", "xs_rank_rvol_20", "rel_btc_ret_7d", "rel_btc_ret_30d",
    "rel_mkt_ret_7d", "rel_mkt_ret_30d", "mkt_ret_1", "mkt_ret_7d", "mkt_rvol_20", "mkt_breadth_50", "btc_qv_share",
]


def test_feature_columns_are_pinned() -> None:
    assert catalog.FEATURE_COLUMNS == PINNED
    groups = [catalog.CANDLE_FEATURES, catalog.MOMENTUM_FEATURES, catalog.PERP_FEATURES,
              catalog.OPTION_FEATURES, catalog.SENTIMENT_FEATURES, catalog.LEVEL_FEATURES,
              catalog.CROSS_FEATURES]
    assert sorted(c for g in groups for c in g) == sorted(PINNED)  # each column in exactly one group
    assert catalog.SERIES_FEATURES + catalog.CROSS_FEATURES == PINNED


def test_label_columns() -> None:
    assert catalog.label_columns([30, 7, 14, 7]) == [
        "y_cls_7d", "y_ret_7d", "y_vol_7d", "y_cls_14d", "y_ret_14d", "y_vol_14d",
        "y_cls_30d", "y_ret_30d", "y_vol_30d"]
    with pytest.raises(ValueError, match="positive whole number of days"):
        catalog.label_columns([0])


def test_timeframe_arithmetic() -> None:
    assert catalog.horizon_bars(7, "1h") == 168 and catalog.horizon_bars(7, "1d") == 7
    assert catalog.horizon_bars(30, "4h") == 180
    assert catalog.min_history("1m") == 1441 and catalog.min_history("1d") == 100
    assert catalog.block_bars("1h") >= 8 * catalog.warmup_bars("1h")
    with pytest.raises(ValueError, match="unknown timeframe '1w'"):
        catalog.bars_per_day("1w")


def test_symbol_mapping() -> None:
    assert catalog.underlying_of("BTC/USDT") == catalog.underlying_of("BTC/USDT:USDT") == "BTC"
    assert catalog.perp_of("ETH/USDT") == "ETH/USDT:USDT" and catalog.perp_of("ETH/USDT:USDT") == "ETH/USDT:USDT"
    assert catalog.pair_of("SOL/USDT:USDT") == "SOL/USDT"
