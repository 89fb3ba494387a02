"""The one bulk, idempotent write path every writer uses.

Dedupe the batch on its key (last row wins), COPY it into a temporary table, then
``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE changed`` in a single transaction. Re-applying a
batch touches no row (the WHERE skips identical ones, so the table stays byte-identical); an
error anywhere rolls the whole batch back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_COPY_ROWS = 100_000


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int
    unchanged: int

    @property
    def written(self) -> int:
        return self.inserted + self.updated


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"invalid SQL identifier {name!r}")
    return f'"{name}"'


def _table(name: str) -> str:
    parts = name.split(".")
    if len(parts) != 2:
        raise ValueError(f"table must be schema-qualified, got {name!r}")
    return ".".join(_ident(p) for p in parts)


def dedupe(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Keep the last row for each key, so a revised row inside one batch wins."""
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise ValueError(f"batch lacks key column(s) {missing}")
    return df.drop_duplicates(subset=list(keys), keep="last")


def _to_csv(df: pd.DataFrame) -> bytes:
    """Serialise with Arrow's C++ CSV writer: shortest round-trip floats, ISO UTC timestamps,
    nulls as unquoted empty fields (PostgreSQL's CSV NULL), ~10x faster than DataFrame.to_csv."""
    import json

    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

    out = df
    obj_cols = [c for c in df.columns if df[c].dtype == object]
    if obj_cols:
        out = df.copy()
        for c in obj_cols:
            out[c] = df[c].map(lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v)
    for c in out.columns:
        if isinstance(out[c].dtype, pd.DatetimeTZDtype) and str(out[c].dt.unit) != "us":
            out = out.assign(**{c: out[c].dt.as_unit("us")})
    table = pa.Table.from_pandas(out, preserve_index=False)
    buf = pa.BufferOutputStream()
    pacsv.write_csv(table, buf, write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return bytes(buf.getvalue().to_pybytes())


def upsert_frame(
    conn: psycopg.Connection,
    table: str,
    df: pd.DataFrame,
    keys: Sequence[str],
    *,
    update_columns: Sequence[str] | None = None,
) -> UpsertResult:
    """Upsert ``df`` into ``table`` on ``keys`` atomically; return counts.

    Timestamps must be tz-aware (UTC); the caller validates values before this point.
    """
    import pandas as pd

    if df.empty:
        return UpsertResult(0, 0, 0)
    batch = dedupe(df, keys).sort_values(list(keys), kind="stable")  # key order: B-tree locality
    for c in batch.columns:
        if pd.api.types.is_datetime64_any_dtype(batch[c]) and not isinstance(batch[c].dtype, pd.DatetimeTZDtype):
            raise ValueError(f"column {c!r} has naive timestamps; use UTC-aware timestamps")
        if isinstance(batch[c].dtype, pd.DatetimeTZDtype):
            batch = batch.assign(**{c: batch[c].dt.tz_convert("UTC")})
    cols = list(batch.columns)
    upd = [c for c in (update_columns if update_columns is not None else cols) if c not in keys]
    tbl = _table(table)
    col_sql = ", ".join(_ident(c) for c in cols)
    key_sql = ", ".join(_ident(k) for k in keys)
    tmp = "_entasis_stage"
    if upd:
        set_sql = ", ".join(f"{_ident(c)} = EXCLUDED.{_ident(c)}" for c in upd)
        changed = " OR ".join(f"t.{_ident(c)} IS DISTINCT FROM EXCLUDED.{_ident(c)}" for c in upd)
        conflict = f"DO UPDATE SET {set_sql} WHERE {changed}"
    else:
        conflict = "DO NOTHING"
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS pg_temp.{tmp}")  # type: ignore[arg-type]
        cur.execute(
            f"CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {col_sql} FROM {tbl} WITH NO DATA"  # type: ignore[arg-type]
        )
        with cur.copy(f"COPY {tmp} ({col_sql}) FROM STDIN WITH (FORMAT csv)") as cp:  # type: ignore[arg-type]
            # serialise in slices so the server parses one while we format the next
            for start in range(0, len(batch), _COPY_ROWS):
                cp.write(_to_csv(batch.iloc[start : start + _COPY_ROWS]))
        cur.execute(
            f"WITH w AS (INSERT INTO {tbl} AS t ({col_sql}) SELECT {col_sql} FROM {tmp} "  # type: ignore[arg-type]
            f"ON CONFLICT ({key_sql}) {conflict} RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FROM w"
        )
        row = cur.fetchone()
    inserted, written = (int(row[0]), int(row[1])) if row else (0, 0)
    return UpsertResult(inserted=inserted, updated=written - inserted, unchanged=len(batch) - written)
