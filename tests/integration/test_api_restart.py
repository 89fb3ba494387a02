"""The API outlives its database: the embedded PostgreSQL server is stopped (503 with a reason, the API
process keeps running) and started again (the same answers come back without restarting the API)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.unit.api import seed
from tests.unit.api.servers import api_server, get, post

BODY = {"asset_symbol": "ETH/USDT", "timeframe": "7d"}


@pytest.fixture
def own_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, object]]:
    """An embedded server of this test's own (stopping the session's would break other tests)."""
    from entasis.config import get_settings
    from entasis.store import embedded

    home = Path(tempfile.mkdtemp(prefix="entasis_api_restart_"))
    server = embedded.ensure_running(home, preferred_port=0)
    monkeypatch.setenv("ENTASIS_DATABASE_URL", server.url)
    get_settings.cache_clear()
    try:
        yield home, server
    finally:
        embedded.stop(home)
        get_settings.cache_clear()
        shutil.rmtree(home, ignore_errors=True)


def _until(fn, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        r = fn()
        if r is not None or time.monotonic() > deadline:
            return r
        time.sleep(0.3)


def test_database_restart_gives_503_then_recovers(own_server: tuple[Path, object], tmp_path: Path) -> None:
    from entasis.publish.predictions import publish_predictions
    from entasis.store import embedded
    from entasis.store.db import connect

    home, server = own_server
    with connect() as conn:
        seed.load_market(conn)
        publish_predictions(conn, as_of=datetime(2023, 6, 1, 6, tzinfo=UTC), assets=["ETH/USDT"], horizons=[7],
                            loader=seed._loader("3", False))
    with api_server(server.url, home=tmp_path / "api_home") as api:  # type: ignore[attr-defined]
        ok = post(api, seed_path := "/api/v1/ml/predict", json=BODY)
        assert ok.status_code == 200, ok.text
        assert get(api, "/healthz").status_code == 200

        # the listener is up: the cache generation comes from NOTIFY
        assert _until(lambda: get(api, "/healthz").json()["generation_source"] == "listen" or None, 20)
        assert post(api, seed_path, json=BODY).headers["x-cache"] == "hit"

        assert embedded.stop(home)
        t0 = time.monotonic()
        # the listener's lost connection makes every request read the store again: 503, not a cached body
        down = _until(lambda: (r := post(api, seed_path, json=BODY)) and (r if r.status_code == 503 else None), 15)
        assert down is not None, "still answering 200 from the cache with the database stopped"
        assert down.json()["detail"].startswith("store unavailable:") and len(down.json()["detail"]) > 20
        assert "Retry-After" in down.headers
        assert time.monotonic() - t0 < 15  # answers promptly, does not hang on the dead server
        health = get(api, "/healthz")
        assert health.status_code == 503 and "store unavailable" in health.json()["detail"]
        assert get(api, "/api/v1/ml/model/status").status_code == 503
        # the dashboard says so too, rather than serving an old cached page
        assert get(api, "/").status_code == 503

        again = embedded.ensure_running(home, preferred_port=server.port)  # type: ignore[attr-defined]
        assert again.port == server.port  # type: ignore[attr-defined]
        back = _until(lambda: (r := post(api, seed_path, json=BODY)) and (r if r.status_code == 200 else None), 30)
        assert back is not None, "the API did not recover after the database came back"
        assert back.json() == ok.json()
        assert get(api, "/healthz").status_code == 200
        # the listener reconnects by itself (a second session) and a publish after the restart arrives by NOTIFY
        health = _until(lambda: (h := get(api, "/healthz").json()).get("generation_source") == "listen"
                        and h["listener_sessions"] >= 2 and h or None, 20)
        assert health is not None, "the generation listener did not reconnect after the restart"
        with connect() as conn:
            publish_predictions(conn, as_of=datetime(2023, 6, 8, 6, tzinfo=UTC), assets=["ETH/USDT"], horizons=[7],
                                loader=seed._loader("3", False))
        newer = _until(lambda: (r := post(api, seed_path, json=BODY).json())["predicted_at"] != ok.json()[
            "predicted_at"] and r or None, 5)
        assert newer is not None and newer["predicted_at"].startswith("2023-06-08")


def test_unmigrated_store_is_503_saying_what_to_do(pg_server: str, _template: str, tmp_path: Path) -> None:
    """A database without the ml schema (never migrated) answers 503 naming the missing relation."""
    import uuid

    import psycopg

    from tests.unit.api.seed import _swap_db, drop

    name = f"empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with api_server(_swap_db(pg_server, name), home=tmp_path / "api_home") as api:
            r = post(api, "/api/v1/ml/predict", json=BODY)
            assert r.status_code == 503
            assert "serving_state" in r.json()["detail"] and "entasis db upgrade" in r.json()["detail"]
            assert get(api, "/healthz").status_code == 503
    finally:
        drop(pg_server, name)
