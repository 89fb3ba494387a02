"""Flash crashes injected into the simulated market on demand, reproducibly from a seed.

Why: the flash-crash detector and its DAG must be tested end to end against data served over real
ccxt, with crashes whose start and depth are known exactly. A crash is an overlay on the 1-minute
path of one asset: from the open of its ``start`` minute the price falls (log-linearly) by ``depth``
over ``fall_minutes``, bounces back ``bounce`` of the drop within two minutes and regains the rest
linearly by ``recover_minutes`` after the trough, so every price after the crash is the simulator's
own again. Volume in the fall and the first two bounce minutes is ``volume_mult`` times the average
minute of the hour before the crash (at least what the minute had).
Coarser bars of the affected hours are re-aggregated from the crashed minutes, so 5m/1h/1d candles
stay exact aggregates (see :meth:`entasis.sim.market.MarketSim.inject_flash_crash`).

No crash is ever added unless asked for: a market without injected crashes is byte-identical to
before this module existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from entasis.domain import MINUTE_MS
from entasis.sim.market import Bars

if TYPE_CHECKING:
    from entasis.sim.market import Bars

#: how many minutes of the bounce carry the raised volume, beside the fall itself
HOT_BOUNCE_MINUTES = 2


@dataclass(frozen=True)
class FlashCrash:
    """One injected crash of ``asset`` ('BTC/USDT'): times in ms (``start`` on the minute grid)."""

    asset: str
    start: int
    depth: float = 0.2
    fall_minutes: int = 3
    bounce: float = 0.6
    recover_minutes: int = 30
    volume_mult: float = 6.0

    def __post_init__(self) -> None:
        if self.start % MINUTE_MS:
            raise ValueError(f"flash crash start {self.start} must be on the minute grid (ms)")
        if not 0 < self.depth < 0.95:
            raise ValueError(f"flash crash depth must be in (0, 0.95); got {self.depth!r}")
        if not 1 <= self.fall_minutes <= 60:
            raise ValueError(f"fall_minutes must be in 1..60; got {self.fall_minutes!r}")
        if not 0 <= self.bounce <= 1:
            raise ValueError(f"bounce must be in [0, 1]; got {self.bounce!r}")
        if self.recover_minutes < HOT_BOUNCE_MINUTES + 1:
            raise ValueError(f"recover_minutes must be >= {HOT_BOUNCE_MINUTES + 1}; got {self.recover_minutes!r}")
        if self.volume_mult < 1:
            raise ValueError(f"volume_mult must be >= 1; got {self.volume_mult!r}")

    @property
    def trough_minute(self) -> int:
        """Open time (ms) of the bar whose low is the trough."""
        return self.start + (self.fall_minutes - 1) * MINUTE_MS

    @property
    def end(self) -> int:
        """First minute (ms) at which prices are the simulator's own again."""
        return self.start + (self.fall_minutes + self.recover_minutes) * MINUTE_MS

    def factor(self, t_ms: np.ndarray) -> np.ndarray:
        """Price multiplier at minute boundaries ``t_ms``: 1 outside, 1 - depth at the trough."""
        m = (np.asarray(t_ms, dtype=np.int64) - self.start) / MINUTE_MS
        k, r, d = float(self.fall_minutes), float(self.recover_minutes), self.depth
        fall = np.exp(np.log1p(-d) * np.clip(m, 0.0, k) / k)
        after = m - k
        bounced = 1.0 - d * (1.0 - self.bounce)
        rec = np.where(after <= HOT_BOUNCE_MINUTES,
                       (1.0 - d) + (bounced - (1.0 - d)) * after / HOT_BOUNCE_MINUTES,
                       bounced + (1.0 - bounced) * (after - HOT_BOUNCE_MINUTES) / (r - HOT_BOUNCE_MINUTES))
        out = np.where(m <= k, fall, rec)
        return np.where((m <= 0) | (m >= k + r), 1.0, out)


