"""Faults on a fraction of every request the simulated exchange serves, drawn from a seeded stream.

``RandomFaults`` replaces the server's :class:`~entasis.sim.faults.FaultInjector`: each request
independently gets, with probability ``rate``, one fault whose kind is drawn by weight. The kinds
are what venues really do to a long-running collector: rate limits with Retry-After, 5xx pages,
responses slower than the client's timeout, dropped connections, bodies cut off in transit and
corrupted rows. Armed faults (``add``) still work, so market events such as revised candles can be
scheduled the same way in the faulty and the clean run.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

from entasis.sim.faults import MALFORMED_MODES, Fault, FaultInjector

# kind -> (weight, params). Time is compressed as in the rest of the soak: Retry-After is 0.2 s
# (the client honours fractional seconds) and "slow" answers after 2.4 s, beyond the soak's 1.5 s
# client timeout (a ccxt RequestTimeout).
DEFAULT_MIX: dict[str, tuple[float, dict[str, Any]]] = {
    "429": (0.25, {"retry_after": 0.2}),
    "500": (0.15, {}),
    "503": (0.15, {}),
    "slow": (0.1, {"delay_s": 2.4}),
    "drop": (0.15, {}),
    "garbled": (0.1, {}),
    "malformed": (0.1, {"n": 1}),
}


class RandomFaults(FaultInjector):
    """Seeded random faults on ``rate`` of requests, counted by kind (thread-safe)."""

    def __init__(self, rate: float, seed: int, mix: dict[str, tuple[float, dict[str, Any]]] | None = None) -> None:
        super().__init__()
        if not 0 <= rate < 1:
            raise ValueError(f"fault rate must be in [0, 1), got {rate!r}")
        self.rate = rate
        self.mix = dict(mix or DEFAULT_MIX)
        self._rng = random.Random(seed)
        self._kinds = list(self.mix)
        self._weights = [self.mix[k][0] for k in self._kinds]
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self._count_lock = threading.Lock()
        self.enabled = True

    def fire(self, route: str, query: dict[str, str]) -> list[Fault]:
        out = super().fire(route, query)
        with self._count_lock:
            self.requests += 1
            if not self.enabled or self._rng.random() >= self.rate:
                return out
            kind = self._rng.choices(self._kinds, self._weights)[0]
            self.injected[kind] += 1
            params = dict(self.mix[kind][1])
            if kind == "malformed":
                params.setdefault("mode", self._rng.choice(MALFORMED_MODES))
        return [*out, Fault(route, kind, 1, 0, params, fired=1)]
