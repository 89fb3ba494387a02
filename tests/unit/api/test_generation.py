"""The in-memory serving generation (entasis.api.generation) against a real PostgreSQL: NOTIFY after commit,
nothing for a rollback, the poll catching a missed bump, the listener's reconnect after its connection is
killed, the per-request fallback meanwhile, and a store that is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import psycopg
import pytest

from entasis.api.generation import APPLICATION_NAME, GenerationWatch
from entasis.api.store import DatabaseUnavailable, ReaderStore
from tests.unit.api.seed import _swap_db

BOUND_S = 5.0  # a committed publish must reach the listener well within this


def _reader(db_url: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    info["user"] = "entasis_reader"
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **info)


def _bump(db_url: str, *, rollback: bool = False) -> int:
    """A statement-level write to ml.predictions (no rows: the trigger still fires); the generation it made."""
    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM ml.predictions WHERE false")
        g = int(conn.execute("SELECT generation FROM ml.serving_state").fetchone()[0])  # type: ignore[index]
        if rollback:
            conn.rollback()
    return g


def _store_generation(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return int(conn.execute("SELECT generation FROM ml.serving_state").fetchone()[0])  # type: ignore[index]


async def _until(cond: Callable[[], bool], timeout: float = BOUND_S) -> float:
    """Seconds until ``cond()`` held; fails the test after ``timeout``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - t0


def _run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())  # type: ignore[arg-type]


def test_notify_after_commit_advances_the_generation_and_a_rollback_does_not(db_url: str) -> None:
    async def main() -> None:
        store = ReaderStore(_reader(db_url))
        watch = GenerationWatch(store, poll_s=3600)  # no poll: only the notification can move it
        assert watch.peek() is None and not watch.live  # untrusted until the listener is up
        watch.start()
        try:
            await _until(lambda: watch.live)
            assert watch.peek() == _store_generation(db_url)
            for _ in range(3):
                g = await asyncio.to_thread(_bump, db_url)
                waited = await _until(lambda g=g: watch.peek() == g)  # type: ignore[misc]
                assert waited < BOUND_S
                assert await watch.current() == g
            before = watch.peek()
            g_rolled = await asyncio.to_thread(_bump, db_url, rollback=True)
            assert g_rolled == before + 1  # type: ignore[operator]
            await asyncio.sleep(0.5)
            assert watch.peek() == before == _store_generation(db_url)  # a rolled-back write notifies nobody
        finally:
            await watch.stop()
            await store.close()
        assert not watch.live

    _run(main)


def test_poll_catches_a_bump_that_sent_no_notification(db_url: str) -> None:
    async def main() -> None:
        store = ReaderStore(_reader(db_url))
        watch = GenerationWatch(store, poll_s=0.2)
        watch.start()
        try:
            await _until(lambda: watch.live)
            g0 = watch.peek()
            with psycopg.connect(db_url) as conn:  # bypasses the trigger function: no NOTIFY
                conn.execute("UPDATE ml.serving_state SET generation = generation + 5")
            await _until(lambda: watch.peek() == g0 + 5)  # type: ignore[operator]
            assert watch.notifications == 0
        finally:
            await watch.stop()
            await store.close()

    _run(main)


def test_listener_killed_falls_back_per_request_and_reconnects(db_url: str, pg_server: str) -> None:
    async def main() -> None:
        store = ReaderStore(_reader(db_url))
        watch = GenerationWatch(store, poll_s=3600, retry_s=0.3)
        watch.start()
        try:
            await _until(lambda: watch.live)
            assert watch.connects == 1
            name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
            with psycopg.connect(pg_server, autocommit=True) as conn:
                killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE application_name = %s AND datname = %s", (APPLICATION_NAME, name)
                                      ).fetchone()[0]  # type: ignore[index]
            assert killed == 1
            await _until(lambda: not watch.live)
            assert watch.peek() is None
            # meanwhile every request reads the store: a bump is seen at once, no notification needed
            g = await asyncio.to_thread(_bump, db_url)
            assert await watch.current() == g
            await _until(lambda: watch.live and watch.connects == 2)
            assert watch.peek() == g  # the new session read the store's value after LISTEN
            g2 = await asyncio.to_thread(_bump, db_url)
            await _until(lambda: watch.peek() == g2)  # and notifications arrive on the new session
        finally:
            await watch.stop()
            await store.close()

    _run(main)


def test_store_down_is_untrusted_and_current_raises(pg_server: str) -> None:
    from entasis.deploy.airflow_stack import free_port

    dead = _swap_db(pg_server, "nothing_here")
    info = psycopg.conninfo.conninfo_to_dict(dead)
    info["port"] = str(free_port())  # nothing listens there

    async def main() -> None:
        store = ReaderStore(psycopg.conninfo.make_conninfo("", **info), timeout_s=0.5)
        watch = GenerationWatch(store, poll_s=3600, retry_s=0.05, max_retry_s=0.1)
        watch.start()
        try:
            await asyncio.sleep(0.4)  # several failed connects
            assert not watch.live and watch.peek() is None and watch.connects == 0
            with pytest.raises(DatabaseUnavailable, match="cannot connect"):
                await watch.current()
        finally:
            await watch.stop()

    _run(main)


@pytest.mark.parametrize(("start", "payload", "after"), [
    (None, "7", 7),      # first value
    (7, "8", 8),         # the next generation
    (7, "7", 7),         # a repeat
    (7, "6", 7),         # older than known (a poll's snapshot can trail a notification): kept
    (7, "x", 7),         # not a number: ignored
    (7, "", 7),
    (7, "9999999999", 9999999999),
])
def test_notification_payload_table(start: int | None, payload: str, after: int) -> None:
    watch = GenerationWatch(ReaderStore("postgresql://u@127.0.0.1:1/x"))
    watch._value = start
    watch._on_notify(None, 0, "entasis_serving", payload)
    assert watch._value == after


@pytest.mark.parametrize(("poll_s", "retry_s", "max_retry_s"), [(0, 1, 1), (1, 0, 1), (1, 2, 1), (-1, 1, 1)])
def test_bad_timings_are_refused(poll_s: float, retry_s: float, max_retry_s: float) -> None:
    with pytest.raises(ValueError, match="poll_s"):
        GenerationWatch(ReaderStore("postgresql://u@127.0.0.1:1/x"), poll_s=poll_s, retry_s=retry_s,
                        max_retry_s=max_retry_s)


def test_on_change_reports_listener_state_and_generation(db_url: str, pg_server: str) -> None:
    """What the workers' /metrics gauges are fed: (live, generation) on each change, in order, no repeats."""
    told: list[tuple[bool, int | None]] = []

    async def main() -> None:
        store = ReaderStore(_reader(db_url))
        watch = GenerationWatch(store, poll_s=3600, retry_s=0.3, on_change=lambda live, g: told.append((live, g)))
        watch.start()
        try:
            await _until(lambda: watch.live)
            g0 = watch.peek()
            assert told == [(True, g0)]
            g1 = await asyncio.to_thread(_bump, db_url)
            await _until(lambda: watch.peek() == g1)
            assert told[-1] == (True, g1)
            name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
            with psycopg.connect(pg_server, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
                             "AND datname = %s", (APPLICATION_NAME, name))
            await _until(lambda: not watch.live)
            await _until(lambda: watch.live and watch.connects == 2)
            assert (False, g1) in told and told[-1] == (True, g1)
        finally:
            await watch.stop()
            await store.close()
        assert told[-1][0] is False
        assert all(a != b for a, b in zip(told, told[1:], strict=False))  # only changes are told

    _run(main)
