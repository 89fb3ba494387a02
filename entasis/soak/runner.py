"""Run the hourly pipeline through Airflow over simulated days with faults, then again without,
and compare every table.

Why: one fault at a time proves little about days of operation. Here the real DAGs
(``entasis_ingest``, ``entasis_features``, ``entasis_publish``, ``entasis_monitor``) run through
``dag.test()`` on every hourly interval, as the scheduler would fire them, against the simulated
exchange answering a fraction of requests with faults (:mod:`entasis.soak.faults`); the
PostgreSQL server is restarted at seeded moments while tasks run, and one ingest run is executed in
a child process that is SIGKILLed mid-task and then run again, as Airflow retries a killed task.
The same days then run fault-free into a second database cloned from the same starting point, and
every table of ``market.*``, ``features.*`` and ``ml.predictions`` is compared by checksum.

The champion: both runs must publish with the same model, so one is trained up front, once, with
the real training code (``jobs.train``) on the history before the soak starts, and seeded as
``@champion`` without the walk-forward promotion gate (which has its own boundary tests), in the
base database both runs are cloned from. MLflow's registry is copied per run, so a rollback in one
run cannot reach the other. Training inside the soak would make the comparison depend on training
being bit-reproducible, which is not what the soak is about.

Columns that record *when* something happened on the wall clock, or the faults themselves, are
not data and are left out of the comparison (listed in ``VOLATILE``); everything else must match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from entasis import jobs
from entasis.config import get_settings
from entasis.demo import DemoPlan, configure_env, init_airflow_db, load_dags
from entasis.registry.models import set_alias
from entasis.sim.exchange import start_server
from entasis.sim.market import MarketSim
from entasis.sim.venue_binance import pair_id
from entasis.soak.faults import RandomFaults
from entasis.store import embedded

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_MS = 1500  # "slow" faults answer after 2.4 s: a timeout
BACKFILL_TIMEOUT_MS = 20_000
SOAK_DAGS = ("entasis_ingest", "entasis_features", "entasis_publish", "entasis_monitor")

# Columns left out of the comparison, with why: wall-clock stamps and the bookkeeping of faults.
VOLATILE: dict[str, tuple[str, ...]] = {
    "market.ingest_state": ("last_run", "status", "message", "updated_at"),  # the last run's outcome
    "market.gaps": ("detected_at", "resolved_at"),  # wall-clock stamps
    "features.build_state": ("built_at",),
    "market.instruments": ("updated_at",),  # when the listing was last seen
}
# Tables that record the faults themselves: reported, not required equal.
FAULT_RECORDS = ("market.quarantine",)


@dataclass
class SoakPlan:
    """What to run. The defaults are ``make soak``'s: 7 days, 10% of requests faulted."""

    days: float = 7.0
    fault_rate: float = 0.1
    seed: int = 17
    start: datetime = datetime(2023, 10, 1, tzinfo=UTC)  # the base is built here; the soak runs after
    history_days: int = 490
    symbols: list[str] = field(default_factory=lambda: ["BTC/USDT", "ETH/USDT"])
    perps: list[str] = field(default_factory=lambda: ["BTC/USDT:USDT"])
    option_currencies: list[str] = field(default_factory=lambda: ["BTC"])
    db_restarts: int = 2
    kills: int = 1
    retry_delay_s: float = 2.0  # Airflow's retry delay, compressed like simulated time
    # a recognisable secret planted as the database password and the exchange API secret, so a
    # test can grep every table and log for it (the embedded server trusts loopback, so any
    # password is accepted)
    secret: str | None = None

    @property
    def hours(self) -> int:
        return round(self.days * 24)

    def base_key(self) -> str:
        d = {"start": self.start.isoformat(), "history": self.history_days, "symbols": self.symbols,
             "perps": self.perps, "options": self.option_currencies, "seed": self.seed}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class RunStats:
    """What one run (faulty or clean) went through."""

    name: str
    intervals: int = 0
    dag_runs: int = 0
    dag_runs_failed: list[str] = field(default_factory=list)
    tasks_retried: int = 0  # task instances that needed more than one try
    tasks_failed: int = 0  # task instances that ended failed after their retries
    task_tries: int = 0
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    client_retries: int = 0  # HTTP-level retries inside the exchange client
    db_restarts: list[str] = field(default_factory=list)
    kills: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class SoakReport:
    plan: dict[str, Any]
    faulty: RunStats
    clean: RunStats
    tables: dict[str, dict[str, Any]]
    diff: list[str]
    fault_records: dict[str, int]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.diff and not self.faulty.dag_runs_failed and not self.clean.dag_runs_failed

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "faulty": asdict(self.faulty), "clean": asdict(self.clean),
                "tables": self.tables, "diff": self.diff, "fault_records": self.fault_records,
                "seconds": round(self.seconds, 1), "ok": self.ok}

    def render(self) -> str:
        f, c = self.faulty, self.clean
        lines = [
            f"soak: {self.plan['days']} day(s), {f.intervals} hourly intervals per run, fault rate "
            f"{self.plan['fault_rate']}, seed {self.plan['seed']}",
            f"{'':<28}{'faulty':>12}{'clean':>12}",
            f"{'DAG runs':<28}{f.dag_runs:>12}{c.dag_runs:>12}",
            f"{'DAG runs failed':<28}{len(f.dag_runs_failed):>12}{len(c.dag_runs_failed):>12}",
            f"{'task tries':<28}{f.task_tries:>12}{c.task_tries:>12}",
            f"{'tasks failed, then retried':<28}{f.tasks_retried:>12}{c.tasks_retried:>12}",
            f"{'tasks failed for good':<28}{f.tasks_failed:>12}{c.tasks_failed:>12}",
            f"{'exchange requests':<28}{f.requests:>12}{c.requests:>12}",
            f"{'faults injected':<28}{sum(f.faults.values()):>12}{sum(c.faults.values()):>12}",
            f"{'client HTTP retries':<28}{f.client_retries:>12}{c.client_retries:>12}",
            f"{'seconds':<28}{f.seconds:>12.0f}{c.seconds:>12.0f}",
            "faults by kind: " + (", ".join(f"{k} {v}" for k, v in sorted(f.faults.items())) or "none"),
            "database restarts: " + ("; ".join(f.db_restarts) or "none"),
            "SIGKILLed tasks: " + ("; ".join(f.kills) or "none"),
            "rows recording the faults (not compared): "
            + ", ".join(f"{k} {v}" for k, v in self.fault_records.items()),
            f"tables compared: {len(self.tables)}",
        ]
        for t, d in self.tables.items():
            mark = "==" if d["equal"] else "!="
            lines.append(f"  {t:<32}{d['rows_faulty']:>9} {mark} {d['rows_clean']:<9} {d['checksum_faulty'][:12]}")
        lines.append("diff: " + ("empty" if not self.diff else "; ".join(self.diff)))
        lines.append(f"total {self.seconds:.0f}s")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------- environment


