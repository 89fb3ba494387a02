"""The API's read-only view of the store: a few asyncpg connections as ``entasis_reader``.

asyncpg rather than psycopg here because every request makes one tiny query (the serving
generation), and asyncpg's round trip costs a fraction of psycopg's async one.

The API never writes and never migrates; it connects with the analysts' role, so a bug here cannot
change what the pipeline published. A database that is down, restarting or unreachable surfaces as
:class:`DatabaseUnavailable` (the app answers 503 with its reason); the next request after the server
is back reconnects, and a connection broken by a restart is discarded and the query retried once on
a fresh one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from entasis.store.db import database_url

if TYPE_CHECKING:
    import asyncpg

    from entasis.config import Settings

log = logging.getLogger(__name__)


_PARAM = re.compile(r"%\((\w+)\)s|%s")


def to_dollar_params(sql: str, params: Sequence[Any] | dict[str, Any]) -> tuple[str, list[Any]]:
    """``%(name)s`` / ``%s`` placeholders (psycopg style, as the rest of Entasis writes SQL) to asyncpg's
    ``$n``; a name used twice is one parameter. Mixing the two styles is refused."""
    if isinstance(params, dict):
        order: list[str] = []

        def named(m: re.Match[str]) -> str:
            name = m.group(1)
            if name is None:
                raise ValueError("positional %s placeholder in a query given named parameters")
            if name not in params:
                raise KeyError(f"query parameter {name!r} not given")
            if name not in order:
                order.append(name)
            return f"${order.index(name) + 1}"

        return _PARAM.sub(named, sql), [params[n] for n in order]
    values = list(params)
    count = [0]

    def positional(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            raise ValueError(f"named placeholder %({m.group(1)})s in a query given positional parameters")
        count[0] += 1
        return f"${count[0]}"

    out = _PARAM.sub(positional, sql)
    if count[0] != len(values):
        raise ValueError(f"query has {count[0]} placeholder(s) but {len(values)} parameter(s) were given")
    return out, values


def asyncpg_connect_args(url: str) -> dict[str, Any]:
    """asyncpg.connect keyword arguments from a libpq URL or key=value string."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    args: dict[str, Any] = {"host": info.get("host") or "127.0.0.1", "port": int(info.get("port") or 5432),
                            "user": info.get("user"), "database": info.get("dbname"),
                            "password": info.get("password")}
    if info.get("sslmode"):
        args["ssl"] = str(info["sslmode"])
    return {k: v for k, v in args.items() if v is not None}


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

    info: dict[str, str | int | None] = dict(conninfo_to_dict(database_url(settings)))
    info["user"] = settings.api.reader_user
    info.pop("password", None)
    return make_conninfo("", **info)


def safe_reason(err: BaseException) -> str:
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

        self._connect_args = asyncpg_connect_args(url)
        self._timeout = timeout_s
        self._idle: list[asyncpg.Connection] = []
        self._slots = asyncio.Semaphore(max(1, pool_size))

    async def open(self) -> None:
        """Nothing to do up front: the API starts even while the store is down."""

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close(timeout=1)

    @property
    def timeout_s(self) -> float:
        return self._timeout

    async def connect(self, application_name: str = "entasis-api") -> asyncpg.Connection:
        """A new connection of the reader (json/jsonb decoded by orjson); DatabaseUnavailable if it fails."""
        import asyncpg
        import orjson

        try:
            conn = await asyncpg.connect(**self._connect_args, timeout=self._timeout,
                                         server_settings={"application_name": application_name})
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise DatabaseUnavailable(f"cannot connect: {safe_reason(e)}") from None
        for t in ("json", "jsonb"):
            await conn.set_type_codec(t, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                                      schema="pg_catalog")
        return conn

    async def fetch(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read query (``%(name)s`` / ``%s`` placeholders); DatabaseUnavailable when the server
        cannot answer."""
        import asyncio

        import asyncpg

        query, args = to_dollar_params(sql, params)
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self._timeout)
        except TimeoutError:
            raise DatabaseUnavailable(f"all connections busy for {self._timeout:g}s") from None
        try:
            for attempt in (1, 2):
                reused = bool(self._idle)
                conn = self._idle.pop() if reused else await self.connect()
                try:
                    rows = await conn.fetch(query, *args, timeout=max(self._timeout, 30.0))
                except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                        asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CannotConnectNowError) as e:
                    conn.terminate()
                    # An idle connection broken by a server restart: retry once on a fresh one.
                    if attempt == 1 and reused:
                        log.info("api store: reconnecting after: %s", safe_reason(e))
                        continue
                    raise DatabaseUnavailable(f"database error: {safe_reason(e)}") from None
                except (asyncpg.exceptions.UndefinedTableError, asyncpg.exceptions.UndefinedColumnError,
                        asyncpg.exceptions.InsufficientPrivilegeError) as e:
                    self._idle.append(conn)  # the connection is fine; the store is not what the API reads
                    raise DatabaseUnavailable(f"{safe_reason(e)} (is the schema migrated, `entasis db upgrade`, "
                                              "and entasis_reader granted ml.*?)") from None
                except BaseException:
                    conn.terminate()
                    raise
                self._idle.append(conn)
                return [tuple(r) for r in rows]
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._slots.release()

    async def generation(self) -> int:
        """ml.serving_state's generation: changes with every write to ml.predictions / ml.champions."""
        rows = await self.fetch("SELECT generation FROM ml.serving_state")
        if not rows:
            raise DatabaseUnavailable("ml.serving_state is empty; run `entasis db upgrade`")
        return int(rows[0][0])
