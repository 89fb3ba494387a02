"""``entasis api serve``: the prediction API, dashboard and /metrics under uvicorn."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import typer

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir(workers: int) -> tuple[str | None, bool]:
    """Where the workers' metric files go: (dir, whether this call made it). ``PROMETHEUS_MULTIPROC_DIR`` when
    set (its ``*.db`` files from an earlier run are removed: they would be summed into this run's counters),
    else a fresh temporary one for several workers, none for one worker (plain in-process metrics)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return given, False
    if workers > 1:
        return tempfile.mkdtemp(prefix="entasis-api-metrics-"), True
    return None, False


def register(app: typer.Typer) -> None:
    api = typer.Typer(help="Serving: REST API, analyst dashboard and Prometheus metrics.", no_args_is_help=True)
    app.add_typer(api, name="api")

    @api.command("serve")
    def serve(
        host: str = typer.Option(None, help="Interface to bind (default api.host, 127.0.0.1)."),
        port: int = typer.Option(None, help="TCP port (default api.port, 8000)."),
        workers: int = typer.Option(None, min=1, help="uvicorn worker processes (default api.workers); /metrics "
                                    "merges them through PROMETHEUS_MULTIPROC_DIR."),
        log_level: str = typer.Option("warning", help="uvicorn log level."),
        graceful_s: int = typer.Option(5, help="Seconds to let in-flight requests finish on shutdown."),
    ) -> None:
        """Serve /api/v1/ml/*, the dashboard at / and /metrics; reads ml.* as entasis_reader."""
        import uvicorn

        from entasis.config import get_settings

        s = get_settings()
        n = workers or s.api.workers
        path, made = metrics_dir(n)
        if path is not None:
            os.environ[MULTIPROC_ENV] = path  # before any worker imports prometheus_client
        try:
            uvicorn.run("entasis.api.app:create_app", factory=True, host=host or s.api.host, port=port or s.api.port,
                        workers=n, log_level=log_level, access_log=False, loop="uvloop", http="httptools",
                        timeout_graceful_shutdown=graceful_s)
        finally:
            if made and path is not None:
                shutil.rmtree(path, ignore_errors=True)
