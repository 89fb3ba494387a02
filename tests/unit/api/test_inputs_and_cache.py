"""Input parsing, the cache backends (in-process and a real redis-server) and the metric families."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from entasis.api.analytics import HitRate
from entasis.api.cache import RedisCache, TTLCache, cache_key, make_cache
from entasis.api.service import UnknownAsset, parse_horizon, resolve_asset
from tests.unit.api.servers import free_port, redis_server

KNOWN = ["BTC/USDT", "ETH/USDT", "SOL/USDC"]


@pytest.mark.parametrize(("text", "want"), [("7d", 7), ("7", 7), (7, 7), (" 14D ", 14), ("30d", 30)])
def test_parse_horizon_accepts(text: str | int, want: int) -> None:
    assert parse_horizon(text, [7, 14, 30]) == want


@pytest.mark.parametrize("text", ["8d", "0", "-7", "7dd", "d", "", "seven", "7.0"])
def test_parse_horizon_rejects_naming_the_allowed(text: str) -> None:
    with pytest.raises(ValueError, match="7d, 14d, 30d"):
        parse_horizon(text, [7, 14, 30])


@pytest.mark.parametrize(("text", "want"), [
    ("BTC/USDT", "BTC/USDT"), ("btc/usdt", "BTC/USDT"), ("ETH-USDT", "ETH/USDT"), ("eth_usdt", "ETH/USDT"),
    ("SOLUSDC", "SOL/USDC"), (" BTC-USDT ", "BTC/USDT"),
])
def test_resolve_asset(text: str, want: str) -> None:
    assert resolve_asset(text, KNOWN) == want


@pytest.mark.parametrize("text", ["XRP/USDT", "BTC", "BTC/USD", "", "BTC//USDT"])
def test_unknown_asset_names_the_known_ones(text: str) -> None:
    with pytest.raises(UnknownAsset) as e:
        resolve_asset(text, KNOWN)
    assert e.value.known == KNOWN and "BTC/USDT, ETH/USDT, SOL/USDC" in str(e.value)
    with pytest.raises(UnknownAsset, match="nothing published yet"):
        resolve_asset(text, [])


def test_cache_key_carries_the_generation() -> None:
    assert cache_key(7, "predict", "BTC/USDT", 7) == "entasis:api:v1:g7:predict:BTC/USDT:7"
    assert cache_key(7, "x") != cache_key(8, "x")


def test_ttl_cache_expiry_and_bound() -> None:
    async def run() -> None:
        c = TTLCache(ttl_s=0.2, max_entries=2)
        await c.set("a", b"1")
        assert await c.get("a") == b"1"
        await c.set("b", b"2")
        await c.get("a")              # a is now the most recently used
        await c.set("c", b"3")        # evicts b, the least recently used
        assert await c.get("b") is None and await c.get("a") == b"1" and len(c) == 2
        time.sleep(0.25)
        assert await c.get("a") is None and await c.get("c") is None
    asyncio.run(run())
    with pytest.raises(ValueError, match="ttl_s"):
        TTLCache(ttl_s=0)


def test_redis_cache_against_a_real_server() -> None:
    async def run(url: str) -> None:
        c = make_cache(url, ttl_s=0.5)
        assert c.kind == "redis"
        await c.set("k", b"\x00body")
        assert await c.get("k") == b"\x00body"
        assert await c.get("missing") is None
        await asyncio.sleep(0.7)
        assert await c.get("k") is None   # expired by Redis itself
        await c.close()

    with redis_server() as url:
        asyncio.run(run(url))


def test_redis_down_is_a_miss_not_an_error() -> None:
    async def run() -> None:
        c = RedisCache(f"redis://127.0.0.1:{free_port()}/0", ttl_s=5)
        await c.set("k", b"v")
        assert await c.get("k") is None
        await c.close()
    asyncio.run(run())
    assert make_cache(None, 5).kind == "memory"
    assert make_cache("redis://127.0.0.1:1/0", 5, enabled=False).kind == "off"


def test_metric_families_from_a_snapshot() -> None:
    from prometheus_client import CollectorRegistry

    from entasis.api.metrics import exposition, families, latency_histogram

    snap = {
        "live": {("BTC/USDT", 7): HitRate(10, 0.4, 9, 0.45, 0.5), ("BTC/USDT", 30): HitRate(0, None, 0, None, None)},
        "counts": {("BTC/USDT", 2): 5, ("BTC/USDT", 0): 1},
        "champions": {("BTC/USDT", 7): {"trained_at": datetime(2024, 1, 1, tzinfo=UTC), "unproven": True},
                      ("BTC/USDT", 30): {"trained_at": None, "unproven": None}},
        "candles": {"BTC/USDT": datetime(2024, 2, 1, tzinfo=UTC), "ETH/USDT": None},
        "timeframe": "1d", "drift": {"rsi_14": 0.31, "ret_1": None}, "drift_as_of": None,
    }
    reg = CollectorRegistry()
    latency_histogram(reg).labels("GET", "/x", "200").observe(0.003)
    text = exposition(families(snap, [7, 30]), reg).decode()
    assert 'model_accuracy_7d{asset="BTC/USDT"} 0.4' in text
    assert 'baseline_accuracy_7d{asset="BTC/USDT",baseline="trailing_majority"} 0.5' in text
    assert 'model_live_outcomes_30d{asset="BTC/USDT"} 0.0' in text
    assert "model_accuracy_30d{" not in text          # no outcomes: no value rather than a made-up 0
    assert 'predictions_total{asset="BTC/USDT",class="bullish"} 5.0' in text
    assert 'model_champion_unproven{asset="BTC/USDT",horizon="7d"} 1.0' in text
    assert 'model_champion_unproven{asset="BTC/USDT",horizon="30d"}' not in text
    assert 'model_last_trained_timestamp{asset="BTC/USDT",horizon="7d"} 1.7040672e+09' in text
    assert 'data_last_candle_timestamp{asset="BTC/USDT",timeframe="1d"}' in text
    assert 'asset="ETH/USDT",timeframe' not in text
    assert 'feature_drift_psi{feature="rsi_14"} 0.31' in text and 'feature="ret_1"' not in text
    assert 'entasis_api_request_duration_seconds_bucket{le="0.005",method="GET",route="/x",status="200"} 1.0' in text


def test_placeholders_become_dollar_parameters() -> None:
    from entasis.api.store import asyncpg_connect_args, to_dollar_params

    assert to_dollar_params("SELECT %(a)s, %(b)s, %(a)s::int", {"a": 1, "b": 2, "unused": 3}) == (
        "SELECT $1, $2, $1::int", [1, 2])
    assert to_dollar_params("SELECT %s, %s", (1, None)) == ("SELECT $1, $2", [1, None])
    assert to_dollar_params("SELECT 1", ()) == ("SELECT 1", [])
    with pytest.raises(KeyError, match="'b'"):
        to_dollar_params("SELECT %(a)s, %(b)s", {"a": 1})
    with pytest.raises(ValueError, match="2 placeholder"):
        to_dollar_params("SELECT %s, %s", (1,))
    with pytest.raises(ValueError, match="positional"):
        to_dollar_params("SELECT %s", {"a": 1})
    with pytest.raises(ValueError, match="named placeholder"):
        to_dollar_params("SELECT %(a)s", (1,))
    args = asyncpg_connect_args("host=db.example port=6432 user=entasis_reader dbname=entasis sslmode=require")
    assert args == {"host": "db.example", "port": 6432, "user": "entasis_reader", "database": "entasis",
                    "ssl": "require"}
