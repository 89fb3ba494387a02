"""Prediction API under bounded load on loopback: throughput and p50 / p99 latency, cached and uncached.

Workload: ``entasis api serve`` (uvicorn, ``--workers`` processes: the product default ``api.workers``
unless given) against a store seeded by the pipeline's own
publish and reconcile functions (the API tests' seed: 3 assets x 3 horizons, tiny real models). A
closed-loop load generator (raw asyncio sockets, HTTP/1.1 keep-alive, so the client costs little CPU)
runs C concurrent clients for N requests in total of ``POST /api/v1/ml/predict`` spread over every
(asset, horizon):

* cached: the default in-process cache (every request after the first per key is a hit). The serving
  generation that keys it is held in memory and moved by the store's NOTIFY on each publish, so a hit
  makes no database round trip, and is answered before FastAPI's routing and validation;
* cached-pr: the same with ``ENTASIS_API__GENERATION_LISTEN=false``: the generation is read from the
  store on every request (how the API worked before the listener; also its fallback while the
  listener is down), so every hit goes through the full FastAPI handler;
* uncached: ``ENTASIS_API__CACHE_ENABLED=false`` (every request reads the store with the full handler's
  query; a valid body is still answered before FastAPI's routing and validation);
* reference: the same load against a bare uvicorn app (as many workers) that answers a constant JSON
  body, measured in the same run: the HTTP + loopback + load-generator floor of this machine.

Before each measured run the bench polls ``/healthz`` until every worker reports the generation source
the run expects ("listen": its LISTEN connection is up; "store" for cached-pr), then warms every
worker's cache and store connections with the full number of clients.

Targets (the specification's): p99 <= 20 ms cached and <= 100 ms uncached. The JSON line's ratio is
cached p99 / reference p99. Each run also reports the server process's CPU time per request (from
/proc, summed over the server's worker processes), which, unlike latency, does not depend on what else
the machine is running; the load average is printed with the table.

    .venv/bin/python bench/api.py [--clients 64] [--requests 20000] [--workers N]
    .venv/bin/python bench/api.py --smoke   # 4 clients, 60 requests (seeds its own store: ~1 min)
    .venv/bin/python bench/api.py --database-url URL   # an already seeded store (the smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parent.parent
TARGET_CACHED_MS, TARGET_UNCACHED_MS = 20.0, 100.0
CONSTANT = b'{"asset_symbol":"BTC/USDT","timeframe":"7d","predicted_class":"neutral"}'


async def floor_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """The reference server: reads the request body, answers a constant JSON body."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(CONSTANT)).encode())]})
    await send({"type": "http.response.body", "body": CONSTANT})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"no server on port {port} after {timeout}s")


def _healthz(port: int) -> tuple[int, str] | None:
    """(pid, generation_source) from one /healthz on a fresh connection; None if it did not answer 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            return None
        h = json.loads(body)
        return int(h["pid"]), str(h["generation_source"])
    except (OSError, ValueError, KeyError):
        return None
    finally:
        conn.close()


def wait_ready(port: int, source: str, workers: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Poll /healthz until ``workers`` distinct worker pids report ``generation_source == source``.

    Probes go out several at a time on fresh connections so that every worker accepts some; a worker's
    latest answer counts. RuntimeError naming what was seen after ``timeout`` seconds.
    """
    seen: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=2 * workers) as ex:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} while waiting for /healthz")
            for got in ex.map(lambda _: _healthz(port), range(2 * workers)):
                if got is not None:
                    seen[got[0]] = got[1]
            if sum(src == source for src in seen.values()) >= workers:
                return
            time.sleep(0.05)
    raise RuntimeError(f"/healthz on port {port}: wanted {workers} worker(s) with generation_source={source!r} "
                       f"within {timeout:g}s; saw {seen or 'no answer'}")


