"""Where the database is and how to get a connection to it.

``ENTASIS_DATABASE_URL`` names an external PostgreSQL/TimescaleDB; when it is unset we start (or
find) the embedded server under ``ENTASIS_HOME``. Migrations are applied on first use in a process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from entasis.config import Settings, get_settings
from entasis.deploy.production import require
from entasis.store import embedded
from entasis.store.migrate import upgrade

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)
_migrated: set[str] = set()
_mlock = threading.Lock()


def database_url(settings: Settings | None = None) -> str:
    """The libpq URL of the database, starting the embedded server when no URL is configured."""
    s = settings or get_settings()
    if s.database_url:
        return s.database_url

    require("database", settings=s)  # production: never a private embedded server on one worker

    return embedded.ensure_running(s.home, s.database.embedded_port).url


def jdbc_target(settings: Settings | None = None) -> tuple[str, dict[str, str]]:
    """A JDBC URL plus user/password properties for Spark, from the same database URL."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(database_url(settings))
    host = info.get("host") or "127.0.0.1"
    port = info.get("port") or "5432"
    url = f"jdbc:postgresql://{host}:{port}/{info.get('dbname', 'postgres')}"
    props = {"user": str(info.get("user") or "postgres"), "driver": "org.postgresql.Driver"}
    if info.get("password"):
        props["password"] = str(info["password"])
    return url, props


def ensure_schema(url: str) -> None:
    """Apply pending migrations once per process per database."""
    if url in _migrated:
        return
    with _mlock:
        if url in _migrated:
            return
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            upgrade(conn)
        _migrated.add(url)


@contextmanager
def connect(settings: Settings | None = None, *, migrate: bool = True) -> Iterator[psycopg.Connection]:
    """A psycopg connection in a transaction: committed on success, rolled back on error."""
    import psycopg

    url = database_url(settings)
    if migrate:
        ensure_schema(url)
    conn = psycopg.connect(url)
    try:
        with conn.transaction():
            yield conn
    finally:
        conn.close()
