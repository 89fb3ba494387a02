"""Real servers for the API tests: `entasis api serve` (uvicorn) and Debian's redis-server, on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from entasis.deploy.airflow_stack import free_port

REPO = Path(__file__).resolve().parents[3]


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def redis_binary() -> str | None:
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server (no persistence) on a free loopback port; yields its URL."""
    import pytest

    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server not installed (make sysdeps installs Debian's redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--protected-mode", "yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, "redis-server", timeout=20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


@contextmanager
def api_server(database_url: str, *, redis_url: str | None = None, home: Path | None = None,
               extra_env: dict[str, str] | None = None, workers: int = 1) -> Iterator[str]:
    """`entasis api serve --workers N` on a free loopback port against ``database_url`` (read as entasis_reader).
    One worker unless asked: tests that follow one process's state (its listener sessions) need a single one."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTASIS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"ENTASIS_DATABASE_URL": database_url, "PYTHONPATH": str(REPO)})
    if home is not None:
        env["ENTASIS_HOME"] = str(home)
    if redis_url:
        env["ENTASIS_REDIS_URL"] = redis_url
    env.update(extra_env or {})
    exe = Path(sys.executable).parent / "entasis"
    proc = subprocess.Popen([str(exe), "api", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", str(workers)],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_port(port, proc, "entasis api serve")
        yield base
    finally:
        _stop(proc)
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        if "Traceback" in out:
            print(out[-4000:])  # shown by pytest on failure


def get(base: str, path: str, **kw: object) -> httpx.Response:
    return httpx.get(base + path, timeout=30, **kw)  # type: ignore[arg-type]


def post(base: str, path: str, **kw: object) -> httpx.Response:
    return httpx.post(base + path, timeout=30, **kw)  # type: ignore[arg-type]
