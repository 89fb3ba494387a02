"""Which /predict bodies the cache fast path may answer (Serving.predict_key): only those PredictRequest would
accept unchanged and whose asset this generation knows; everything else goes to the full app."""

from __future__ import annotations

import pytest

from entasis.api.app import Serving
from entasis.api.cache import TTLCache, cache_key
from entasis.api.store import ReaderStore
from entasis.config import Settings

KNOWN = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture
def sv() -> Serving:
    s = Serving(Settings(), ReaderStore("postgresql://u@127.0.0.1:1/x"), TTLCache(60))
    s._known = (5, KNOWN)
    return s


@pytest.mark.parametrize(("body", "key"), [
    (b'{"asset_symbol":"BTC/USDT","timeframe":"7d"}', cache_key(5, "predict", "BTC/USDT", 7)),
    (b'{"timeframe":"30d","asset_symbol":"eth-usdt"}', cache_key(5, "predict", "ETH/USDT", 30)),  # spelling
    (b' {"asset_symbol": "BTCUSDT", "timeframe": "14d"} ', cache_key(5, "predict", "BTC/USDT", 14)),
    (b'{"asset_symbol":"BTC/USDT","timeframe":"7"}', None),        # PredictRequest wants the literal "7d"
    (b'{"asset_symbol":"BTC/USDT","timeframe":"7D"}', None),
    (b'{"asset_symbol":"BTC/USDT","timeframe":"90d"}', None),
    (b'{"asset_symbol":"BTC/USDT","timeframe":7}', None),
    (b'{"asset_symbol":"BTC/USDT"}', None),                        # missing field
    (b'{"asset_symbol":"BTC/USDT","timeframe":"7d","x":1}', None),  # extra field (extra="forbid")
    (b'{"asset_symbol":"","timeframe":"7d"}', None),               # min_length 1
    (b'{"asset_symbol":"' + b"B" * 41 + b'","timeframe":"7d"}', None),  # max_length 40
    (b'{"asset_symbol":["BTC/USDT"],"timeframe":"7d"}', None),
    (b'{"asset_symbol":"DOGE/USDT","timeframe":"7d"}', None),      # unknown: the full app answers 404
    (b'[1,2]', None),
    (b'', None),
    (b'{"asset_symbol":"BTC/USDT",', None),                        # malformed: the full app answers 422
])
def test_predict_key_table(sv: Serving, body: bytes, key: str | None) -> None:
    assert sv.predict_key(5, body) == key


def test_no_key_for_another_generation(sv: Serving) -> None:
    """The asset list is per generation: under a newer one the full app must reload it first."""
    body = b'{"asset_symbol":"BTC/USDT","timeframe":"7d"}'
    assert sv.predict_key(6, body) is None
    sv._known = None
    assert sv.predict_key(5, body) is None


def test_the_fast_path_is_off_without_a_cache() -> None:
    from entasis.api.cache import NullCache

    s = Serving(Settings(), ReaderStore("postgresql://u@127.0.0.1:1/x"), NullCache())
    assert not s.cache_on
    assert Serving(Settings(), ReaderStore("postgresql://u@127.0.0.1:1/x"), TTLCache(1)).cache_on
