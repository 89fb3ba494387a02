"""Deribit option-chain snapshots into market.option_quotes: every listed option, with its greeks.

The instrument list comes from ``load_markets`` (Deribit ``get_instruments``), so the snapshot
holds exactly what the venue lists; each instrument's quote, mark IV, greeks, underlying price
and open interest come from its ticker (Deribit's book summary carries no greeks). Prices are as
Deribit reports them: option prices in the underlying coin (inverse options), IV in percent,
underlying price in USD.

A venue only serves the current chain, so a snapshot cannot be back-dated: ``now`` (from the
caller: Airflow's data interval end, the wall clock at the CLI) must agree with the exchange's own
timestamps within ``MAX_SKEW_MS`` or the run fails instead of storing a mislabeled snapshot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from entasis.collect.candles import register_instruments
from entasis.collect.client import CollectError, ExchangeClient
from entasis.collect.quality import check_options
from entasis.collect.series import NoProgress, Progress, SeriesResult
from entasis.collect.state import SeriesKey, mark_failed, quarantine, save_state
from entasis.domain import to_ms
from entasis.store.db import connect
from entasis.store.market import OPTION_COLUMNS, write_option_quotes

if TYPE_CHECKING:
    import pandas as pd

MAX_SKEW_MS = 15 * 60_000
#: Ticker requests in flight at once; the venue's request rate is still held by one shared throttle.
WORKERS = 8
EXCHANGE = "deribit"


@dataclass(frozen=True)
class _Option:
    symbol: str
    instrument: str
    underlying: str
    expiry_ms: int
    strike: float
    kind: str


def listed_options(client: ExchangeClient, currency: str) -> list[_Option]:
    """Every active option on ``currency`` the exchange lists, sorted by instrument name."""
    out = []
    for sym, m in client.load_markets().items():
        if not m.get("option") or str(m.get("base")) != currency or m.get("active") is False:
            continue
        kind = str(m.get("optionType") or "").lower()
        out.append(_Option(sym, str(m.get("id")), currency, int(m.get("expiry") or 0),
                           float(m.get("strike") or 0.0), kind))
    return sorted(out, key=lambda o: o.instrument)


def _num(d: dict[str, Any], k: str) -> float | None:
    v = d.get(k)
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _side(info: dict[str, Any], side: str) -> float | None:
    """Best bid/ask; Deribit reports price 0 with amount 0 for an empty side, which is no quote."""
    price, amount = _num(info, f"best_{side}_price"), _num(info, f"best_{side}_amount")
    return price if price is not None and (amount is None or amount > 0) else None


def _row(opt: _Option, ticker: dict[str, Any], snapshot: Any) -> dict[str, Any]:
    info = ticker.get("info") or {}
    greeks = info.get("greeks") or {}
    return {
        "exchange": EXCHANGE, "instrument": opt.instrument, "snapshot_ts": snapshot,
        "underlying": opt.underlying, "expiry_ms": opt.expiry_ms, "strike": opt.strike, "kind": opt.kind,
        "bid": _side(info, "bid"), "ask": _side(info, "ask"),
        "mark_price": _num(info, "mark_price"), "mark_iv": _num(info, "mark_iv"),
        "delta": _num(greeks, "delta"), "gamma": _num(greeks, "gamma"),
        "vega": _num(greeks, "vega"), "theta": _num(greeks, "theta"),
        "underlying_price": _num(info, "underlying_price"), "open_interest": _num(info, "open_interest"),
        "exchange_ms": ticker.get("timestamp") or info.get("timestamp"),
    }


def snapshot_frame(client: ExchangeClient, currency: str, now_ms: int, progress: Progress | None = None,
                   workers: int = WORKERS) -> pd.DataFrame:
    """One row per listed option (instrument order), as of ``now_ms``."""
    import pandas as pd

    prog = progress or NoProgress()
    key = SeriesKey("options", EXCHANGE, currency)
    opts = listed_options(client, currency)
    if not opts:
        raise CollectError(f"{EXCHANGE}: no listed options on {currency!r}")
    snap = pd.Timestamp(now_ms, unit="ms", tz="UTC")
    prog.series_started(key, len(opts))
    try:
        # one ticker first: if the venue's clock disagrees with ``now``, fail before the other calls
        first = client.fetch_greeks(opts[0].symbol)
        _check_skew(first, now_ms, currency)
        prog.page_done(key, 1)
        rest = client.fetch_greeks_many([o.symbol for o in opts[1:]], workers=workers)
        prog.page_done(key, len(rest))
    finally:
        prog.series_done(key)
    df = pd.DataFrame([_row(o, t, snap) for o, t in zip(opts, [first, *rest], strict=True)])
    df["expiry"] = pd.to_datetime(df.pop("expiry_ms"), unit="ms", utc=True)
    stamps = pd.to_numeric(df.pop("exchange_ms"), errors="coerce").dropna()
    if len(stamps):
        _check_skew({"timestamp": float(stamps.median())}, now_ms, currency)
    return df


def _check_skew(ticker: dict[str, Any], now_ms: int, currency: str) -> None:
    import pandas as pd

    stamped = ticker.get("timestamp") or (ticker.get("info") or {}).get("timestamp")
    if stamped is None:
        return
    skew = abs(float(stamped) - now_ms)
    if skew > MAX_SKEW_MS:
        venue_time = pd.Timestamp(float(stamped), unit="ms", tz="UTC")
        asked = pd.Timestamp(now_ms, unit="ms", tz="UTC")
        raise CollectError(
            f"{EXCHANGE} {currency}: the exchange's chain is stamped {venue_time}, {skew / 60_000:.0f} min from the "
            f"requested snapshot time {asked}; venues serve only the current chain, so snapshots cannot be back-dated"
        )


def collect_options(
    currencies: Iterable[str],
    *,
    now: datetime | str | int,
    client: ExchangeClient | None = None,
    progress: Progress | None = None,
) -> list[SeriesResult]:
    """Snapshot every listed option of each currency at ``now``; bad rows quarantined, good ones stored."""
    cl = client or ExchangeClient(EXCHANGE)
    if cl.id != EXCHANGE:
        raise ValueError(f"option snapshots come from {EXCHANGE!r}, not {cl.id!r}")
    now_ms = to_ms(now)
    curs = [c.upper() for c in currencies]
    if not curs:
        raise ValueError("no currencies to snapshot")
    register_instruments(cl)
    out = []
    for cur in curs:
        key = SeriesKey("options", EXCHANGE, cur)
        res = SeriesResult(key)
        try:
            df = snapshot_frame(cl, cur, now_ms, progress)
            res.pages = res.rows_fetched = len(df)
            bad_pairs = check_options(df)
            bad_rows = set(bad_pairs["row"].tolist())
            good = df.drop(index=list(bad_rows)) if bad_rows else df
            with connect() as conn:
                if not good.empty:
                    w = write_option_quotes(conn, good[OPTION_COLUMNS])
                    res.new, res.updated, res.unchanged = w.inserted, w.updated, w.unchanged
                if len(bad_pairs):
                    bad = df.loc[bad_pairs["row"].to_numpy()].assign(reason=bad_pairs["rule"].to_numpy())
                    bad = bad.rename(columns={"instrument": "symbol_"})
                    res.quarantined = _quarantine_options(conn, cur, bad)
                save_state(conn, key, now_ms, "ok", f"{len(good)} options stored, {len(bad_rows)} quarantined",
                           run_at_ms=now_ms)
            res.watermark = now_ms
        except Exception as e:
            with contextlib.suppress(Exception):  # the original error matters more than the bookkeeping
                mark_failed(key, f"{type(e).__name__}: {e}")
            raise
        out.append(res)
    return out


def _quarantine_options(conn: Any, currency: str, bad: pd.DataFrame) -> int:
    """Quarantine per instrument: the quarantine key's symbol is the instrument name."""
    n = 0
    for inst, grp in bad.groupby("symbol_", sort=True):
        key = SeriesKey("options", EXCHANGE, str(inst))
        n += quarantine(conn, key, grp.drop(columns=["symbol_"]).assign(instrument=inst), ts_col="snapshot_ts")
    return n