def _plan_env(plan: SoakPlan) -> dict[str, str]:
    """A small universe and quick models: the soak is about the chain under faults, not the model."""
    return {
        "ENTASIS_UNIVERSE__SYMBOLS": json.dumps(plan.symbols),
        "ENTASIS_UNIVERSE__PERP_SYMBOLS": json.dumps(plan.perps),
        "ENTASIS_UNIVERSE__OPTION_CURRENCIES": json.dumps(plan.option_currencies),
        "ENTASIS_UNIVERSE__TIMEFRAMES": json.dumps(["1d"]),
        "ENTASIS_UNIVERSE__BACKFILL_SINCE": (plan.start - timedelta(days=plan.history_days)).date().isoformat(),
        "ENTASIS_TRAIN__MODELS": json.dumps(["lgbm"]),
        "ENTASIS_TRAIN__SEQ_LEN": "10",
        "ENTASIS_TRAIN__MEMBER_PARAMS": json.dumps({"lgbm": {"n_estimators": 40, "n_jobs": 1}}),
        "ENTASIS_BACKTEST__LOOKBACK_DAYS": "60",
        "ENTASIS_BACKTEST__REFIT_DAYS": "30",
        "ENTASIS_BACKTEST__MODELS": json.dumps(["lgbm"]),
        "ENTASIS_BACKTEST__PROMOTION_WINDOW_DAYS": "60",
        "ENTASIS_BACKTEST__PROMOTION_REFIT_DAYS": "30",
        # the client's patience, compressed like simulated time: a short timeout (raised while the
        # base backfills whole pages of history), short backoff
        "ENTASIS_EXCHANGE__TIMEOUT_MS": str(RUN_TIMEOUT_MS),
        "ENTASIS_EXCHANGE__BACKOFF_BASE_S": "0.05",
        "ENTASIS_EXCHANGE__BACKOFF_MAX_S": "2",
        "ENTASIS_EXCHANGE__MAX_RETRIES": "6",
    }


