"""The API's read-only view of the store: a few async connections as ``entasis_reader``.

The API never writes and never migrates; it connects with the analysts' role, so a bug here cannot
change what the pipeline published. A database that is down, restarting or unreachable surfaces as
:class:`DatabaseUnavailable` (the app answers 503 with its reason); the next request after the server
is back reconnects, and a connection broken by a restart is discarded and the query retried once on
a fresh one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from entasis.config import Settings

log = logging.getLogger(__name__)


class DatabaseUnavailable(RuntimeError):
    """The store cannot be reached or answered with a connection-level error."""


def reader_url(settings: Settings) -> str:
    """``api.database_url`` if set, else the store's URL with the read-only role as user (no password).

    The embedded server trusts local connections; an external server needs ``ENTASIS_API__DATABASE_URL``
    with the reader's password.
    """
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if settings.api.database_url is not None:
        return settings.api.database_url.get_secret_value()
    from entasis.store.db import database_url

    info: dict[str, str | int | None] = dict(conninfo_to_dict(database_url(settings)))
    info["user"] = settings.api.reader_user
    info.pop("password", None)
    return make_conninfo("", **info)


def _safe_reason(err: BaseException) -> str:
    """A short reason for a 503 body: the error's first line, never a connection string."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]


class ReaderStore:
    """Async queries against ml.* over a few reused connections, with no background reconnect loop.

    Connections are opened on demand and kept while healthy; one that breaks is dropped. So while the
    server is down each request fails fast (503) and the first request after it is back reconnects:
    recovery takes no backoff schedule, however long the outage was.
    """

    def __init__(self, url: str, *, pool_size: int = 8, timeout_s: float = 2.0) -> None:
        import asyncio

        self._url, self._timeout = url, timeout_s
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(max(1, pool_size))

    async def open(self) -> None:
        """Nothing to do up front: the API starts even while the store is down."""

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import asyncio

        import psycopg

        try:
            return await asyncio.wait_for(psycopg.AsyncConnection.connect(self._url, autocommit=True),
                                          timeout=self._timeout)
        except TimeoutError:
            raise DatabaseUnavailable(f"no connection within {self._timeout:g}s") from None
        except psycopg.Error as e:
            raise DatabaseUnavailable(f"cannot connect: {_safe_reason(e)}") from None

    async def fetch(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read query; DatabaseUnavailable when the server cannot answer."""
        import asyncio

        import psycopg

        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self._timeout)
        except TimeoutError:
            raise DatabaseUnavailable(f"all {len(self._idle)} connections busy for {self._timeout:g}s") from None
        try:
            for attempt in (1, 2):
                reused = bool(self._idle)
                conn = self._idle.pop() if reused else await self._connect()
                try:
                    cur = await conn.execute(sql, params)  # type: ignore[arg-type]  # fixed SQL from this package
                    rows = await cur.fetchall()
                except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                    await conn.close()
                    # An idle connection broken by a server restart: retry once on a fresh one.
                    if attempt == 1 and reused:
                        log.info("api store: reconnecting after: %s", _safe_reason(e))
                        continue
                    raise DatabaseUnavailable(f"database error: {_safe_reason(e)}") from None
                except BaseException:
                    await conn.close()
                    raise
                self._idle.append(conn)
                return rows
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._slots.release()

    async def generation(self) -> int:
        """ml.serving_state's generation: changes with every write to ml.predictions / ml.champions."""
        rows = await self.fetch("SELECT generation FROM ml.serving_state")
        if not rows:
            raise DatabaseUnavailable("ml.serving_state is empty; run `entasis db upgrade`")
        return int(rows[0][0])
