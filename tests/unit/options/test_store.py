"""build_and_store_surface against a real PostgreSQL: rows land, re-storing changes nothing."""

from __future__ import annotations

import math

import pandas as pd
import psycopg
import pytest

from entasis.options.store import (
    OPTION_FEATURES_COLUMNS,
    OPTION_FEATURES_KEY,
    SURFACE_KEY,
    build_and_store_surface,
    load_quotes,
)
from entasis.options.surface import snapshot_features
from entasis.store.db import connect
from entasis.store.market import table_checksum, write_option_quotes

from .conftest import make_chain


def _one(conn: psycopg.Connection, sql: str) -> object:
    row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def _state(conn: psycopg.Connection) -> tuple[str, str, object]:
    ctids = _one(conn, "SELECT string_agg(ctid::text, ',' ORDER BY snapshot_ts, expiry) FROM features.vol_surface")
    return (table_checksum(conn, "features.vol_surface", SURFACE_KEY),
            table_checksum(conn, "features.option_features", OPTION_FEATURES_KEY), ctids)


def test_store_surface_and_restore_is_idempotent(db_url: str) -> None:
    early = make_chain("2024-03-01 08:00")
    late = make_chain("2024-03-01 09:00", spot=61_000.0)
    with connect() as conn:
        write_option_quotes(conn, pd.concat([early, late], ignore_index=True))
        assert build_and_store_surface(conn, "ETH") == 0              # nothing collected for ETH
        n = build_and_store_surface(conn, "BTC")                      # latest snapshot: 09:00
        assert n == 7
        first = _state(conn)
        rows = conn.execute("SELECT snapshot_ts, count(*) FROM features.vol_surface GROUP BY 1").fetchall()
        assert [(pd.Timestamp(r[0]).hour, r[1]) for r in rows] == [(9, 7)]
        feat = conn.execute(f"SELECT {', '.join(OPTION_FEATURES_COLUMNS)} FROM features.option_features").fetchall()
        assert len(feat) == 1
    stored = dict(zip(OPTION_FEATURES_COLUMNS, feat[0], strict=True))
    expected = snapshot_features(late).iloc[0]
    for col in ("atm_iv_7d", "atm_iv_30d", "rr25_30d", "bf25_30d", "term_slope", "pc_oi_ratio"):
        assert stored[col] == pytest.approx(expected[col], rel=1e-12), col
    assert all(math.isfinite(stored[c]) for c in ("v0", "kappa", "theta", "sigma", "rho", "calib_rmse"))
    assert stored["feller_ok"] in (True, False) and stored["calib_rmse"] < 0.03   # Heston vs an SVI surface

    with connect() as conn:
        assert build_and_store_surface(conn, "BTC") == 7              # the same snapshot again
        assert _state(conn) == first                                  # byte-identical, no row rewritten
        # an explicit earlier snapshot is stored beside it
        assert build_and_store_surface(conn, "BTC", pd.Timestamp("2024-03-01 08:00", tz="UTC")) == 7
        assert _one(conn, "SELECT count(*) FROM features.option_features") == 2
        assert _one(conn, "SELECT count(*) FROM features.vol_surface") == 14
        after_both = _state(conn)
        build_and_store_surface(conn, "BTC", "2024-03-01T08:00:00+00:00")
        assert _state(conn) == after_both


def test_missing_snapshot_and_bad_arguments_are_errors(db_url: str) -> None:
    with connect() as conn:
        write_option_quotes(conn, make_chain("2024-03-01 08:00"))
        with pytest.raises(LookupError, match="no deribit BTC option quotes at snapshot"):
            build_and_store_surface(conn, "BTC", pd.Timestamp("2024-03-02", tz="UTC"))
        with pytest.raises(ValueError, match="snapshot_ts='2024-03-01 08:00' has no time zone"):
            build_and_store_surface(conn, "BTC", "2024-03-01 08:00")
        with pytest.raises(ValueError, match="underlying"):
            build_and_store_surface(conn, "", None)
        q = load_quotes(conn, "BTC")
    assert len(q) == 7 * 21 * 2
    assert str(q["snapshot_ts"].dtype).startswith("datetime64") and q["snapshot_ts"].dt.tz is not None