def _configure(home: Path, plan: SoakPlan) -> None:
    configure_env(home, DemoPlan(start=plan.start - timedelta(days=plan.history_days), train_at=plan.start,
                                  now=plan.start, symbols=plan.symbols, perps=plan.perps, seed=plan.seed,
                                  env=_plan_env(plan)))
    plugins = str(REPO / "plugins")
    if plugins not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (plugins, os.environ.get("PYTHONPATH")) if p)


def _use_db(url: str, tracking: Path | None) -> None:
    os.environ["ENTASIS_DATABASE_URL"] = url
    if tracking is not None:
        os.environ["ENTASIS_MLFLOW__TRACKING_URI"] = f"sqlite:///{tracking}"
    get_settings.cache_clear()


def _db_url(admin_url: str, name: str, password: str | None = None) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = conninfo_to_dict(admin_url)
    info["dbname"] = name
    if password:
        info["password"] = password
    return make_conninfo("", **info)


def _clone(admin_url: str, source: str, target: str, password: str | None = None) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(target), sql.Identifier(source)))
    return _db_url(admin_url, target, password)


# ------------------------------------------------------------------------------------- DAG driving


class _RetryCounter(logging.Handler):
    """Counts the exchange client's retry warnings (one per HTTP-level retry)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retry" in record.getMessage():
            self.count += 1


def _load_dags(plan: SoakPlan) -> dict[str, Any]:
    dags = load_dags()
    for dag_id in (*SOAK_DAGS, "entasis_train"):
        for t in dags[dag_id].tasks:
            # simulated time runs fast; so must Airflow's retry delay (the retry count stays the DAG's)
            t.retry_delay = timedelta(seconds=plan.retry_delay_s)
            t.retry_exponential_backoff = 0
    return dags


def _run_dag(dags: dict[str, Any], dag_id: str, at: datetime, stats: RunStats) -> bool:
    from airflow.utils.state import TaskInstanceState

    dr = dags[dag_id].test(logical_date=at)
    stats.dag_runs += 1
    ok = "success" in str(getattr(dr, "state", ""))
    for ti in dr.get_task_instances():
        tries = int(ti.try_number or 0)
        stats.task_tries += tries
        if tries > 1:
            stats.tasks_retried += 1
        if ti.state == TaskInstanceState.FAILED:
            stats.tasks_failed += 1
    if not ok:
        stats.dag_runs_failed.append(f"{dag_id} {at:%Y-%m-%d %H:%M}")
        log.warning("soak: %s at %s ended %s", dag_id, at, getattr(dr, "state", "?"))
    return ok


def _run_killed(dag_id: str, at: datetime, server: Any, after_requests: int, stats: RunStats) -> None:
    """Run one DAG run in a child process and SIGKILL it once it has made ``after_requests``
    exchange requests (so a task is mid-flight), as a worker dies under a task."""
    before = server.calls("*")
    child = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "entasis.soak.child", dag_id, at.isoformat()],
        env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while child.poll() is None and time.monotonic() < deadline:
        if server.calls("*") - before >= after_requests:
            break
        time.sleep(0.01)
    made = server.calls("*") - before
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        stats.kills.append(f"{dag_id} {at:%Y-%m-%d %H:%M} SIGKILLed after {made} exchange requests")
    else:
        stats.kills.append(f"{dag_id} {at:%Y-%m-%d %H:%M} finished (rc {child.returncode}) before the kill")


class _Restarter:
    """Restarts the embedded server ``delay_s`` after being armed, while tasks run (fast shutdown:
    open connections are cut, as when a database fails over)."""

    def __init__(self, pg_home: Path, port: int) -> None:
        self.pg_home, self.port = pg_home, port
        self._threads: list[threading.Thread] = []

    def arm(self, delay_s: float, label: str, stats: RunStats, database: str = "") -> None:
        def go() -> None:
            time.sleep(delay_s)
            waited, connected = self._wait_for_client(database)
            t0 = time.perf_counter()
            embedded.stop(self.pg_home)
            embedded.ensure_running(self.pg_home, preferred_port=self.port)
            who = "a task connected" if connected else "NO task connected (the interval's runs had ended)"
            stats.db_restarts.append(f"{label} +{delay_s + waited:.1f}s, {who} "
                                     f"(down {time.perf_counter() - t0:.1f}s)")

        th = threading.Thread(target=go, name="soak-db-restart", daemon=True)
        th.start()
        self._threads.append(th)

    def _wait_for_client(self, database: str, timeout_s: float = 60.0) -> tuple[float, bool]:
        server = embedded.status(self.pg_home)
        if server is None or not database:
            return 0.0, False
        return wait_for_client(server.admin_url, database, timeout_s)

    def join(self) -> None:
        for th in self._threads:
            th.join()


def wait_for_client(admin_url: str, database: str, timeout_s: float = 60.0) -> tuple[float, bool]:
    """(seconds waited, whether a client held a connection to ``database`` within ``timeout_s``): a
    restart is meant to cut a task mid-flight, and the report says so only when one really was."""
    import psycopg

    t0 = time.monotonic()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() - t0 < timeout_s:
            n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                             "AND backend_type = 'client backend'", (database,)).fetchone()
            if n and n[0]:
                return time.monotonic() - t0, True
            time.sleep(0.01)
    return time.monotonic() - t0, False


def _schedule(plan: SoakPlan) -> list[tuple[datetime, list[tuple[str, datetime]]]]:
    """Each hourly interval and the DAG runs it fires, in order, as the scheduler would."""
    out = []
    for h in range(1, plan.hours + 1):
        tick = plan.start + timedelta(hours=h, minutes=5)
        runs = [("entasis_ingest", tick), ("entasis_features", tick)]  # features: on the candles Asset
        if tick.hour % 6 == 0:
            runs.append(("entasis_publish", tick.replace(minute=15)))
        if tick.hour == 3:
            runs.append(("entasis_monitor", tick.replace(minute=30)))
        out.append((tick, runs))
    return out


def _revisions(plan: SoakPlan) -> dict[int, tuple[str, datetime]]:
    """Market events both runs see: at interval i the venue revises the last closed daily bar of a
    symbol (its close moves 1%), as exchanges silently correct candles."""
    rng = random.Random(plan.seed * 7919 + 1)
    out = {}
    for _ in range(max(1, int(plan.days))):
        i = rng.randrange(1, plan.hours + 1)
        tick = plan.start + timedelta(hours=i, minutes=5)
        bar = tick.replace(hour=0, minute=0) - timedelta(days=1)
        out[i] = (rng.choice(plan.symbols), bar)
    return out


def run_pipeline(plan: SoakPlan, dags: dict[str, Any], market: Any, server: Any, stats: RunStats, *,
                 faulty: bool, restarter: _Restarter | None) -> None:
    """Drive every interval of the plan; with ``faulty``, faults, restarts and kills as seeded."""
    rng = random.Random(plan.seed)
    sched = _schedule(plan)
    restart_at = sorted(rng.sample(range(len(sched)), min(plan.db_restarts, len(sched)))) if faulty else []
    kill_at = sorted(rng.sample(range(len(sched)), min(plan.kills, len(sched)))) if faulty else []
    revisions = _revisions(plan)
    retries = _RetryCounter()
    logging.getLogger("entasis.collect.client").addHandler(retries)
    t0 = time.perf_counter()
    try:
        for i, (tick, runs) in enumerate(sched):
            market.now = tick
            if i + 1 in revisions:
                sym, bar = revisions[i + 1]
                server.faults.add("binance:/api/v3/klines", "revise", times=None, symbol=pair_id(sym), ts=bar)
            if i in restart_at and restarter is not None:
                restarter.arm(rng.uniform(0.3, 4.0), f"interval {tick:%Y-%m-%d %H:%M}", stats,
                              database=f"soak_{stats.name}")
            for dag_id, at in runs:
                if i in kill_at and dag_id == "entasis_ingest":
                    _run_killed(dag_id, at, server, rng.randint(2, 12), stats)
                _run_dag(dags, dag_id, at, stats)
            stats.intervals += 1
            if restarter is not None and i in restart_at:
                restarter.join()
    finally:
        logging.getLogger("entasis.collect.client").removeHandler(retries)
    stats.client_retries = retries.count
    stats.seconds = time.perf_counter() - t0


# ------------------------------------------------------------------------------------- comparison


def compared_tables(conn: Any) -> list[str]:
    rows = conn.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND (table_schema IN ('market', 'features') "
        "OR (table_schema = 'ml' AND table_name = 'predictions')) ORDER BY 1"
    ).fetchall()
    return [str(r[0]) for r in rows if not str(r[0]).startswith("features._")]  # staging tables of a build


def table_digest(conn: Any, table: str) -> tuple[int, str]:
    """(rows, md5 of every compared column of every row in a fixed order)."""
    from psycopg import sql

    schema, name = table.split(".")
    cols = [str(r[0]) for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
        "ORDER BY ordinal_position", (schema, name)).fetchall()]
    keep = [c for c in cols if c not in VOLATILE.get(table, ())]
    where = sql.SQL("WHERE resolved_at IS NULL") if table == "market.gaps" else sql.SQL("")
    row_sql = sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in keep))
    q = sql.SQL("SELECT count(*), md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) "
                "FROM (SELECT {row} AS r FROM {tbl} {where}) s").format(
        row=row_sql, tbl=sql.Identifier(schema, name), where=where)
    row = conn.execute(q).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, "")


def compare(url_a: str, url_b: str) -> tuple[dict[str, dict[str, Any]], list[str], dict[str, int]]:
    import psycopg

    tables: dict[str, dict[str, Any]] = {}
    diff: list[str] = []
    records: dict[str, int] = {}
    with psycopg.connect(url_a) as a, psycopg.connect(url_b) as b:
        names = sorted(set(compared_tables(a)) | set(compared_tables(b)))
        for t in names:
            if t in FAULT_RECORDS:
                records[t] = table_digest(a, t)[0]
                continue
            (na, ca), (nb, cb) = table_digest(a, t), table_digest(b, t)
            tables[t] = {"rows_faulty": na, "rows_clean": nb, "checksum_faulty": ca, "checksum_clean": cb,
                         "equal": ca == cb}
            if ca != cb:
                diff.append(f"{t}: {na} rows (faulty) vs {nb} (clean), checksums differ")
    return tables, diff, records


# ------------------------------------------------------------------------------------- the soak


def _seed_champions(until: datetime) -> None:
    """Train with the real training code on the history before the soak and make each model the
    @champion directly: the promotion gate (walk-forward against the baselines) is not what the
    soak tests, and both runs must serve the very same model."""
    for t in jobs.train(until=until):
        set_alias(str(t["model_name"]), "champion", str(t["version"]))


def _build_base(plan: SoakPlan, admin_url: str, dags: dict[str, Any], market: Any, say: Any) -> str:
    """The starting point both runs clone: history ingested, features built, a champion trained."""
    import psycopg

    name = f"soak_base_{plan.base_key()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    home = Path(os.environ["ENTASIS_HOME"])
    tracking = home / f"{name}.mlflow.db"
    if exists and tracking.exists():
        with psycopg.connect(_db_url(admin_url, name)) as conn:
            done = conn.execute("SELECT value FROM public.entasis_meta WHERE key = 'soak_base'").fetchone()
        if done:
            say(f"base: reusing {name}")
            return name
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    os.environ["ENTASIS_EXCHANGE__TIMEOUT_MS"] = str(BACKFILL_TIMEOUT_MS)
    _use_db(_db_url(admin_url, name, plan.secret), tracking)
    stats = RunStats("base")
    at = plan.start + timedelta(minutes=5)
    market.now = at
    t0 = time.perf_counter()
    for dag_id, when in (("entasis_ingest", at), ("entasis_features", at)):
        if not _run_dag(dags, dag_id, when, stats):
            raise RuntimeError(f"building the soak's base failed at {dag_id} {when}; see the task log above")
    _seed_champions(plan.start)
    if not _run_dag(dags, "entasis_publish", plan.start, stats):
        raise RuntimeError("building the soak's base failed at its first publish; see the task log above")
    with psycopg.connect(_db_url(admin_url, name), autocommit=True) as conn:
        conn.execute("INSERT INTO public.entasis_meta (key, value) VALUES ('soak_base', 'complete')")
    os.environ["ENTASIS_EXCHANGE__TIMEOUT_MS"] = str(RUN_TIMEOUT_MS)
    say(f"base: {name} built at {plan.start:%Y-%m-%d} in {time.perf_counter() - t0:.0f}s "
        "(history, features, champion trained and seeded)")
    return name


def run_soak(plan: SoakPlan | None = None, home: Path | None = None, say: Any = print) -> SoakReport:
    """Run the soak (faulty, then clean) and compare; see the module docstring."""
    plan = plan or SoakPlan()
    home = (home or Path(os.environ.get("ENTASIS_HOME", ".entasis")) / "soak").resolve()
    home.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    _configure(home, plan)
    if plan.secret:
        os.environ["ENTASIS_EXCHANGE__API_KEY"] = "soak-api-key"
        os.environ["ENTASIS_EXCHANGE__API_SECRET"] = plan.secret
    pg_home = home / "pg"
    server_pg = embedded.ensure_running(pg_home, preferred_port=0)
    admin = server_pg.admin_url
    market = MarketSim(seed=plan.seed, symbols=plan.symbols + plan.perps,
                       start=plan.start - timedelta(days=plan.history_days),
                       end=plan.start + timedelta(days=plan.days + 2), now=plan.start)
    sim = start_server(market=market, option_currencies=tuple(plan.option_currencies))
    os.environ["ENTASIS_SIM_URL"] = sim.url
    get_settings.cache_clear()
    try:
        init_airflow_db(home)
        dags = _load_dags(plan)
        base = _build_base(plan, admin, dags, market, say)
        base_tracking = home / f"{base}.mlflow.db"
        urls: dict[str, str] = {}
        stats: dict[str, RunStats] = {}
        for name in ("faulty", "clean"):
            faulty = name == "faulty"
            urls[name] = _clone(admin, base, f"soak_{name}", plan.secret)
            tracking = home / f"soak_{name}.mlflow.db"
            shutil.copyfile(base_tracking, tracking)
            _use_db(urls[name], tracking)
            injector = RandomFaults(plan.fault_rate if faulty else 0.0, seed=plan.seed)
            sim.faults = injector
            sim.reset_calls()
            st = RunStats(name)
            say(f"{name} run: {plan.hours} hourly intervals from {plan.start:%Y-%m-%d}")
            restarter = _Restarter(pg_home, server_pg.port) if faulty else None
            run_pipeline(plan, dags, market, sim, st, faulty=faulty, restarter=restarter)
            st.requests, st.faults = injector.requests, dict(injector.injected)
            stats[name] = st
            say(f"{name} run: {st.dag_runs} DAG runs, {len(st.dag_runs_failed)} failed, {st.seconds:.0f}s")
        tables, diff, records = compare(urls["faulty"], urls["clean"])
    finally:
        sim.stop()
        embedded.stop(pg_home)
    plan_d = plan_dict(plan)
    report = SoakReport(plan_d, stats["faulty"], stats["clean"], tables, diff, records,
                        time.perf_counter() - t_all)
    return report


def plan_dict(plan: SoakPlan) -> dict[str, Any]:
    """The plan as the report shows it; a planted secret never goes in (the secret check found it
    in the report file first)."""
    d = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(plan).items() if k != "secret"}
    d["secret_planted"] = plan.secret is not None
    return d


def fault_counts(report: SoakReport) -> Counter[str]:
    return Counter(report.faulty.faults)
