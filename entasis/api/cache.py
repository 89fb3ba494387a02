"""Response cache: Redis when ``ENTASIS_REDIS_URL`` is set, an in-process TTL cache otherwise.

Keys carry the store's serving generation (``ml.serving_state``, bumped by every write to
``ml.predictions`` / ``ml.champions``), so a publish or a reconciliation makes every earlier entry
unreachable at once: a client never gets an answer older than the table's newest rows. The TTL only
bounds memory. Values are the exact response bytes. A Redis that fails is logged and treated as a
miss: the cache may make the API faster, never unavailable.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)
KEY_PREFIX = "entasis:api:v1"


def cache_key(generation: int, *parts: object) -> str:
    """``entasis:api:v1:g<generation>:<part>:<part>...``"""
    return ":".join([KEY_PREFIX, f"g{int(generation)}", *(str(p) for p in parts)])


class Cache(Protocol):
    kind: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes) -> None: ...
    async def close(self) -> None: ...


class TTLCache:
    """A bounded in-process LRU whose entries expire after ``ttl_s`` (monotonic clock)."""

    kind = "memory"

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError(f"ttl_s must be > 0 and max_entries >= 1; got {ttl_s}, {max_entries}")
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        expires, value = hit
        if time.monotonic() >= expires:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        self._data[key] = (time.monotonic() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def close(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class RedisCache:
    """Redis GET / SET EX; errors are misses, logged once per outage."""

    kind = "redis"

    def __init__(self, url: str, ttl_s: float) -> None:
        import redis.asyncio as aioredis

        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._r: aioredis.Redis = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._failing = False

    def _fail(self, err: Exception) -> None:
        if not self._failing:
            log.warning("redis cache unavailable, serving uncached: %s", err)
        self._failing = True

    async def get(self, key: str) -> bytes | None:
        import redis

        try:
            value = await self._r.get(key)
        except (redis.RedisError, OSError) as e:
            self._fail(e)
            return None
        self._failing = False
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def set(self, key: str, value: bytes) -> None:
        import redis

        try:
            await self._r.set(key, value, px=self.ttl_ms)
        except (redis.RedisError, OSError) as e:
            self._fail(e)

    async def close(self) -> None:
        await self._r.aclose()


class NullCache:
    """No caching (``api.cache_enabled = false``): every request reads the store."""

    kind = "off"

    async def get(self, key: str) -> bytes | None:
        return None

    async def set(self, key: str, value: bytes) -> None:
        return None

    async def close(self) -> None:
        return None


def make_cache(redis_url: str | None, ttl_s: float, enabled: bool = True) -> Cache:
    if not enabled:
        return NullCache()
    return RedisCache(redis_url, ttl_s) if redis_url else TTLCache(ttl_s)
