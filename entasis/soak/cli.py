"""``entasis soak``: the pipeline over simulated days under faults, compared with a fault-free run."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("soak")
    def soak(
        days: float = typer.Option(7.0, help="Simulated days of hourly intervals."),
        fault_rate: float = typer.Option(0.1, help="Share of exchange requests that get a fault."),
        seed: int = typer.Option(17, help="Seed of faults, restarts and the kill."),
        home: Path | None = typer.Option(None, help="Working folder (default: ENTASIS_HOME/soak)."),  # noqa: B008
        json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON."),  # noqa: B008
        plant_secret_env: str | None = typer.Option(
            None, help="Name of an env var holding a recognisable secret to plant as the DB password and "
                       "exchange API secret, so a check can grep every table, file and log for it."),
    ) -> None:
        """Run ingest/features/publish/monitor through dag.test() with faults, DB restarts and a
        SIGKILL, then fault-free, and compare every table; exit 1 unless the diff is empty."""
        import os

        from entasis.soak.runner import SoakPlan, run_soak

        secret = os.environ.get(plant_secret_env) if plant_secret_env else None
        report = run_soak(SoakPlan(days=days, fault_rate=fault_rate, seed=seed, secret=secret), home=home,
                          say=lambda m: typer.echo(m, err=True))
        typer.echo(report.render())
        if json_out is not None:
            json_out.write_text(json.dumps(report.to_dict(), indent=2, default=str))
        if not report.ok:
            raise typer.Exit(code=1)
