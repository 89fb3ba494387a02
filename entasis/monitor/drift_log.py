"""Keep the monitor's per-feature drift (PSI) in ``ml.feature_drift`` so the serving API can export it.

The monitor computes PSI for every feature at each run; only a broad shift triggers a retrain, but
Prometheus alerts and the dashboard need every value. The write is an idempotent upsert keyed
(as_of, timeframe, feature): re-running a monitor interval leaves the table identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from entasis.domain import utc_datetime
from entasis.store.upsert import upsert_frame

if TYPE_CHECKING:
    import psycopg

DRIFT_TABLE = "ml.feature_drift"
DRIFT_KEY = ["as_of", "timeframe", "feature"]


def record_feature_drift(conn: psycopg.Connection, as_of: datetime, timeframe: str,
                         rows: Sequence[dict[str, Any]]) -> int:
    """Upsert one row per feature ({feature, psi, n_reference, n_current}); NaN PSI is stored as NULL."""
    import pandas as pd

    as_of = utc_datetime(as_of, "as_of")
    if not rows:
        return 0
    missing = {"feature", "psi", "n_reference", "n_current"} - set(rows[0])
    if missing:
        raise ValueError(f"drift rows lack {sorted(missing)}")
    df = pd.DataFrame([{
        "as_of": as_of, "timeframe": timeframe, "feature": str(r["feature"]),
        "psi": None if r["psi"] is None or not math.isfinite(float(r["psi"])) else float(r["psi"]),
        "n_reference": int(r["n_reference"]), "n_current": int(r["n_current"]),
    } for r in rows])
    df["as_of"] = pd.to_datetime(df["as_of"], utc=True)
    df["psi"] = df["psi"].astype("float64")
    res = upsert_frame(conn, DRIFT_TABLE, df, DRIFT_KEY)
    return res.inserted + res.updated
