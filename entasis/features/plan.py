"""What a features build does and the SQL that reads its inputs: the plan both engines share.

:func:`plan_build` decides per (exchange, symbol, timeframe) whether to recompute the whole series,
only its tail, or nothing (see :mod:`entasis.features.build`); :func:`candles_sql`,
:func:`extras_sql` and :func:`cross_inputs_sql` are the reads of a plan, as query text because
Spark's JDBC reader takes a query string. The pandas engine (:mod:`entasis.features.build`) and the
Spark job (:mod:`entasis.features.spark_job`) both import this module and not each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from entasis.config import get_settings
from entasis.features import catalog
from entasis.features.compute import Extras, LabelParams
from entasis.features.cross import INPUTS
from entasis.features.joins import EXTRAS_LOOKBACK_DAYS
from entasis.features.store import BARS_TABLE, OPTION_FEATURES_TABLE, table_columns
from entasis.store.upsert import table_ident

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from entasis.config import Settings

log = logging.getLogger(__name__)

GroupKey = tuple[str, str, str]


EXTRA_COLUMNS = ["exchange", "symbol", "timeframe", "kind", "ts", "v1", "v2", "v3", "v4", "v5", "v6"]


@dataclass
class GroupPlan:
    """What the build does for one series and where its inputs come from."""

    exchange: str
    symbol: str
    timeframe: str
    mode: Literal["full", "incremental", "skip"]
    first_ts: datetime
    last_ts: datetime
    n_candles: int
    read_from: datetime | None = None  # None: from the first candle
    write_from: datetime | None = None  # None: every row
    reason: str = ""
    funding_src: tuple[str, str] | None = None
    oi_src: tuple[str, str] | None = None
    leg_src: tuple[str, str] | None = None
    underlying: str = ""

    @property
    def key(self) -> GroupKey:
        return (self.exchange, self.symbol, self.timeframe)


def config_hash(params: LabelParams, sentiment_source: str) -> str:
    """Everything that changes stored values; a change makes the next build recompute everything."""
    blob = json.dumps(
        {
            "feature_version": catalog.FEATURE_VERSION,
            "features": catalog.FEATURE_COLUMNS,
            "horizons": list(params.horizons),
            "neutral_band": params.neutral_band,
            "band_mode": params.band_mode,
            "vol_scale": params.vol_scale,
            "sentiment_source": sentiment_source,
            "warmup": catalog.BASE_WARMUP_BARS,
            "block": catalog.BASE_BLOCK_BARS,
            "min_history": catalog.BASE_MIN_HISTORY,
            "momentum_days": list(catalog.MOMENTUM_DAYS),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _pick(cands: list[tuple[str, str]], prefer: Sequence[str]) -> tuple[str, str] | None:
    for ex in prefer:
        for c in cands:
            if c[0] == ex:
                return c
    return sorted(cands)[0] if cands else None


def _sources(
    conn: psycopg.Connection, table: str
) -> dict[str, list[tuple[str, str]]]:
    from psycopg import sql

    rows = conn.execute(sql.SQL("SELECT DISTINCT exchange, symbol FROM {}").format(table_ident(table))).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for ex, sym in rows:
        out.setdefault(str(sym), []).append((str(ex), str(sym)))
    return out


def block_start(ts: datetime, timeframe: str) -> datetime:
    import pandas as pd

    step = catalog.timeframe_seconds(timeframe) * 10**9
    B = catalog.block_bars(timeframe)
    ns = pd.Timestamp(ts).as_unit("ns").value
    return pd.Timestamp((ns // (B * step)) * B * step, tz="UTC").to_pydatetime()


def plan_build(
    conn: psycopg.Connection,
    *,
    full: bool,
    params: LabelParams,
    chash: str,
    timeframes: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    exchanges: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> list[GroupPlan]:
    """Decide, per series, full / incremental / skip, and where its extras come from."""
    import pandas as pd

    s = settings or get_settings()
    for tf in timeframes or []:
        catalog.timeframe_seconds(tf)
    where, args = "", []
    if timeframes:
        where, args = "WHERE c.timeframe = ANY(%s)", [list(timeframes)]
    rows = conn.execute(
        f"""
        SELECT c.exchange, c.symbol, c.timeframe, min(c.ts), max(c.ts), count(*),
               count(*) FILTER (WHERE c.ts <= st.last_ts), st.first_ts, st.last_ts, st.n_candles, st.config_hash
        FROM market.candles c
        LEFT JOIN features.build_state st USING (exchange, symbol, timeframe)
        {where}
        GROUP BY c.exchange, c.symbol, c.timeframe, st.first_ts, st.last_ts, st.n_candles, st.config_hash
        ORDER BY 1, 2, 3""",  # type: ignore[arg-type]
        args,
    ).fetchall()
    all_groups = {(str(r[0]), str(r[1]), str(r[2])) for r in rows}
    funding = _sources(conn, "market.funding_rates")
    oi = _sources(conn, "market.open_interest")
    H = {tf: max(catalog.horizon_bars(h, tf) for h in params.horizons) for tf in {r[2] for r in rows}}
    plans: list[GroupPlan] = []
    for ex, sym, tf, first, last, count, upto, st_first, st_last, st_n, st_hash in rows:
        if symbols is not None and sym not in symbols:
            continue
        if exchanges is not None and ex not in exchanges:
            continue
        p = GroupPlan(str(ex), str(sym), str(tf), "full", first, last, int(count))
        if full:
            p.reason = "--full"
        elif st_last is None:
            p.reason = "first build"
        elif st_hash != chash:
            p.reason = "feature/label configuration changed"
        elif pd.Timestamp(first) != pd.Timestamp(st_first):
            p.reason = "history extended backwards"
        elif int(upto) != int(st_n):
            p.reason = "candles before the watermark changed"
        elif pd.Timestamp(last) <= pd.Timestamp(st_last):
            p.mode, p.reason = "skip", "no new candles"
        else:
            row = conn.execute(
                "SELECT ts FROM market.candles WHERE exchange = %s AND symbol = %s AND timeframe = %s "
                "AND ts <= %s ORDER BY ts DESC OFFSET %s LIMIT 1",
                (ex, sym, tf, st_last, H[tf]),
            ).fetchone()
            p.mode, p.reason = "incremental", "new candles"
            if row is not None:
                p.write_from = row[0]
                sec = catalog.timeframe_seconds(tf)
                # the block window's warm-up, and the pointwise features' history (ret_90d), whichever is earlier
                p.read_from = min(
                    block_start(row[0], tf) - pd.Timedelta(seconds=catalog.warmup_bars(tf) * sec).to_pytimedelta(),
                    row[0] - pd.Timedelta(seconds=catalog.history_bars(tf) * sec).to_pytimedelta(),
                )
        perp = catalog.perp_of(sym)
        prefer_perp = [ex, s.universe.perp_exchange]
        p.funding_src = _pick(funding.get(perp, []), prefer_perp)
        p.oi_src = _pick(oi.get(perp, []), prefer_perp)
        if catalog.is_perp(sym):
            leg_sym, prefer_leg = catalog.pair_of(sym), [ex, s.universe.exchange]
        else:
            leg_sym, prefer_leg = perp, prefer_perp
        p.leg_src = _pick([(g[0], g[1]) for g in all_groups if g[1] == leg_sym and g[2] == tf], prefer_leg)
        p.underlying = catalog.underlying_of(sym)
        plans.append(p)
    return plans


def sql_literal(v: object) -> str:
    """A SQL literal for planner-made values (names from the database, timestamps); the planner's
    statements are built as text because Spark's JDBC reader takes a query string, not parameters."""
    import pandas as pd

    if v is None:
        return "NULL"
    if isinstance(v, datetime | pd.Timestamp):
        return f"'{pd.Timestamp(v).tz_convert('UTC').isoformat()}'::timestamptz"
    s = str(v)
    if "\x00" in s:
        raise ValueError(f"NUL byte in {s!r}")
    return "'" + s.replace("'", "''") + "'"


