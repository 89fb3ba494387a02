"""`entasis api serve --workers 2` for real: requests spread over both worker processes, /metrics merged across
them (prometheus_client multiprocess mode: counters and the latency histogram summed, the store's series once,
one listener gauge per live worker, a killed worker's gauge dropped but its counts kept), each worker's own
in-process cache, a publish invalidating it on every worker by the store's NOTIFY, and the /predict fast path
answering exactly what the full handler answers."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.api import seed
from tests.unit.api.servers import api_server

PREDICT = "/api/v1/ml/predict"
WORKERS = 2
NO_POLL = {"ENTASIS_API__GENERATION_POLL_S": "3600"}  # a publish can only arrive by its NOTIFY
PUBLISH_VISIBLE_S = 5.0  # NOTIFY reaches each worker's listener in milliseconds; bound for a loaded machine


@pytest.fixture(scope="module")
def store(pg_server: str, _template: str) -> Iterator[str]:
    with seed.module_store(pg_server, _template, "apiw") as url:
        yield url


def _client(base: str) -> httpx.Client:
    """One keep-alive connection: every request on it is answered by the worker that accepted it."""
    return httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))


def worker_clients(base: str, sent: Counter[str], n: int = WORKERS, timeout: float = 30) -> dict[int, httpx.Client]:
    """A connection to each of the ``n`` workers whose listener is up, keyed by the worker's pid (from /healthz).
    Connections are opened several at once so that every worker accepts some; ``sent`` counts the /healthz calls."""
    found: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + timeout
    while len(found) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"only workers {sorted(found)} answered /healthz with a live listener within {timeout}s")
        batch = [_client(base) for _ in range(2 * n)]
        with ThreadPoolExecutor(len(batch)) as ex:
            answers = list(ex.map(lambda c: c.get("/healthz"), batch))
        sent["healthz"] += len(batch)
        for c, r in zip(batch, answers, strict=True):
            assert r.status_code == 200, r.text
            h = r.json()
            if h["pid"] not in found and h["generation_source"] == "listen":
                found[h["pid"]] = c
            else:
                c.close()
        time.sleep(0.05)
    for pid, c in found.items():  # the connection stays with its worker
        assert c.get("/healthz").json()["pid"] == pid
        sent["healthz"] += 1
    return found


def _families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = [(s.name, dict(s.labels), s.value) for s in fam.samples]
    return out


def _request_counts(fams: dict[str, list[tuple[str, dict[str, str], float]]]
                    ) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """Latency-histogram request counts by (route, status): from ``_count`` and from the ``+Inf`` bucket."""
    counts: Counter[tuple[str, str]] = Counter()
    inf: Counter[tuple[str, str]] = Counter()
    for name, labels, value in fams["entasis_api_request_duration_seconds"]:
        assert "pid" not in labels  # summed over the workers, not one series each
        key = (labels["route"], labels["status"])
        if name.endswith("_count"):
            counts[key] += int(value)
        if name.endswith("_bucket") and labels["le"] == "+Inf":
            inf[key] += int(value)
    return counts, inf


def _generation(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT generation FROM ml.serving_state").fetchone()[0])  # type: ignore[index]


def _latest_as_of(url: str, asset: str, h: int) -> datetime:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT max(as_of) FROM ml.predictions WHERE asset = %s AND horizon = %s",
                            (asset, h)).fetchone()[0]  # type: ignore[index]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_requests_spread_over_workers_and_metrics_merge(store: str, tmp_path: Path) -> None:
    prom = tmp_path / "prom"
    env = {**NO_POLL, "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    sent: Counter[str] = Counter()
    with api_server(store, home=tmp_path / "home", extra_env=env, workers=WORKERS) as base:
        clients = worker_clients(base, sent)
        assert len(clients) == WORKERS and len(set(clients)) == WORKERS  # two distinct worker processes
        bodies = [{"asset_symbol": a, "timeframe": f"{h}d"} for a in seed.ASSETS for h in seed.HORIZONS]
        per_worker: Counter[int] = Counter()
        for pid, c in clients.items():
            for b in bodies:
                r = c.post(PREDICT, json=b)
                assert r.status_code == 200, r.text
                per_worker[pid] += 1
            assert c.post(PREDICT, json={"asset_symbol": "BTC/USDT", "timeframe": "9d"}).status_code == 422
            sent["predict_200"] += len(bodies)
            sent["predict_422"] += 1
        assert all(per_worker[pid] == len(bodies) for pid in clients)  # both workers served /predict

        # answered by either worker: the merged view. A worker records a request just after sending its answer,
        # so the scrape is repeated briefly until the totals are in (they must then match exactly)
        want = {("/healthz", "200"): sent["healthz"], (PREDICT, "200"): sent["predict_200"],
                (PREDICT, "422"): sent["predict_422"]}
        t0 = time.monotonic()
        while True:
            fams = _families(httpx.get(base + "/metrics", timeout=30).text)
            counts, inf = _request_counts(fams)
            others = {k: v for k, v in counts.items() if k[0] != "/metrics"}  # earlier scrapes count too
            if others == want or time.monotonic() - t0 > 5:
                break
            time.sleep(0.1)
        assert others == want  # every request of both workers, and nothing else
        assert inf == counts  # the histogram's buckets merged consistently with its counts

        # each live worker's listener gauge, by pid; the generation they serve is the store's
        up = {int(lab["pid"]): v for _, lab, v in fams["entasis_api_generation_listener_up"]}
        assert up == {pid: 1.0 for pid in clients}
        assert [v for *_, v in fams["entasis_api_serving_generation"]] == [float(_generation(store))]
        # the store's series exported once, never per worker
        seen: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        for fam, samples in fams.items():
            for name, labels, _ in samples:
                seen[(name, tuple(sorted(labels.items())))] += 1
                if not fam.startswith("entasis_api_generation_listener"):
                    assert "pid" not in labels, (name, labels)
        assert [k for k, n in seen.items() if n > 1] == []
        assert sum(1 for _, lab, _ in fams["model_accuracy_7d"] if lab["asset"] == "BTC/USDT") == 1
        assert len(list(prom.glob("gauge_liveall_*.db"))) == WORKERS
        for c in clients.values():
            c.close()

        # a worker killed outright cannot mark itself dead: the next scrape does; uvicorn starts another,
        # and the killed worker's requests still count
        killed = min(clients)
        os.kill(killed, signal.SIGKILL)
        t0 = time.monotonic()
        while True:
            fams = _families(httpx.get(base + "/metrics", timeout=30).text)
            up = {int(lab["pid"]): v for _, lab, v in fams["entasis_api_generation_listener_up"]}
            if killed not in up and len(up) == WORKERS and set(up.values()) == {1.0}:
                break
            assert time.monotonic() - t0 < 30, f"listener gauges after kill: {up}"
            time.sleep(0.2)
        assert set(up) - set(clients)  # the replacement worker
        after, _ = _request_counts(fams)
        assert {k: v for k, v in after.items() if k[0] != "/metrics"} == want  # the killed worker's counts stay
    # each worker marked itself dead on shutdown: no live gauge of a gone process is left; its counts stay
    assert list(prom.glob("gauge_live*_*.db")) == []
    assert len(list(prom.glob("histogram_*.db"))) >= WORKERS


def test_each_worker_caches_and_a_publish_invalidates_every_worker(store: str, tmp_path: Path) -> None:
    from entasis.publish.predictions import publish_predictions

    body = {"asset_symbol": "ETH/USDT", "timeframe": "14d"}
    with api_server(store, home=tmp_path / "home", extra_env=NO_POLL, workers=WORKERS) as base:
        clients = worker_clients(base, Counter())
        before = {}
        for pid, c in clients.items():
            first = c.post(PREDICT, json=body)
            second = c.post(PREDICT, json=body)
            assert first.status_code == second.status_code == 200
            assert second.headers["x-cache"] == "hit" and second.content == first.content  # this worker's cache
            before[pid] = first.json()
        assert len({b["predicted_at"] for b in before.values()}) == 1
        as_of = datetime.fromisoformat(next(iter(before.values()))["predicted_at"])
        with psycopg.connect(store) as conn, conn.transaction():
            publish_predictions(conn, as_of=as_of + timedelta(days=6, hours=6), assets=["ETH/USDT"], horizons=[14],
                                loader=seed._loader("4", True))
        newest = _iso(_latest_as_of(store, "ETH/USDT", 14))
        assert newest != before[next(iter(before))]["predicted_at"]
        for pid, c in clients.items():
            seen = []
            t0 = time.monotonic()
            while True:
                r = c.post(PREDICT, json=body)
                seen.append(r)
                if r.json()["predicted_at"] != before[pid]["predicted_at"]:
                    break
                assert time.monotonic() - t0 < PUBLISH_VISIBLE_S, f"worker {pid} still serves the old prediction"
                time.sleep(0.005)
            assert all(x.json() == before[pid] for x in seen[:-1])  # nothing in between but the previous answer
            assert seen[-1].headers["x-cache"] == "miss" and seen[-1].json()["predicted_at"] == newest
            again = c.post(PREDICT, json=body)
            assert again.headers["x-cache"] == "hit" and again.json()["predicted_at"] == newest
            assert c.get("/healthz").json()["pid"] == pid
        for c in clients.values():
            c.close()


@pytest.mark.parametrize("cache", ["on", "off"])
def test_fast_path_answers_exactly_what_the_full_handler_answers(store: str, tmp_path: Path, cache: str) -> None:
    """A plain ``content-type: application/json`` body takes the fast path (hit or miss); the same body with a
    charset parameter goes through FastAPI's handler. Same status, bytes and headers, for every asset and
    horizon, with the cache on (fast path: hit) and off (fast path: the query on every request)."""
    env = {**NO_POLL, "ENTASIS_API__CACHE_ENABLED": "true" if cache == "on" else "false"}
    with api_server(store, home=tmp_path / "home", extra_env=env, workers=1) as base, _client(base) as c:
        t0 = time.monotonic()
        while c.get("/healthz").json()["generation_source"] != "listen":
            assert time.monotonic() - t0 < 20, "listener not up"
            time.sleep(0.05)
        for asset in seed.ASSETS:
            for h in seed.HORIZONS:
                raw = f'{{"asset_symbol":"{asset}","timeframe":"{h}d"}}'.encode()
                full = c.post(PREDICT, content=raw, headers={"content-type": "application/json; charset=utf-8"})
                fast = c.post(PREDICT, content=raw, headers={"content-type": "application/json"})
                again = c.post(PREDICT, content=raw, headers={"content-type": "application/json"})
                assert full.status_code == fast.status_code == again.status_code == 200, full.text
                assert fast.content == full.content == again.content
                assert fast.headers["content-type"] == full.headers["content-type"] == "application/json"
                want = "hit" if cache == "on" else "miss"
                assert (fast.headers["x-cache"], again.headers["x-cache"]) == (want, want)
                assert full.headers["x-cache"] == "miss"
                assert fast.json()["predicted_at"] == _iso(_latest_as_of(store, asset, h))
        # what the fast path cannot answer, the full app does: 404 naming the assets, 422 naming the field
        bad = c.post(PREDICT, content=b'{"asset_symbol":"DOGE/USDT","timeframe":"7d"}',
                     headers={"content-type": "application/json"})
        assert bad.status_code == 404 and "BTC/USDT" in bad.json()["assets"]
        bad = c.post(PREDICT, content=b'{"asset_symbol":"BTC/USDT","timeframe":"8d"}',
                     headers={"content-type": "application/json"})
        assert bad.status_code == 422 and "timeframe" in bad.text
