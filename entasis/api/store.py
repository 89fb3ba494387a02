"""The API's read-only view of the store: a small async connection pool as ``entasis_reader``.

The API never writes and never migrates; it connects with the analysts' role, so a bug here cannot
change what the pipeline published. A database that is down, restarting or unreachable surfaces as
:class:`DatabaseUnavailable` (the app answers 503 with its reason) and the pool reconnects by itself
once the server is back; a connection broken by a restart is discarded and the query retried once on
a fresh one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

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
    """Async queries against ml.* through a pool that survives database restarts."""

    def __init__(self, url: str, *, pool_size: int = 8, timeout_s: float = 2.0) -> None:
        from psycopg_pool import AsyncConnectionPool

        self._pool: AsyncConnectionPool = AsyncConnectionPool(
            url, min_size=1, max_size=max(1, pool_size), open=False, timeout=timeout_s,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout_s))},
            reconnect_timeout=3600.0, name="entasis-api",
        )

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def fetch(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read query; DatabaseUnavailable when the server cannot answer."""
        import psycopg
        from psycopg_pool import PoolTimeout

        for attempt in (1, 2):
            try:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(sql, params)  # type: ignore[arg-type]  # fixed SQL from this package
                    return await cur.fetchall()
            except PoolTimeout as e:
                raise DatabaseUnavailable(f"database unreachable: {_safe_reason(e)}") from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                # A connection broken by a server restart is discarded by the pool; retry once on a new one.
                if attempt == 1:
                    log.info("api store: retrying after a connection error: %s", _safe_reason(e))
                    continue
                raise DatabaseUnavailable(f"database error: {_safe_reason(e)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def generation(self) -> int:
        """ml.serving_state's generation: changes with every write to ml.predictions / ml.champions."""
        rows = await self.fetch("SELECT generation FROM ml.serving_state")
        if not rows:
            raise DatabaseUnavailable("ml.serving_state is empty; run `entasis db upgrade`")
        return int(rows[0][0])
