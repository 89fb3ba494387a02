"""Migrations: forward-only, idempotent, checksummed; plain-PostgreSQL path recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from entasis.store.migrate import MIGRATIONS_DIR, MigrationError, discover, upgrade


def schema_fingerprint(conn: psycopg.Connection) -> list[tuple]:
    cols = conn.execute(
        """SELECT table_schema, table_name, column_name, data_type, is_nullable
           FROM information_schema.columns WHERE table_schema IN ('market','features','ml','public')
           ORDER BY 1, 2, 3"""
    ).fetchall()
    idx = conn.execute(
        "SELECT schemaname, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname IN ('market','features','ml') ORDER BY 1, 2"
    ).fetchall()
    return cols + idx


def test_upgrade_twice_is_a_noop(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = schema_fingerprint(conn)
        assert upgrade(conn) == []  # template was already migrated
        assert upgrade(conn) == []
        after = schema_fingerprint(conn)
        n = conn.execute("SELECT count(*) FROM public.entasis_migrations").fetchone()[0]
    assert before == after
    assert n == len(discover())


def test_fresh_database_gets_every_table_with_timestamptz(pg_server: str) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS mig_fresh")
        conn.execute("CREATE DATABASE mig_fresh")
    info = conninfo_to_dict(pg_server)
    info["dbname"] = "mig_fresh"
    url = make_conninfo(**info)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            applied = upgrade(conn)
            assert applied == [m.version for m in discover()]
            tables = {r[0] for r in conn.execute(
                "SELECT table_schema||'.'||table_name FROM information_schema.tables "
                "WHERE table_schema IN ('market','ml','features')").fetchall()}
            for t in ["market.candles", "market.funding_rates", "market.open_interest", "market.option_quotes",
                      "market.ingest_state", "ml.predictions"]:
                assert t in tables
            naive = conn.execute(
                "SELECT table_schema||'.'||table_name||'.'||column_name FROM information_schema.columns "
                "WHERE table_schema IN ('market','ml','features') AND data_type = 'timestamp without time zone'"
            ).fetchall()
            assert naive == []
            path = conn.execute("SELECT value FROM public.entasis_meta WHERE key='storage_path'").fetchone()[0]
            assert path == "postgresql"  # TimescaleDB is not installable here
            brin = conn.execute(
                "SELECT count(*) FROM pg_indexes WHERE indexdef ILIKE '%USING brin%' AND schemaname='market'"
            ).fetchone()[0]
            assert brin >= 4
            pk = conn.execute(
                """SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey, a.attnum))
                   FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                   WHERE i.indrelid = 'market.candles'::regclass AND i.indisprimary"""
            ).fetchone()[0]
            assert pk == "exchange,symbol,timeframe,ts"
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS mig_fresh WITH (FORCE)")


def test_edited_migration_is_refused(db_url: str, tmp_path: Path) -> None:
    d = tmp_path / "migs"
    shutil.copytree(MIGRATIONS_DIR, d, ignore=shutil.ignore_patterns("__pycache__"))
    first = sorted(d.glob("0001_*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with psycopg.connect(db_url, autocommit=True) as conn, pytest.raises(MigrationError, match="forward-only"):
        upgrade(conn, d)


def test_badly_named_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="NNNN_name"):
        discover(tmp_path)


def test_failing_migration_leaves_nothing(db_url: str, tmp_path: Path) -> None:
    d = tmp_path / "migs"
    shutil.copytree(MIGRATIONS_DIR, d, ignore=shutil.ignore_patterns("__pycache__"))
    (d / "9990_broken.sql").write_text("CREATE TABLE ml.half_done (x int); SELECT no_such_function();")
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedFunction):
            upgrade(conn, d)
        assert conn.execute("SELECT to_regclass('ml.half_done')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM public.entasis_migrations WHERE version='9990'").fetchone()[0] == 0
