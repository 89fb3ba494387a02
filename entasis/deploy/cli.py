"""``entasis airflow up``: the Airflow stack of ``make airflow`` (PostgreSQL metadata, LocalExecutor)."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    af = typer.Typer(help="Airflow on PostgreSQL with the LocalExecutor.", no_args_is_help=True)
    app.add_typer(af, name="airflow")

    @af.command("up")
    def up(
        port: int = typer.Option(8080, help="API server / UI port on 127.0.0.1."),
        home: str = typer.Option("", help="AIRFLOW_HOME (default: $AIRFLOW_HOME or ENTASIS_HOME/airflow)."),
    ) -> None:
        """Start api-server, scheduler, dag-processor and triggerer; stop them all on Ctrl-C."""
        import signal
        import time

        from entasis.config import get_settings
        from entasis.deploy.airflow_stack import AirflowStack, StackError
        from entasis.store.db import database_url, ensure_schema

        s = get_settings()
        af_home = Path(home) if home else Path(os.environ.get("AIRFLOW_HOME") or Path(s.home) / "airflow")
        store = database_url(s)
        ensure_schema(store)
        stack = AirflowStack(home=af_home.resolve(), store_url=store, port=port)
        typer.echo("starting Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor, "
                   "PostgreSQL metadata) ...")
        try:
            stack.start()
        except StackError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"Airflow UI:  {stack.url}")
        typer.echo(f"login:       admin / {stack.password()}   (kept in {stack.password_file})")
        typer.echo(f"logs:        {af_home.resolve() / 'logs'}")
        typer.echo("DAGs start paused: unpause them in the UI. Ctrl-C stops everything.")
        stopping = False

        def _stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            while not stopping:
                dead = [c for c, p in stack.procs.items() if p.poll() is not None]
                if dead:
                    typer.echo(f"error: airflow {', '.join(dead)} exited; see {af_home.resolve() / 'logs'}", err=True)
                    raise typer.Exit(1)
                time.sleep(1)
        finally:
            stack.stop()
