"""The store's serving generation, kept in memory by one LISTEN connection.

Every write to ml.predictions / ml.champions / ml.vol_forecasts bumps ``ml.serving_state.generation``
and, in the same transaction, sends ``NOTIFY entasis_serving '<generation>'`` (migration 0702).
PostgreSQL delivers that notification only once the transaction has committed, so holding the
generation in memory and advancing it on each notification lets a cached answer be served with no
database round trip while a publish still invalidates it as soon as its rows are visible.

The in-memory value is trusted only while the listener is known to be healthy:

* it starts untrusted; the watcher connects, LISTENs first and reads the generation second (so no
  bump can fall between the two), and only then trusts it;
* a lost connection (server restart, network error, failed poll) untrusts it at once and a
  background loop reconnects with a short backoff;
* every ``poll_s`` seconds the listener connection reads the generation again (a fallback in case a
  notification went missing, and a liveness check of the connection itself).

While it is untrusted, :meth:`GenerationWatch.current` reads the generation from the store for each
request, as the API always did: correct, just slower, and a store that is down answers 503 rather
than a cached body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from entasis.api.store import DatabaseUnavailable, ReaderStore, safe_reason

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)
CHANNEL = "entasis_serving"
APPLICATION_NAME = "entasis-api-listener"  # how the listener shows in pg_stat_activity
GENERATION_SQL = "SELECT generation FROM ml.serving_state"


class GenerationWatch:
    """The serving generation: from memory while the LISTEN connection is up, from the store otherwise."""

    def __init__(self, store: ReaderStore, *, poll_s: float = 5.0, retry_s: float = 0.5,
                 max_retry_s: float = 5.0, on_change: Callable[[bool, int | None], None] | None = None) -> None:
        """``on_change(live, generation)`` is told each change of either (the workers' /metrics gauges)."""
        if not (poll_s > 0 and retry_s > 0 and max_retry_s >= retry_s):
            raise ValueError(f"need poll_s > 0 and 0 < retry_s <= max_retry_s; got {poll_s}, {retry_s}, {max_retry_s}")
        self._store = store
        self.poll_s, self.retry_s, self.max_retry_s = poll_s, retry_s, max_retry_s
        self._value: int | None = None
        self._live = False
        self._conn: asyncpg.Connection | None = None
        self._lost: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.connects = 0  # listener sessions opened so far (tests and logs)
        self.notifications = 0
        self._on_change = on_change
        self._told: tuple[bool, int | None] | None = None

    def _changed(self) -> None:
        state = (self.live, self._value)
        if self._on_change is not None and state != self._told:
            self._told = state
            self._on_change(*state)

    # -- what requests use -------------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        """True while the in-memory generation is trusted (listener connected and listening)."""
        return self._live and self._value is not None

    def peek(self) -> int | None:
        """The in-memory generation when trusted, else None (the caller must ask the store)."""
        return self._value if self._live else None

    async def current(self) -> int:
        """The generation: from memory while the listener is up, otherwise one query to the store."""
        value = self.peek()
        return value if value is not None else await self._store.generation()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="entasis-generation-watch")

    async def stop(self) -> None:
        self._live = False
        self._changed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._drop()

    # -- the listener ------------------------------------------------------------------------------------------
    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.notifications += 1
        try:
            g = int(payload)
        except ValueError:
            log.warning("api generation: ignoring notification payload %r", payload[:40])
            return
        # Within one session generations only go up (the bump holds the row lock until commit, so commits
        # and their notifications come in order); max() also keeps a poll's older snapshot from winning.
        if self._value is None or g > self._value:
            self._value = g
            self._changed()

    def _on_terminate(self, conn: Any) -> None:
        self._live = False
        self._changed()
        if self._lost is not None:
            self._lost.set()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _session(self) -> None:
        """One listener session: connect, LISTEN, read the generation, then poll until the connection is lost."""
        conn = await self._store.connect(APPLICATION_NAME)
        self._conn = conn
        self._lost = asyncio.Event()
        conn.add_termination_listener(self._on_terminate)
        timeout = self._store.timeout_s
        await conn.add_listener(CHANNEL, self._on_notify)
        g = await conn.fetchval(GENERATION_SQL, timeout=timeout)  # after LISTEN: no bump can fall in between
        if g is None:
            raise DatabaseUnavailable("ml.serving_state is empty; run `entasis db upgrade`")
        self._value = int(g)  # a new session takes the store's value as it is
        self._live = True
        self.connects += 1
        self._changed()
        log.info("api generation: listening on %s (generation %s)", CHANNEL, g)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self.poll_s)
            if self._lost.is_set() or conn.is_closed():
                raise DatabaseUnavailable("listener connection lost")
            g = await conn.fetchval(GENERATION_SQL, timeout=timeout)
            if g is not None and (self._value is None or int(g) > self._value):
                log.info("api generation: poll found %s (notification missed?)", g)
                self._value = int(g)
                self._changed()

    async def _run(self) -> None:
        delay = self.retry_s
        while True:
            before = self.connects
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure means: untrusted, reconnect later
                self._live = False
                self._changed()
                await self._drop()
                (log.warning if self.connects > before else log.info)(
                    "api generation: listener down (%s); reading the generation per request until it is back",
                    safe_reason(e))
            self._live = False
            # back at once after a session that worked (a restart), backing off while the store stays away
            delay = self.retry_s if self.connects > before else min(delay * 2, self.max_retry_s)
            await asyncio.sleep(delay)
