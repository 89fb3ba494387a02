"""The options feature tables are time series: hypertables under TimescaleDB, BRIN otherwise."""

from __future__ import annotations

from typing import Any

from entasis.store.migrate import setup_time_series


def upgrade(conn: Any, ctx: Any) -> None:
    setup_time_series(conn, ctx, {"features.vol_surface": "snapshot_ts", "features.option_features": "snapshot_ts"})
