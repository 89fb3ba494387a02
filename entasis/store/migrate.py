"""Forward-only, versioned migrations.

Each file in ``migrations/`` is ``NNNN_name.sql`` or ``NNNN_name.py`` (with ``upgrade(conn, ctx)``),
applied once in version order, each in its own transaction, under an advisory lock so that two
processes never migrate at the same time. Applied files are checksummed: editing one after it
ran is an error (write a new migration instead). Ranges by stage keep parallel work apart:
0001-0099 store, 0100 options, 0200 collect, 0300 features, 0400 models, 0500 backtest,
0600 publish.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entasis.store.upsert import ident, table_ident

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x656E7461  # "enta"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sql|py)$")

# Tables partitioned by time: hypertables under TimescaleDB, BRIN-indexed otherwise.
TIME_SERIES_TABLES: dict[str, str] = {
    "market.candles": "ts",
    "market.funding_rates": "ts",
    "market.open_interest": "ts",
    "market.option_quotes": "snapshot_ts",
}


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass
class MigrationContext:
    """What a Python migration may need to know."""

    timescale: bool


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: dict[str, Migration] = {}
    for p in sorted(directory.iterdir()):
        if p.name.startswith(("_", ".")) or p.suffix not in {".sql", ".py"}:
            continue
        m = _NAME.match(p.name)
        if not m:
            raise MigrationError(f"migration file {p.name!r} must be named NNNN_name.sql or NNNN_name.py")
        if m.group(1) in found:
            raise MigrationError(f"two migrations share version {m.group(1)}: {found[m.group(1)].path.name}, {p.name}")
        found[m.group(1)] = Migration(m.group(1), m.group(2), p)
    return [found[v] for v in sorted(found)]


def timescale_available(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None


def _bootstrap(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS public.entasis_migrations (
            version text PRIMARY KEY,
            name text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS public.entasis_meta (
            key text PRIMARY KEY,
            value text NOT NULL
        )"""
    )


def applied(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    rows = conn.execute("SELECT version, name, checksum FROM public.entasis_migrations").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def upgrade(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration; return the versions applied (empty when up to date).

    ``conn`` must be in autocommit mode; each migration runs in its own transaction.
    """
    migrations = discover(directory)
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        _bootstrap(conn)
        done = applied(conn)
        for m in migrations:
            if m.version in done and done[m.version][1] != m.checksum:
                raise MigrationError(
                    f"migration {m.path.name} changed after it was applied; migrations are forward-only, "
                    "add a new one instead"
                )
        pending = [m for m in migrations if m.version not in done]
        if not pending:
            return []
        ctx = MigrationContext(timescale=timescale_available(conn))
        newly: list[str] = []
        for m in pending:
            log.info("applying migration %s_%s", m.version, m.name)
            with conn.transaction():
                _apply(conn, m, ctx)
                conn.execute(
                    "INSERT INTO public.entasis_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum),
                )
            newly.append(m.version)
        return newly
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _apply(conn: psycopg.Connection, m: Migration, ctx: MigrationContext) -> None:
    if m.path.suffix == ".sql":
        from psycopg import sql

        conn.execute(sql.SQL(m.path.read_text()))  # a trusted file shipped with the package
        return
    spec = importlib.util.spec_from_file_location(f"entasis_migration_{m.version}", m.path)
    if spec is None or spec.loader is None:
        raise MigrationError(f"cannot load {m.path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn: Any = getattr(mod, "upgrade", None)
    if fn is None:
        raise MigrationError(f"{m.path.name} has no upgrade(conn, ctx) function")
    fn(conn, ctx)


def setup_time_series(conn: psycopg.Connection, ctx: MigrationContext, tables: dict[str, str]) -> str:
    """Hypertables (with compression on candles) under TimescaleDB, else BRIN indexes on time.

    Used by migrations so every time-series table takes the same path; returns the path taken.
    """
    if ctx.timescale:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for table, col in tables.items():
            conn.execute(
                "SELECT create_hypertable(%s, by_range(%s), if_not_exists => TRUE, migrate_data => TRUE)",
                (table, col),
            )
        if "market.candles" in tables:
            conn.execute(
                "ALTER TABLE market.candles SET (timescaledb.compress, "
                "timescaledb.compress_segmentby = 'exchange, symbol, timeframe')"
            )
            conn.execute("SELECT add_compression_policy('market.candles', INTERVAL '30 days', if_not_exists => TRUE)")
        path = "timescaledb"
    else:
        from psycopg import sql

        for table, col in tables.items():
            idx = table.replace(".", "_") + f"_{col}_brin"
            conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {idx} ON {table} USING brin ({col})").format(
                idx=ident(idx), table=table_ident(table), col=ident(col)))
        path = "postgresql"
    conn.execute(
        "INSERT INTO public.entasis_meta (key, value) VALUES ('storage_path', %s) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        (path,),
    )
    log.info("time-series storage: %s (%s)", path, ", ".join(tables))
    return path
