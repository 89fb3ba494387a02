"""Replaying a real, messy CSV through the simulated exchange: clean data lands, bad rows are quarantined.

The CryptoDataDownload hourly BTC file concatenates two formats, newest first, with 2,649 hours
served twice with slightly different values (the newer-format row is the better one) and a first
row whose open is 16,199.91 in a 4,300 market. The collector must store one bar per hour (the
newer-format version), quarantine the other versions and the bad open, and record the real
Binance outages as gaps.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from entasis.collect.candles import collect_candles
from entasis.collect.grid import missing_runs
from entasis.collect.quality import REASON_DUPLICATE, REASON_OUTLIER_BODY
from entasis.sim.exchange import SimExchangeServer, start_server
from entasis.sim.market import MarketSim
from entasis.sim.replay import load_candle_csv

H = 3_600_000
FOLDER = "cdd_binance_spot_andrewsiah_2017_2021"
UNTIL = "2021-06-11"


@pytest.fixture
def replay(shared_data: Path, db_url: str, sim_env: Callable[..., SimExchangeServer]) -> Iterator[SimExchangeServer]:
    market = MarketSim(seed=7, symbols=["ETH/USDT"], start="2021-06-01", end=UNTIL)
    with start_server(market=market, replay_dir=shared_data / FOLDER) as server:
        yield sim_env(server)


def _expected(path: Path) -> tuple[pd.DataFrame, set[int]]:
    """Bars to store (newer-format row per hour, bad first open dropped) and the hours to quarantine."""
    raw = pd.read_csv(path)
    unix = pd.to_numeric(raw["unix"])
    parsed = load_candle_csv(path)
    parsed["newer"] = (unix >= 1e11).to_numpy()
    parsed["t"] = (parsed["ts"].astype("datetime64[ms, UTC]").astype("int64")).to_numpy()
    parsed = parsed.sort_values(["t", "newer"], ascending=[True, False], kind="stable")
    keep = parsed.drop_duplicates("t", keep="first")
    values = ["open", "high", "low", "close", "volume", "quote_volume"]
    merged = parsed.merge(keep[["t", *values]], on="t", suffixes=("", "_kept"))
    differs = np.zeros(len(merged), dtype=bool)
    for c in values:
        differs |= merged[c].to_numpy() != merged[f"{c}_kept"].to_numpy()
    conflicting = set(merged.loc[differs, "t"].tolist())
    first = int(keep["t"].min())
    assert keep.iloc[0]["open"] == 16199.91  # the known bad first open
    return keep[keep["t"] != first].reset_index(drop=True), conflicting | {first}


@pytest.mark.realdata
def test_replayed_cdd_file_lands_clean_and_quarantines_bad_rows(replay: SimExchangeServer, db_url: str,
                                                                shared_data: Path) -> None:
    path = shared_data / FOLDER / "Binance_BTCUSDT_1h.csv"
    want, bad_hours = _expected(path)
    [r] = collect_candles("binance", ["BTC/USDT"], "1h", since="2017-08-01", until=UNTIL)

    with psycopg.connect(db_url) as conn:
        got = pd.DataFrame(conn.execute(
            "SELECT ts, open, high, low, close, volume, quote_volume FROM market.candles ORDER BY ts").fetchall(),
            columns=["ts", "open", "high", "low", "close", "volume", "quote_volume"])
        quarantined = conn.execute("SELECT ts, reason FROM market.quarantine").fetchall()
        gaps = conn.execute("SELECT gap_start, gap_end, missing_bars FROM market.gaps ORDER BY gap_start").fetchall()

    # one bar per hour, the newer-format version, exactly as in the file
    assert r.new == len(got) == len(want) == 33_412
    assert (pd.to_datetime(got["ts"], utc=True).astype("datetime64[ms, UTC]").astype("int64").to_numpy()
            == want["t"].to_numpy()).all()
    for c in ["open", "high", "low", "close", "volume", "quote_volume"]:
        assert np.array_equal(np.round(got[c].astype(float).to_numpy(), 8), np.round(want[c].to_numpy(), 8)), c

    # every conflicting older version and the bad first open are quarantined, with their reasons
    q_hours = {int(pd.Timestamp(ts).value // 1_000_000) for ts, _ in quarantined}
    assert q_hours == bad_hours
    reasons = {reason for _, reason in quarantined}
    assert reasons == {REASON_DUPLICATE, REASON_OUTLIER_BODY}
    first_reason = [reason for ts, reason in quarantined if ts == pd.Timestamp("2017-08-17 04:00", tz="UTC")]
    assert first_reason == [REASON_OUTLIER_BODY]
    assert len(bad_hours) > 2_000

    # the real outages in the file are gaps, bar for bar; nothing is zero-filled
    # (a bar whose only version was quarantined is missing too: a gap, like the outages)
    runs = missing_runs(set(want["t"]), min(bad_hours | set(want["t"])), int(want["t"].max()), H)
    assert [(pd.Timestamp(a).value // 1_000_000, pd.Timestamp(b).value // 1_000_000, n) for a, b, n in gaps] == \
        [(g.start, g.end, g.bars) for g in runs]
    assert len(runs) == 9  # the file's 8 outages and its bad first bar (quarantined, no other version)
    assert os.environ["ENTASIS_SIM_URL"] == replay.url
