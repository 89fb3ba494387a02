"""What is in the store: tables, row counts, storage path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

SCHEMAS = ("market", "features", "ml")


def store_status(conn: psycopg.Connection) -> dict[str, Any]:
    from psycopg import sql

    version = conn.execute("SHOW server_version").fetchone()
    path = conn.execute("SELECT value FROM public.entasis_meta WHERE key = 'storage_path'").fetchone()
    migs = conn.execute("SELECT count(*) FROM public.entasis_migrations").fetchone()
    rows = conn.execute(
        """SELECT table_schema || '.' || table_name, table_type FROM information_schema.tables
           WHERE table_schema = ANY(%s) ORDER BY 1""",
        (list(SCHEMAS),),
    ).fetchall()
    tables = []
    for name, ttype in rows:
        schema, tbl = name.split(".")
        cnt = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, tbl))).fetchone()
        tables.append({"name": name, "rows": int(cnt[0]) if cnt else 0,
                       "kind": "view" if ttype == "VIEW" else "table"})
    return {
        "server_version": version[0] if version else "?",
        "storage_path": path[0] if path else "unknown",
        "migrations": int(migs[0]) if migs else 0,
        "tables": tables,
    }
