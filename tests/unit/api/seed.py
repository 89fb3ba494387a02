"""Seed a database for the API tests through the pipeline's own writes.

Candles and features come from tests/unit/publish/market_data.py (seeded simulator, real feature code);
predictions are written by ``publish_predictions`` with tiny real models, outcomes by
``reconcile_outcomes`` and champions by the publisher's ``record_from``. No row is inserted by hand.
Two champion versions serve in turn, so the champion history has a change (the second is unproven).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.unit.publish import market_data as md

FIRST = datetime(2023, 4, 6, 6, 0, tzinfo=UTC)
SWITCH = datetime(2023, 6, 10, 6, 0, tzinfo=UTC)  # from here on version 4 (unproven) serves
LAST = datetime(2023, 7, 1, 6, 0, tzinfo=UTC)
RECONCILE_AT = datetime(2023, 7, 30, tzinfo=UTC)
STEP = timedelta(days=16)
ASSETS = md.SYMBOLS
HORIZONS = md.HORIZONS


def _loader(version: str, unproven: bool) -> Any:
    base = {h: md.champion("lgbm", h) for h in HORIZONS}
    champs = {h: dataclasses.replace(c, version=version, unproven=unproven,
                                     beats_baseline=not unproven, test_accuracy=0.41 if not unproven else 0.36)
              for h, c in base.items()}
    return lambda asset, horizon: champs.get(horizon)


def publish_schedule() -> list[datetime]:
    out, t = [], FIRST
    while t <= LAST:
        out.append(t)
        t += STEP
    return out


def load_market(conn: Any) -> None:
    """md.load_market, writing only the feature columns this database's features.bars has (a feature
    added to the code before its migration must not break the API tests)."""
    from entasis.store.market import write_candles
    from entasis.store.upsert import upsert_frame

    cols = [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'features' "
        "AND table_name = 'bars'").fetchall()]
    b = md.bars()
    write_candles(conn, md.candles())
    upsert_frame(conn, "features.bars", b[[c for c in b.columns if c in cols]],
                 ["exchange", "symbol", "timeframe", "ts"])


def seed(conn: Any) -> dict[str, Any]:
    """Market data, a publish every STEP days (6), then reconciliation; returns what was written."""
    from entasis.publish.predictions import publish_predictions
    from entasis.publish.reconcile import reconcile_outcomes

    load_market(conn)
    v3, v4 = _loader("3", False), _loader("4", True)
    published = 0
    for t in publish_schedule():
        s = publish_predictions(conn, as_of=t, assets=ASSETS, horizons=HORIZONS, loader=v3 if t < SWITCH else v4)
        published += s.published
    reconciled = reconcile_outcomes(conn, now=RECONCILE_AT)
    return {"published": published, "reconciled": reconciled}


SEEDED_DB = "entasis_api_seeded"


def _swap_db(url: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = conninfo_to_dict(url)
    info["dbname"] = name
    return make_conninfo("", **info)


def seeded_clone(admin_url: str, template: str, name: str) -> str:
    """A fresh database ``name`` cloned from a seeded one (seeded once per server: the seed takes a while)."""
    import fcntl
    import tempfile
    from pathlib import Path

    import psycopg

    port = psycopg.conninfo.conninfo_to_dict(admin_url).get("port")
    lock = Path(tempfile.gettempdir()) / f"entasis_api_seed_{port}.lock"
    with open(lock, "w") as fh:  # noqa: PTH123
        fcntl.flock(fh, fcntl.LOCK_EX)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            done = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                                (SEEDED_DB,)).fetchone()
            if not done or done[0] != "seeded":
                conn.execute(f'DROP DATABASE IF EXISTS "{SEEDED_DB}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{SEEDED_DB}" TEMPLATE "{template}"')
                with psycopg.connect(_swap_db(admin_url, SEEDED_DB)) as sconn, sconn.transaction():
                    seed(sconn)
                conn.execute(f"COMMENT ON DATABASE \"{SEEDED_DB}\" IS 'seeded'")
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{SEEDED_DB}"')
    return _swap_db(admin_url, name)


def drop(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def module_store(admin_url: str, template: str, prefix: str) -> Iterator[str]:
    """A database of a test module's own, cloned from the seeded template and dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = seeded_clone(admin_url, template, name)
    try:
        yield url
    finally:
        drop(admin_url, name)