def _plan_values(plans: Sequence[GroupPlan]) -> str:
    rows = []
    for p in plans:
        f = p.funding_src or (None, None)
        o = p.oi_src or (None, None)
        g = p.leg_src or (None, None)
        read_from = sql_literal(p.read_from) if p.read_from is not None else "'-infinity'::timestamptz"
        lits = [sql_literal(x) for x in (p.exchange, p.symbol, p.timeframe)] + [read_from, sql_literal(p.last_ts)]
        lits += [sql_literal(x) for x in (*f, *o, *g, p.underlying)]
        rows.append("(" + ", ".join(lits) + ")")
    cols = "exchange, symbol, timeframe, read_from, read_to, f_ex, f_sym, oi_ex, oi_sym, g_ex, g_sym, underlying"
    return f"(VALUES {', '.join(rows)}) AS v({cols})"


def candles_sql(plans: Sequence[GroupPlan]) -> str:
    """The candles each planned series needs: from its read start to the planned watermark."""
    return (
        "SELECT c.exchange, c.symbol, c.timeframe, c.ts, c.open, c.high, c.low, c.close, c.volume, c.quote_volume "
        f"FROM market.candles c JOIN {_plan_values(plans)} "
        "ON c.exchange = v.exchange AND c.symbol = v.symbol AND c.timeframe = v.timeframe "
        "WHERE c.ts >= v.read_from AND c.ts <= v.read_to"
    )


