"""entasis_reader, connected for real: SELECT on ml.*, nothing on market.* / features.*, no writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest


def _as_reader(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None and k != "password"}
    info["user"] = "entasis_reader"
    return make_conninfo("", **info)


def _seed(url: str) -> None:
    import psycopg

    ts = datetime(2024, 1, 2, tzinfo=UTC)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO ml.predictions (asset, horizon, as_of, model_version, predicted_class, p_bearish, "
            "p_neutral, p_bullish, confidence, confidence_level, target_date, published_at) VALUES "
            "('BTC/USDT', 7, %s, 'm/1', 2, 0.1, 0.2, 0.7, 70, 'high', %s, %s)", (ts, ts, ts))
        conn.execute("INSERT INTO market.candles (exchange, symbol, timeframe, ts, open, high, low, close, volume) "
                     "VALUES ('binance', 'BTC/USDT', '1d', %s, 1, 1, 1, 1, 1)", (ts,))


def test_reader_reads_ml_only_and_never_writes(db_url):
    import psycopg
    from psycopg import errors

    _seed(db_url)
    with psycopg.connect(_as_reader(db_url), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("entasis_reader",)
        assert conn.execute("SELECT count(*) FROM ml.predictions").fetchone() == (1,)
        status = conn.execute("SELECT asset, horizon, n_predictions FROM ml.model_status").fetchall()
        assert status == [("BTC/USDT", 7, 1)]
        conn.execute("SELECT count(*) FROM ml.champions").fetchone()
        # sessions start read-only, and the grants forbid writes even in a read-write transaction
        with pytest.raises(errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM ml.predictions")
        for sql in ("INSERT INTO ml.predictions (asset, horizon, as_of, model_version, predicted_class, p_bearish, "
                    "p_neutral, p_bullish, confidence, confidence_level, target_date, published_at) "
                    "SELECT asset, horizon + 1, as_of, model_version, predicted_class, p_bearish, p_neutral, "
                    "p_bullish, confidence, confidence_level, target_date, published_at FROM ml.predictions",
                    "UPDATE ml.predictions SET correct = true",
                    "DELETE FROM ml.predictions",
                    "TRUNCATE ml.predictions",
                    "CREATE TABLE ml.mine (x int)"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("BEGIN READ WRITE")
                try:
                    conn.execute(sql)
                finally:
                    conn.execute("ROLLBACK")
        for table in ("market.candles", "market.ingest_state", "features.bars"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {table} LIMIT 1")
    # nothing changed
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*), bool_or(correct) FROM ml.predictions").fetchone() == (1, None)


def test_future_ml_tables_are_readable(db_url):
    import psycopg

    with psycopg.connect(db_url) as conn:  # as the migrating (owner) role, like a later migration
        conn.execute("CREATE TABLE ml.later_metrics (k text PRIMARY KEY, v double precision)")
        conn.execute("INSERT INTO ml.later_metrics VALUES ('acc', 0.5)")
        conn.execute("CREATE TABLE market.later_raw (k text)")
    with psycopg.connect(_as_reader(db_url), autocommit=True) as conn:
        assert conn.execute("SELECT v FROM ml.later_metrics").fetchone() == (0.5,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM market.later_raw")


def test_role_migration_is_idempotent(db_url):
    """Re-running the migration's SQL (role already there) succeeds and changes no privilege."""
    from pathlib import Path

    import psycopg

    import entasis.store.migrate as mig

    sql = (Path(mig.__file__).parent / "migrations" / "0601_reader_role.sql").read_text()
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = conn.execute("SELECT has_table_privilege('entasis_reader', 'ml.predictions', 'SELECT'), "
                              "has_table_privilege('entasis_reader', 'ml.predictions', 'INSERT')").fetchone()
        conn.execute(sql)
        conn.execute(sql)
        after = conn.execute("SELECT has_table_privilege('entasis_reader', 'ml.predictions', 'SELECT'), "
                             "has_table_privilege('entasis_reader', 'ml.predictions', 'INSERT')").fetchone()
    assert before == after == (True, False)


def test_documented_example_queries_run_as_the_reader(db_url):
    """Every SQL example in docs/analysts.md runs as entasis_reader (and returns the seeded row)."""
    import re
    from pathlib import Path

    import psycopg

    doc = (Path(__file__).resolve().parents[3] / "docs" / "analysts.md").read_text()
    examples = doc.split("## Example queries", 1)[1]
    queries = re.findall(r"```sql\n(.*?)```", examples, flags=re.S)
    assert len(queries) == 4
    _seed(db_url)
    with psycopg.connect(_as_reader(db_url), autocommit=True) as conn:
        results = [conn.execute(q).fetchall() for q in queries]
    assert results[0][0][:2] == ("BTC/USDT", 7) and results[0][0][4] == "bullish"
    assert results[1][0][:2] == ("BTC/USDT", 7)
    assert results[2] == [] and results[3] == []  # nothing reconciled, no factors on the seeded row
