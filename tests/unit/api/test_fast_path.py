"""Which /predict bodies the fast path may answer (Serving.predict_target / predict_key): only those PredictRequest
would accept unchanged and whose asset this generation knows; everything else goes to the full app."""

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


def test_asset_length_bounds_come_from_the_domain(sv: Serving) -> None:
    """One definition of an asset symbol's length: PredictRequest and the fast path both use entasis.domain's."""
    from entasis.api.app import PredictRequest
    from entasis.domain import ASSET_SYMBOL_MAX_LEN, ASSET_SYMBOL_MIN_LEN

    meta = {type(m).__name__: m for m in PredictRequest.model_fields["asset_symbol"].metadata}
    assert meta["MinLen"].min_length == ASSET_SYMBOL_MIN_LEN and meta["MaxLen"].max_length == ASSET_SYMBOL_MAX_LEN
    longest = "B" * (ASSET_SYMBOL_MAX_LEN - len("/USDT")) + "/USDT"
    sv._known = (5, [*KNOWN, longest])
    body = ('{"asset_symbol":"%s","timeframe":"7d"}' % longest).encode()  # noqa: UP031
    assert sv.predict_target(5, body) == (longest, 7)  # exactly at the bound: the fast path answers
    too_long = ('{"asset_symbol":"B%s","timeframe":"7d"}' % longest).encode()  # noqa: UP031
    assert sv.predict_target(5, too_long) is None  # one over: the full app answers 422
    with pytest.raises(ValueError, match="asset_symbol"):
        PredictRequest.model_validate_json(too_long)
    PredictRequest.model_validate_json(body)


def test_predict_target_is_the_key_s_asset_and_horizon(sv: Serving) -> None:
    body = b'{"asset_symbol":"eth_usdt","timeframe":"30d"}'
    assert sv.predict_target(5, body) == ("ETH/USDT", 30)
    assert sv.predict_key(5, body) == cache_key(5, "predict", "ETH/USDT", 30)
    assert sv.predict_target(5, b'{"asset_symbol":"eth_usdt","timeframe":"31d"}') is None