def extras_sql(plans: Sequence[GroupPlan], *, options: bool, sentiment_source: str) -> str:
    """Every extra as long rows (group key, kind, ts, v1..v6) keyed to the series that uses it."""
    lb = f"interval '{EXTRAS_LOOKBACK_DAYS} days'"
    keys = "p.exchange, p.symbol, p.timeframe"
    nulls = lambda k: ", ".join(f"NULL::float8 AS v{i}" for i in range(7 - k, 7))  # noqa: E731
    parts = [
        f"SELECT {keys}, 'funding'::text AS kind, f.ts AS ts, f.funding_rate AS v1, {nulls(5)} "
        "FROM p JOIN market.funding_rates f ON f.exchange = p.f_ex AND f.symbol = p.f_sym "
        f"AND f.ts >= p.read_from - {lb}",
        f"SELECT {keys}, 'oi', o.ts, o.open_interest, {nulls(5)} "
        "FROM p JOIN market.open_interest o ON o.exchange = p.oi_ex AND o.symbol = p.oi_sym "
        f"AND o.ts >= p.read_from - {lb}",
        f"SELECT {keys}, 'leg', c.ts, c.close, {nulls(5)} "
        "FROM p JOIN market.candles c ON c.exchange = p.g_ex AND c.symbol = p.g_sym AND c.timeframe = p.timeframe "
        "AND c.ts >= p.read_from AND c.ts <= p.read_to",
        f"SELECT {keys}, 'sentiment', s.ts, s.value, {nulls(5)} "
        f"FROM p JOIN market.sentiment s ON s.source = {sql_literal(sentiment_source)} AND s.ts >= p.read_from - {lb}",
    ]
    if options:
        cols = ", ".join(f"o.{c}" for c in catalog.OPTION_FEATURES)
        parts.append(
            f"SELECT {keys}, 'options', o.snapshot_ts, {cols} "
            f"FROM p JOIN {OPTION_FEATURES_TABLE} o ON o.underlying = p.underlying "
            f"AND o.snapshot_ts >= p.read_from - {lb}"
        )
    body = " UNION ALL ".join(parts)
    return f"WITH p AS (SELECT * FROM {_plan_values(plans)}) {body}"


def options_available(conn: psycopg.Connection) -> bool:
    cols = set(table_columns(conn, OPTION_FEATURES_TABLE))
    if not cols:
        return False
    need = {"underlying", "snapshot_ts", *catalog.OPTION_FEATURES}
    if not need <= cols:
        log.warning("%s lacks %s; option features stay NaN", OPTION_FEATURES_TABLE, sorted(need - cols))
        return False
    return True


