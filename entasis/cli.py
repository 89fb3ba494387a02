"""The ``entasis`` command line.

Core commands live here (db, config); each stage adds its own from ``entasis/<stage>/cli.py``
through a ``register(app)`` function, so stages never edit this file. Heavy imports stay inside
command bodies to keep ``entasis --help`` fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from entasis.domain import CLASS_NAMES

app = typer.Typer(help="Entasis Engine: batch ML pipeline for crypto markets.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="The PostgreSQL store.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
console = Console()

STAGES = ("sim", "collect", "features", "models", "backtest", "options", "publish", "registry", "risk", "monitor",
          "signals", "api", "soak", "deploy")


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code=1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (a no-op when up to date)."""
    import psycopg

    from entasis.config import ConfigError
    from entasis.store.db import database_url
    from entasis.store.migrate import upgrade

    try:
        url = database_url()
        with psycopg.connect(url, autocommit=True) as conn:
            applied = upgrade(conn)
    except ConfigError as e:
        _fail(str(e))
        return
    if applied:
        console.print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        console.print("schema up to date")


@db_app.command("status")
def db_status() -> None:
    """Tables, row counts and whether TimescaleDB is in use."""
    from entasis.store.db import connect
    from entasis.store.status import store_status

    with connect() as conn:
        st = store_status(conn)
    console.print(f"server: PostgreSQL {st['server_version']}  storage: [bold]{st['storage_path']}[/]  "
                  f"migrations: {st['migrations']}")
    table = Table("table", "rows", "kind")
    for t in st["tables"]:
        table.add_row(t["name"], f"{t['rows']:,}", t["kind"])
    console.print(table)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server cleanly (no effect with an external database)."""
    from entasis.config import get_settings
    from entasis.store import embedded

    s = get_settings()
    if s.database_url:
        console.print("using an external database (ENTASIS_DATABASE_URL); nothing to stop")
        return
    console.print("stopped" if embedded.stop(s.home) else "embedded server was not running")


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration, secrets masked."""
    from entasis.config import ConfigError, get_settings

    try:
        s = get_settings()
    except ConfigError as e:
        _fail(str(e))
        return
    console.print_json(json.dumps(s.masked(), default=str))


@app.command("demo")
def demo(
    verbose: bool = typer.Option(False, "--verbose", "-v",
                                 help="show Airflow's task logs here instead of in the log file"),
) -> None:
    """Offline demo of the whole pipeline: embedded PostgreSQL, simulated exchange, every DAG via dag.test()."""
    from entasis.demo import log_to_file, run_demo

    home = Path(os.environ.get("ENTASIS_HOME", ".entasis")).resolve()
    log_path = home / "logs" / "demo.log"
    if verbose:
        res = run_demo(say=console.print)
    else:
        console.print(f"full log (Airflow task logs, Spark, training): {log_path}")
        with log_to_file(log_path) as out:
            say_to = Console(file=out, width=console.width)
            try:
                res = run_demo(say=say_to.print)
            except Exception as e:
                say_to.print(f"[bold red]demo failed:[/] {e}")
                say_to.print(f"the end of {log_path} says what happened:")
                say_to.print("".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-40:]))
                raise typer.Exit(1) from None
    wide = Console(width=max(console.width, 180))  # the tables are wide; don't squeeze them into 80 columns
    t = Table("asset", "h", "as_of", "model", "class", "p_bear", "p_neut", "p_bull", "conf", "level", "target",
              "actual", "correct", title="ml.predictions (latest first)")
    names = dict(enumerate(CLASS_NAMES))
    for r in res["predictions"]:
        t.add_row(r[0], str(r[1]), f"{r[2]:%Y-%m-%d}", str(r[3]), names.get(r[4], "?"), str(r[5]), str(r[6]),
                  str(r[7]), str(r[8]), r[9], f"{r[10]:%Y-%m-%d}", "" if r[11] is None else names[r[11]],
                  "" if r[12] is None else str(r[12]))
    wide.print(t)
    st = Table(*res["status_columns"], title="ml.model_status")
    for r in res["status"]:
        st.add_row(*["" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)) for v in r])
    wide.print(st)
    wide.print(f"backtest report: [bold]{res['report']}[/]")
    if not verbose:
        wide.print(f"full log: {log_path}")


def _register_stages() -> None:
    for stage in STAGES:
        name = f"entasis.{stage}.cli"
        if importlib.util.find_spec(f"entasis.{stage}") is None or importlib.util.find_spec(name) is None:
            continue
        mod = importlib.import_module(name)
        mod.register(app)


_register_stages()


def main() -> None:
    from entasis.config import ConfigError

    try:
        app()
    except ConfigError as e:
        console.print(f"[bold red]error:[/] {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