def _start(kind: str, database_url: str, home: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTASIS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"ENTASIS_DATABASE_URL": database_url, "ENTASIS_HOME": str(home), "PYTHONPATH": str(REPO)})
    if kind == "reference":
        cmd = [sys.executable, __file__, "--floor-server", str(port), "--workers", str(workers)]
    else:
        cmd = [str(Path(sys.executable).parent / "entasis"), "api", "serve", "--port", str(port),
               "--workers", str(workers)]
        if kind == "uncached":
            env["ENTASIS_API__CACHE_ENABLED"] = "false"
        if kind == "cached-pr":
            env["ENTASIS_API__GENERATION_LISTEN"] = "false"
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(port, proc)
        if kind != "reference":
            wait_ready(port, "store" if kind == "cached-pr" else "listen", workers, proc)
    except BaseException:
        proc.terminate()
        proc.wait(timeout=30)
        raise
    return proc, port


def _requests(bodies: list[bytes]) -> list[bytes]:
    return [(b"POST /api/v1/ml/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: " + str(len(b)).encode() + b"\r\n\r\n" + b) for b in bodies]


async def _client(port: int, reqs: list[bytes], counter: list[int], total: int, lat: list[float],
                  errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while counter[0] < total:
            i = counter[0]
            counter[0] += 1
            t = time.perf_counter()
            writer.write(reqs[i % len(reqs)])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            lat.append(time.perf_counter() - t)
            if status != 200:
                errors.append(str(status))
    finally:
        writer.close()


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its child processes (the uvicorn workers) so far
    (Linux /proc); NaN elsewhere."""
    fields = _stat(pid)
    if fields is None:
        return float("nan")
    total = int(fields[11]) + int(fields[12])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != pid:
            child = _stat(int(entry.name))
            if child is not None and int(child[1]) == pid:  # field 4 of /proc/pid/stat: the parent's pid
                total += int(child[11]) + int(child[12])
    return total / os.sysconf("SC_CLK_TCK")


def _run_loop(coro):  # type: ignore[no-untyped-def]
    """asyncio.run on uvloop when installed (uvicorn's loop): the load generator's own CPU cost stays small."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def load(port: int, reqs: list[bytes], clients: int, total: int, server_pid: int | None = None) -> dict[str, float]:
    """C closed-loop clients sending ``total`` requests; latency per request, wall-clock throughput, and the
    server's CPU microseconds per request when its pid is given."""
    async def run() -> tuple[list[float], list[str], float]:
        lat: list[float] = []
        errors: list[str] = []
        counter = [0]
        t = time.perf_counter()
        await asyncio.gather(*[_client(port, reqs, counter, total, lat, errors) for _ in range(clients)])
        return lat, errors, time.perf_counter() - t

    # warm-up: fills the cache for every key, opens the server's store connections
    _run_loop(_warm(port, reqs, clients))
    cpu0 = _cpu_s(server_pid) if server_pid else float("nan")
    lat, errors, wall = _run_loop(run())
    cpu = (_cpu_s(server_pid) - cpu0) if server_pid else float("nan")
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {"requests": len(lat), "errors": len(errors), "rps": len(lat) / wall, "p50_ms": q[49] * 1000,
            "p99_ms": q[98] * 1000, "max_ms": max(lat) * 1000, "server_cpu_us": cpu / len(lat) * 1e6}


async def _warm(port: int, reqs: list[bytes], clients: int) -> None:
    """All ``clients`` at once (every worker opens its store connections, fills its cache for every key)."""
    lat: list[float] = []
    errors: list[str] = []
    await asyncio.gather(*[_client(port, reqs, [0], 2 * len(reqs), lat, errors) for _ in range(clients)])
    if errors:
        raise RuntimeError(f"warm-up requests failed: {errors[:5]}")


def _seeded_store(home: Path) -> str:
    """An embedded server in ``home`` seeded as the API tests seed theirs."""
    sys.path.insert(0, str(REPO))
    os.environ["ENTASIS_HOME"] = str(home)
    from entasis.store import embedded

    server = embedded.ensure_running(home, preferred_port=0)
    os.environ["ENTASIS_DATABASE_URL"] = server.url
    from entasis.config import get_settings
    from entasis.store.db import connect
    from tests.unit.api import seed

    get_settings.cache_clear()
    with connect() as conn:
        seed.seed(conn)
    return server.url


def product_workers() -> int:
    """``api.workers``: what ``entasis api serve`` runs without --workers (ENTASIS_API__WORKERS overrides)."""
    sys.path.insert(0, str(REPO))
    from entasis.config import Settings

    return Settings().api.workers


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=None,
                    help="uvicorn workers of every server (default: the product default, api.workers)")
    ap.add_argument("--database-url", help="an already seeded store (default: start and seed an embedded one)")
    ap.add_argument("--smoke", action="store_true", help="4 clients, 60 requests: checks the bench runs")
    ap.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.floor_server:
        import uvicorn

        # an import string (this file as module "api" from its folder): uvicorn's workers import the app themselves
        uvicorn.run("api:floor_app", app_dir=str(Path(__file__).resolve().parent), host="127.0.0.1",
                    port=args.floor_server, workers=args.workers or 1, log_level="warning", access_log=False,
                    loop="uvloop", http="httptools")
        return 0
    if args.workers is None:
        args.workers = product_workers()
    if args.workers < 1:
        ap.error("need --workers >= 1")
    if args.smoke:
        args.clients, args.requests = 4, 60
    if args.clients < 1 or args.requests < args.clients:
        ap.error("need --clients >= 1 and --requests >= --clients")
    home = Path(tempfile.mkdtemp(prefix="entasis-bench-api-"))
    own = args.database_url is None
    url = _seeded_store(home) if own else args.database_url
    bodies = [json.dumps({"asset_symbol": a, "timeframe": f"{h}d"}).encode()
              for a in ("BTC/USDT", "ETH/USDT", "SOL/USDT") for h in (7, 14, 30)]
    reqs = _requests(bodies)
    results: dict[str, dict[str, float]] = {}
    try:
        for kind in ("reference", "cached", "cached-pr", "uncached"):
            proc, port = _start(kind, url, home, args.workers)
            try:
                results[kind] = load(port, reqs, args.clients, args.requests, proc.pid)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        if own:
            from entasis.store import embedded

            embedded.stop(home)
    load_avg = os.getloadavg()
    print(f"\nPOST /api/v1/ml/predict, {args.workers} uvicorn worker(s), {args.clients} concurrent clients, "
          f"{args.requests} requests each run, loopback; "
          f"load average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'run':<10} {'requests':>9} {'errors':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'server CPU us/req':>18}")
    for kind, r in results.items():
        print(f"{kind:<10} {r['requests']:>9.0f} {r['errors']:>7.0f} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} "
              f"{r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} {r['server_cpu_us']:>18.0f}")
    c, u, ref = results["cached"], results["uncached"], results["reference"]
    met = (c["p99_ms"] <= TARGET_CACHED_MS and u["p99_ms"] <= TARGET_UNCACHED_MS
           and c["errors"] == 0 and u["errors"] == 0)
    print(json.dumps({
        "bench": "api", "metric": round(c["p99_ms"], 3), "reference": round(ref["p99_ms"], 3),
        "ratio": round(c["p99_ms"] / ref["p99_ms"], 3),
        "target": f"p99 <= {TARGET_CACHED_MS:g} ms cached and <= {TARGET_UNCACHED_MS:g} ms uncached",
        "met": met, "workers": args.workers, "clients": args.clients, "requests": args.requests,
        "cached": {k: round(v, 3) for k, v in c.items()}, "uncached": {k: round(v, 3) for k, v in u.items()},
        "cached_per_request_generation": {k: round(v, 3) for k, v in results["cached-pr"].items()},
        "reference_run": {k: round(v, 3) for k, v in ref.items()}, "load_average_1m": round(load_avg[0], 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