def extras_from_long(df: pd.DataFrame | None) -> Extras:
    """Split long extras rows (kind, ts, v1..v6) into an :class:`Extras`; deterministic order."""
    import pandas as pd

    if df is None or df.empty:
        return Extras()
    df = df.sort_values(["kind", "ts", "v1", "v2", "v3", "v4", "v5", "v6"], kind="stable", na_position="last")
    out = Extras()
    for kind, g in df.groupby("kind", sort=False):
        ts = pd.to_datetime(g["ts"], utc=True).to_numpy()
        if kind == "funding":
            out.funding = pd.DataFrame({"ts": ts, "funding_rate": g["v1"].to_numpy(dtype=float)})
        elif kind == "oi":
            out.open_interest = pd.DataFrame({"ts": ts, "open_interest": g["v1"].to_numpy(dtype=float)})
        elif kind == "leg":
            out.other_leg = pd.DataFrame({"ts": ts, "close": g["v1"].to_numpy(dtype=float)})
        elif kind == "sentiment":
            out.sentiment = pd.DataFrame({"ts": ts, "value": g["v1"].to_numpy(dtype=float)})
        elif kind == "options":
            d = {"snapshot_ts": ts}
            for i, c in enumerate(catalog.OPTION_FEATURES, start=1):
                d[c] = g[f"v{i}"].to_numpy(dtype=float)
            out.options = pd.DataFrame(d)
        else:
            raise ValueError(f"unknown extras kind {kind!r}")
    return out


def cross_cutoffs(plans: Sequence[GroupPlan]) -> dict[tuple[str, str], datetime | None]:
    """Per (exchange, timeframe) built: the earliest bar this build rewrote (None: all history).

    A bar's cross-section changes when any of its assets' rows does, so every asset's row at or
    after the cutoff is recomputed, built in this run or not.
    """
    import pandas as pd

    out: dict[tuple[str, str], datetime | None] = {}
    for p in plans:
        if p.mode == "skip" or catalog.is_perp(p.symbol):
            continue
        k = (p.exchange, p.timeframe)
        w = p.write_from if p.mode == "incremental" else None
        if k not in out:
            out[k] = w
        elif out[k] is not None:
            out[k] = None if w is None else min(pd.Timestamp(out[k]), pd.Timestamp(w)).to_pydatetime()
    return out


def cross_inputs_sql(plans: Sequence[GroupPlan], stage: str | None) -> str | None:
    """The rows the cross-sectional pass reads: spot rows at or after each cutoff, from ``stage``
    (this build's new per-series rows, ts as epoch microseconds) where it has them, else from
    features.bars. None when nothing was built."""
    cuts = cross_cutoffs(plans)
    if not cuts:
        return None
    never = "'-infinity'::timestamptz"
    vals = ", ".join(f"({sql_literal(ex)}, {sql_literal(tf)}, {sql_literal(c) if c is not None else never})"
                     for (ex, tf), c in sorted(cuts.items()))
    ins = ", ".join(INPUTS)
    bins = ", ".join(f"b.{c}" for c in INPUTS)
    spot = "symbol NOT LIKE '%:%'"  # perpetuals are not in the cross-section
    bars = (f"SELECT b.exchange, b.symbol, b.timeframe, b.ts, {bins} FROM {BARS_TABLE} b "
            "JOIN cut ON b.exchange = cut.exchange AND b.timeframe = cut.timeframe AND b.ts >= cut.cutoff "
            f"WHERE b.{spot}")
    head = f"WITH cut(exchange, timeframe, cutoff) AS (VALUES {vals})"
    if stage is None:
        return f"{head} {bars}"
    return (
        f"{head}, s AS (SELECT st.exchange, st.symbol, st.timeframe, "
        f"timestamptz 'epoch' + st.ts_us * interval '1 microsecond' AS ts, {ins} FROM features.{stage} st "
        f"JOIN cut ON st.exchange = cut.exchange AND st.timeframe = cut.timeframe WHERE st.{spot}) "
        f"SELECT exchange, symbol, timeframe, ts, {ins} FROM s UNION ALL {bars} AND NOT EXISTS ("
        "SELECT 1 FROM s WHERE s.exchange = b.exchange AND s.symbol = b.symbol AND s.timeframe = b.timeframe "
        "AND s.ts = b.ts)"
    )


def write_from_ns(plans: Sequence[GroupPlan]) -> dict[GroupKey, int | None]:
    """Per series, the first bar to write as UTC epoch ns (None: every row)."""
    import pandas as pd

    return {p.key: (pd.Timestamp(p.write_from).as_unit("ns").value if p.write_from is not None else None)
            for p in plans}

