"""Hypertables when TimescaleDB exists, BRIN indexes on time otherwise."""

from __future__ import annotations

from typing import Any

from entasis.store.migrate import TIME_SERIES_TABLES, setup_time_series


def upgrade(conn: Any, ctx: Any) -> None:
    setup_time_series(conn, ctx, TIME_SERIES_TABLES)
