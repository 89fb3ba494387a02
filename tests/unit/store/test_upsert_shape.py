"""upsert_frame remembers a table's shape (column types, unique indexes) between calls, and a
change made between calls (ALTER TABLE, a new or dropped index) is still seen before a row is written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

import entasis.store.upsert as upsert
from entasis.store.upsert import table_shape, upsert_frame

DDL = "CREATE TABLE public.shape_t (k text NOT NULL, ts timestamptz NOT NULL, x double precision, PRIMARY KEY (k, ts))"
KEYS = ["k", "ts"]


def rows(k: list[Any], hours: list[int], x: Any) -> pd.DataFrame:
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(hours, unit="h")
    return pd.DataFrame({"k": k, "ts": ts, "x": x})


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url) as c:
        c.execute(DDL)
        c.commit()
        yield c


def stored(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT k, extract(epoch FROM ts)::bigint / 3600 - 473352, x FROM public.shape_t "
                        "ORDER BY k, ts").fetchall()


@pytest.mark.parametrize("fast", [True, False])
def test_a_column_type_change_between_calls_is_seen(conn: psycopg.Connection, fast: bool) -> None:
    """double precision -> bigint: both 8 bytes, so a stale shape would store float bits as integers
    without an error. The second call sees bigint and sends integers."""
    upsert_frame(conn, "public.shape_t", rows(["a", "a"], [0, 1], np.array([1, 2], dtype=np.int64)), KEYS,
                 append_fast_path=fast)
    conn.commit()
    assert table_shape(conn, "public.shape_t").types["x"] == "double precision"
    conn.execute("ALTER TABLE public.shape_t ALTER COLUMN x TYPE bigint")
    conn.commit()
    # a revised row (the merge) and a new one (the fast path, when on)
    r = upsert_frame(conn, "public.shape_t", rows(["a", "a"], [1, 2], np.array([5, 7], dtype=np.int64)), KEYS,
                     append_fast_path=fast)
    conn.commit()
    assert (r.inserted, r.updated, r.unchanged) == (1, 1, 0)
    assert stored(conn) == [("a", 0, 1), ("a", 1, 5), ("a", 2, 7)]


def test_a_new_column_between_calls_is_written(conn: psycopg.Connection) -> None:
    upsert_frame(conn, "public.shape_t", rows(["a"], [0], [1.5]), KEYS)
    conn.execute("ALTER TABLE public.shape_t ADD COLUMN n integer")
    upsert_frame(conn, "public.shape_t", rows(["a", "b"], [0, 0], [1.5, 2.5]).assign(n=[3, 4]), KEYS)
    assert conn.execute("SELECT k, n FROM public.shape_t ORDER BY k").fetchall() == [("a", 3), ("b", 4)]
    assert upsert.frame_copy_stream(rows(["a"], [0], [1.0]).assign(n=[1]),
                                    table_shape(conn, "public.shape_t").types) is not None


def test_a_dropped_unique_key_between_calls_is_seen(conn: psycopg.Connection) -> None:
    """With its key gone, new rows must not be COPied straight in as if they could not conflict: the
    merge names the missing constraint and nothing is written."""
    upsert_frame(conn, "public.shape_t", rows(["a"], [0], [1.0]), KEYS)
    conn.execute("ALTER TABLE public.shape_t DROP CONSTRAINT shape_t_pkey")
    conn.execute("CREATE UNIQUE INDEX shape_t_kx ON public.shape_t (k, ts, x)")
    conn.commit()
    with pytest.raises(psycopg.errors.InvalidColumnReference):
        upsert_frame(conn, "public.shape_t", rows(["a"], [5], [2.0]), KEYS)
    conn.rollback()
    assert stored(conn) == [("a", 0, 1.0)]


def test_a_statement_failing_on_a_stale_shape_is_retried_with_the_fresh_one(conn: psycopg.Connection) -> None:
    """k text -> integer: the append check built from the remembered text type fails in the server
    (integer = text); the write is planned again from the catalog and succeeds."""
    upsert_frame(conn, "public.shape_t", rows(["1"], [0], [1.0]), KEYS)
    conn.execute("ALTER TABLE public.shape_t ALTER COLUMN k TYPE integer USING k::integer")
    conn.commit()
    r = upsert_frame(conn, "public.shape_t", rows(["1", "2"], [1, 1], [2.0, 3.0]), KEYS)
    conn.commit()
    assert (r.inserted, r.updated, r.unchanged) == (2, 0, 0)
    assert stored(conn) == [(1, 0, 1.0), (1, 1, 2.0), (2, 1, 3.0)]


def test_the_shape_is_read_once_while_the_table_is_unchanged(conn: psycopg.Connection,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real = upsert.table_shape

    def counted(c: psycopg.Connection, table: str) -> upsert.TableShape:
        reads.append(table)
        return real(c, table)

    monkeypatch.setattr(upsert, "table_shape", counted)
    for h in range(4):  # new rows (the append check) and a revision (the merge)
        upsert_frame(conn, "public.shape_t", rows(["a", "a"], [h, h + 1], [float(h), 1.0]), KEYS)
        upsert_frame(conn, "public.shape_t", rows(["a"], [h], [9.0]), KEYS, append_fast_path=False)
    assert reads == ["public.shape_t"]  # the first call only (a fresh database per test)
    conn.execute("ALTER TABLE public.shape_t ALTER COLUMN x TYPE real")
    upsert_frame(conn, "public.shape_t", rows(["a"], [9], [0.5]), KEYS)
    assert len(reads) == 2  # read again once: the change was seen
    assert conn.execute("SELECT x FROM public.shape_t WHERE ts = '2024-01-01T09:00Z'").fetchone() == (0.5,)
