"""The ingest job collects perpetual candles, so the features build fills ``perp_basis``.

Real ccxt over HTTP to the simulated exchange (spot and USD-M venues), real PostgreSQL, the pandas
engine of the build (the Spark engine computes the same rows: tests/integration/test_features_spark.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from entasis import jobs
from entasis.config import get_settings
from entasis.features.build import build_features
from entasis.features.compute import LabelParams
from entasis.sim.exchange import SimExchangeServer, start_server
from entasis.sim.market import MarketSim
from entasis.store.db import connect

START, END = "2023-01-01", "2023-05-01"


@pytest.fixture(scope="module")
def exchange() -> Iterator[SimExchangeServer]:
    market = MarketSim(seed=11, symbols=["BTC/USDT", "ETH/USDT"], start=START, end=END)
    with start_server(market=market) as server:
        yield server


def test_ingest_collects_perp_candles_and_the_build_fills_perp_basis(
    db_url: str, exchange: SimExchangeServer, sim_env: Callable[..., SimExchangeServer]
) -> None:
    sim_env(exchange, ENTASIS_UNIVERSE__SYMBOLS='["BTC/USDT", "ETH/USDT"]',
            ENTASIS_UNIVERSE__PERP_SYMBOLS='["BTC/USDT:USDT"]', ENTASIS_UNIVERSE__TIMEFRAMES='["1d"]',
            ENTASIS_UNIVERSE__BACKFILL_SINCE=START)
    out = jobs.ingest_candles(until=datetime(2023, 5, 1, tzinfo=UTC))
    series = {r["series"]: r["new"] for r in out["series"]}
    assert series == {"binance BTC/USDT 1d": 120, "binance ETH/USDT 1d": 120, "binanceusdm BTC/USDT:USDT 1d": 120}

    s = build_features(engine="pandas", labels=LabelParams(horizons=(7,)))
    assert s.groups == 3
    with connect() as conn:
        rows = dict(conn.execute(
            "SELECT symbol, count(perp_basis) FROM features.bars GROUP BY symbol ORDER BY symbol").fetchall())
        basis = conn.execute(
            "SELECT b.perp_basis, p.close / c.close - 1 FROM features.bars b "
            "JOIN market.candles c ON c.exchange = 'binance' AND c.symbol = 'BTC/USDT' AND c.ts = b.ts "
            "AND c.timeframe = '1d' JOIN market.candles p ON p.exchange = 'binanceusdm' "
            "AND p.symbol = 'BTC/USDT:USDT' AND p.ts = b.ts AND p.timeframe = '1d' "
            "WHERE b.symbol = 'BTC/USDT' AND b.ts = '2023-03-01T00:00:00Z'").fetchone()
    # BTC spot and its perp both get the basis; ETH has no perp configured, so none
    assert rows == {"BTC/USDT": 120, "BTC/USDT:USDT": 120, "ETH/USDT": 0}
    assert basis is not None and basis[0] == pytest.approx(float(basis[1]), rel=1e-9) and basis[0] != 0
    get_settings.cache_clear()
