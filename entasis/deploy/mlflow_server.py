"""A shared MLflow tracking server: PostgreSQL backend store, S3 artifacts (MinIO in docker/, moto in tests).

Production workers point ``ENTASIS_MLFLOW_TRACKING_URI`` at it and ``ENTASIS_MLFLOW__ARTIFACT_ROOT`` at
the same bucket the server serves (``--artifacts-destination``), so training on one worker and
publishing on another see the same registered versions and ``@champion``. docker/docker-compose.yml
runs the same command line as :func:`server_command`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


class MlflowServerError(RuntimeError):
    """The server did not start or answer; the message points at its log."""


def server_command(*, backend_store_uri: str, artifacts_destination: str, host: str = "127.0.0.1",
                   port: int = 5000, allowed_hosts: str | None = None, workers: int = 1) -> list[str]:
    """``mlflow server`` with a database backend store and proxied S3 artifacts."""
    args = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", host, "--port", str(port),
            "--backend-store-uri", backend_store_uri, "--artifacts-destination", artifacts_destination,
            "--serve-artifacts", "--workers", str(workers)]
    if allowed_hosts:
        args += ["--allowed-hosts", allowed_hosts]
    return args


@dataclass
class MlflowServer:
    """``mlflow server`` as a child process, stopped with its whole process group."""

    backend_store_uri: str
    artifacts_destination: str
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 120) -> MlflowServer:
        import requests

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = server_command(backend_store_uri=self.backend_store_uri,
                             artifacts_destination=self.artifacts_destination, host=self.host, port=self.port)
        self.proc = subprocess.Popen(cmd, env={**os.environ, **self.env}, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise MlflowServerError(f"mlflow server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise MlflowServerError(f"mlflow server did not answer within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