def apply_to_minutes(bars: Bars, crashes: list[FlashCrash], price_dp: int, qv_scale: float) -> Bars:
    """The minute bars with every crash overlaid (prices rounded to the tick, volumes exact integers).

    ``qv_scale`` = 10**(QV_DP - lot_dp): quote-volume units per lot x price.
    """
    if len(bars) == 0 or not crashes:
        return bars
    o, h, lo, c = bars.open.copy(), bars.high.copy(), bars.low.copy(), bars.close.copy()
    lots, qvu = bars.lots.copy(), bars.qvu.copy()
    tick = 10.0**-price_dp
    touched = np.zeros(len(bars), dtype=bool)
    for cr in crashes:
        sel = (bars.ts >= cr.start) & (bars.ts < cr.end)
        if not sel.any():
            continue
        touched |= sel
        g0, g1 = cr.factor(bars.ts[sel]), cr.factor(bars.ts[sel] + MINUTE_MS)
        o[sel] = o[sel] * g0
        c[sel] = c[sel] * g1
        h[sel] = h[sel] * np.maximum(g0, g1)
        lo[sel] = lo[sel] * np.minimum(g0, g1)
        hot = sel & (bars.ts < cr.start + (cr.fall_minutes + HOT_BOUNCE_MINUTES) * MINUTE_MS)
        # volume_mult x the average minute of the hour before (of the whole block when that hour lies
        # in the previous day), never less than the minute had: a surge against the trailing average
        before = (bars.ts >= cr.start - 60 * MINUTE_MS) & (bars.ts < cr.start)
        ref = float(bars.lots[before].mean()) if before.any() else float(bars.lots.mean())
        lots[hot] = np.maximum(lots[hot], np.rint(ref * cr.volume_mult)).astype(np.int64)
    if not touched.any():
        return bars
    o[touched] = np.maximum(np.round(o[touched], price_dp), tick)
    c[touched] = np.maximum(np.round(c[touched], price_dp), tick)
    h[touched] = np.round(np.maximum(h[touched], np.maximum(o[touched], c[touched])), price_dp)
    lo[touched] = np.maximum(np.round(np.minimum(lo[touched], np.minimum(o[touched], c[touched])), price_dp), tick)
    typ = (o + h + lo + c) / 4.0
    qvu[touched] = np.rint(lots[touched] * typ[touched] * qv_scale).astype(np.int64)
    return Bars(bars.ts, o, h, lo, c, lots, qvu)


def seeded_crashes(
    seed: int, assets: list[str], lo_ms: int, hi_ms: int, n: int, *, min_gap_minutes: int = 180,
    depth: tuple[float, float] = (0.17, 0.35),
) -> list[FlashCrash]:
    """``n`` crashes drawn from ``seed`` among ``assets`` with starts in [lo_ms, hi_ms), at least
    ``min_gap_minutes`` apart on the same asset (so each is a separate event). Same seed, same crashes."""
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    if not assets:
        raise ValueError("no assets to put flash crashes on")
    first = -(-lo_ms // MINUTE_MS)
    last = (hi_ms - 1) // MINUTE_MS
    if last < first:
        raise ValueError("the window for flash crashes is empty")
    rng = np.random.default_rng([int(seed), 0xF1A5])
    out: list[FlashCrash] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 1000 * (n + 1):
            raise ValueError(f"cannot place {n} flash crashes {min_gap_minutes} minutes apart in that window")
        asset = assets[int(rng.integers(len(assets)))]
        minute = int(rng.integers(first, last + 1))
        d = float(rng.uniform(*depth))
        fall = int(rng.integers(1, 5))
        bounce = float(rng.uniform(0.3, 0.9))
        mult = float(rng.uniform(4.0, 10.0))
        if any(c.asset == asset and abs(c.start // MINUTE_MS - minute) < min_gap_minutes for c in out):
            continue
        out.append(FlashCrash(asset, minute * MINUTE_MS, round(d, 4), fall, round(bounce, 3), 30, round(mult, 2)))
    return sorted(out, key=lambda c: (c.start, c.asset))
