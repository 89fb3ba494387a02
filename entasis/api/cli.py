"""``entasis api serve``: the prediction API, dashboard and /metrics under uvicorn."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    api = typer.Typer(help="Serving: REST API, analyst dashboard and Prometheus metrics.", no_args_is_help=True)
    app.add_typer(api, name="api")

    @api.command("serve")
    def serve(
        host: str = typer.Option(None, help="Interface to bind (default api.host, 127.0.0.1)."),
        port: int = typer.Option(None, help="TCP port (default api.port, 8000)."),
        workers: int = typer.Option(1, min=1, help="uvicorn worker processes (metrics are per process)."),
        log_level: str = typer.Option("warning", help="uvicorn log level."),
        graceful_s: int = typer.Option(5, help="Seconds to let in-flight requests finish on shutdown."),
    ) -> None:
        """Serve /api/v1/ml/*, the dashboard at / and /metrics; reads ml.* as entasis_reader."""
        import uvicorn

        from entasis.config import get_settings

        s = get_settings()
        uvicorn.run("entasis.api.app:create_app", factory=True, host=host or s.api.host, port=port or s.api.port,
                    workers=workers, log_level=log_level, access_log=False, loop="uvloop", http="httptools",
                    timeout_graceful_shutdown=graceful_s)
