"""features.bars (one row per exchange/symbol/timeframe/ts: features, warm-up flag, labels) and
features.build_state (the build's per-series watermark). The column list is frozen here on purpose:
tests check it equals entasis.features.registry, and a changed registry needs a new migration.
"""

from __future__ import annotations

from typing import Any

from entasis.store.migrate import setup_time_series

_FEATURES = [
    "ret_1", "ret_24h", "log_ret_1", "hl_spread", "rsi_14", "macd_rel", "macd_signal_rel", "macd_hist_rel",
    "bb_upper_rel", "bb_lower_rel", "bb_pctb", "bb_width", "ema_20_rel", "ema_50_rel", "sma_20_rel",
    "sma_50_rel", "volume_ma_20_ratio", "log_volume", "volume_change", "log_quote_volume",
    "quote_volume_change", "rvol_20", "atr_14_rel", "funding_rate", "funding_rate_7d", "oi_change_24h",
    "perp_basis", "atm_iv_7d", "atm_iv_30d", "rr25_30d", "bf25_30d", "term_slope", "pc_oi_ratio", "sentiment",
]
_HORIZONS = [7, 14, 30]


def _ddl() -> str:
    cols = [
        "exchange text NOT NULL",
        "symbol text NOT NULL",
        "timeframe text NOT NULL",
        "ts timestamptz NOT NULL",
        *[f"{c} double precision" for c in _FEATURES],
        "warmup boolean NOT NULL",
    ]
    for h in _HORIZONS:
        cols += [
            f"y_cls_{h}d smallint CHECK (y_cls_{h}d IN (0, 1, 2))",
            f"y_ret_{h}d double precision",
            f"y_vol_{h}d double precision",
        ]
    cols.append("PRIMARY KEY (exchange, symbol, timeframe, ts)")
    return "CREATE TABLE IF NOT EXISTS features.bars (\n    " + ",\n    ".join(cols) + "\n)"


def upgrade(conn: Any, ctx: Any) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS features")
    conn.execute(_ddl())
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS features.build_state (
            exchange     text NOT NULL,
            symbol       text NOT NULL,
            timeframe    text NOT NULL,
            first_ts     timestamptz NOT NULL,   -- first candle when built (earlier = backfill: rebuild)
            last_ts      timestamptz NOT NULL,   -- the watermark: last candle included
            n_candles    bigint NOT NULL,        -- candles up to last_ts (a change = history repaired: rebuild)
            config_hash  text NOT NULL,          -- feature version + label settings (a change: rebuild)
            rows         bigint NOT NULL,
            built_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (exchange, symbol, timeframe)
        )"""
    )
    setup_time_series(conn, ctx, {"features.bars": "ts"})
