"""A seeded market simulator: correlated crypto assets with realistic statistical texture.

Why: the pipeline (collectors, features, models, backtests) needs data that behaves like crypto
markets, offline and reproducibly. Same seed and start give the same history, whatever ``end``
or the list of symbols (every random stream has its own seed, and every asset is seeded from its
name), so extending the window or adding a symbol never rewrites what was there.

Model (hourly base grid, tick-rounded prices, integer lot volumes):

* one market factor and per-asset idiosyncratic shocks, both standardised Student-t (fat tails);
  an asset's shock loads ``beta`` on the market, which gives positive cross-asset correlation;
* log-variance = asset level + fast and slow market volatility regimes + an idiosyncratic regime
  (AR(1) processes, i.e. stochastic volatility -> volatility clustering), times an intraday
  seasonality; slowly varying drift regimes (trends); market-wide and idiosyncratic jumps;
* hourly high/low are sampled from the exact distribution of a Brownian bridge's extremes given
  open, close and the hour's volatility; volume rises with volatility and with the size of the move;
* one-minute bars are generated on demand per UTC day as a path that hits the hour's high and low
  exactly, so every coarser bar is an exact aggregate of the bars below it;
* a perpetual-futures premium (mean-reverting, trend-following) gives perp prices and the 8-hourly
  funding rate (Binance's formula: premium + clamp(interest - premium, +-0.05%)); open interest
  follows trends and drops after violent moves (liquidations);
* option chains (Deribit style) come from :mod:`entasis.sim.options`, priced with Heston whose
  spot variance is the asset's current variance regime.

"now": an exchange always serves the bar in progress. ``now`` (default ``end``) is the simulated
present: bars with open time < now are served and the last one is partial when now is not on the
bar grid. Funding events and open-interest snapshots are served for times < now.
"""

from __future__ import annotations

import math
import threading
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numpy.typing import NDArray

from entasis.domain import DAY_MS, HOUR_MS, MINUTE_MS, timeframe_ms, to_ms
from entasis.sim.options import QUOTE_COLUMNS, build_chain
from entasis.sim.timeframes import bucket_start

if TYPE_CHECKING:
    import pandas as pd

    from entasis.sim.crashes import FlashCrash

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

DEFAULT_SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "ADA/USDT"]
HOURS_PER_YEAR = 24 * 365
#: quote volume is stored as an integer number of 1e-4 quote units, so sums are exact
QV_DP = 4
#: perpetual volume is this multiple of spot volume (perps trade more than spot)
PERP_VOLUME_MULT = 3
INTEREST_8H = 0.0001  # Binance's fixed interest component of funding (0.01% per 8h)
FUNDING_CLAMP = 0.0005
FUNDING_CAP = 0.0075
OI_DP = 3


@dataclass(frozen=True)
class AssetParams:
    """How one asset behaves; known names get realistic values, others are drawn from the name."""

    base: str
    price: float  # first open
    vol: float  # annualised volatility level
    beta: float  # loading on the market factor
    price_dp: int  # tick = 10**-price_dp
    lot_dp: int  # volume step = 10**-lot_dp
    turnover: float  # typical spot quote volume per day
    oi_usd: float  # typical perp open interest in quote
    nu: float  # Student-t degrees of freedom of the shocks
    key: int  # seed component derived from the name


_KNOWN: dict[str, tuple[float, float, float, int, int, float, float]] = {
    # base: price, vol, beta, price_dp, lot_dp, turnover/day, open interest
    "BTC": (46216.93, 0.62, 0.92, 2, 5, 1.2e9, 4.0e9),
    "ETH": (3676.22, 0.78, 0.88, 2, 4, 7.0e8, 2.5e9),
    "SOL": (170.31, 1.05, 0.75, 2, 2, 2.0e8, 5.0e8),
    "BNB": (511.8, 0.72, 0.72, 1, 3, 1.5e8, 3.0e8),
    "XRP": (0.8302, 0.90, 0.68, 4, 0, 2.0e8, 3.0e8),
    "ADA": (1.3080, 0.90, 0.72, 4, 1, 1.5e8, 2.5e8),
}


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode())


def asset_name(symbol: str) -> str:
    """'BTC/USDT:USDT' and 'BTC/USDT' are the same asset; the settle suffix is dropped."""
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"symbol {symbol!r} must look like 'BTC/USDT'")
    return f"{base}/{quote.split(':')[0]}"


def asset_params(symbol: str) -> AssetParams:
    """Parameters for a symbol: a table for the majors, a seeded draw from the name otherwise."""
    name = asset_name(symbol)
    base = name.split("/")[0]
    key = _name_key(name)
    if base in _KNOWN:
        price, vol, beta, pdp, ldp, turnover, oi = _KNOWN[base]
        nu = 4.5
    else:
        rng = np.random.default_rng([key, 1])
        price = float(10 ** rng.uniform(-2.0, 3.0))
        vol = float(rng.uniform(0.7, 1.3))
        beta = float(rng.uniform(0.5, 0.8))
        mag = math.floor(math.log10(price))
        pdp = int(np.clip(4 - mag, 0, 8))
        price = round(price, pdp)
        ldp = int(np.clip(mag + 1, 0, 8))
        turnover = float(10 ** rng.uniform(7.0, 8.5))
        oi = turnover * float(rng.uniform(1.0, 3.0))
        nu = float(rng.uniform(3.8, 5.0))
    return AssetParams(base, price, vol, beta, pdp, ldp, turnover, oi, nu, key)


class Bars(NamedTuple):
    """Columnar bars: prices already rounded to the tick, volumes as exact integers."""

    ts: I64
    open: F64
    high: F64
    low: F64
    close: F64
    lots: I64  # volume in units of 10**-lot_dp
    qvu: I64  # quote volume in units of 10**-QV_DP

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.ts.shape[0])

    def take(self, idx: slice | NDArray[np.bool_] | I64) -> Bars:
        return Bars(self.ts[idx], self.open[idx], self.high[idx], self.low[idx], self.close[idx], self.lots[idx],
                    self.qvu[idx])

    @staticmethod
    def concat(parts: list[Bars]) -> Bars:
        if not parts:
            return _empty_bars()
        return Bars(*(np.concatenate([getattr(p, f) for p in parts]) for f in Bars._fields))


def _empty_bars() -> Bars:
    e = np.empty(0)
    ei = np.empty(0, dtype=np.int64)
    return Bars(ei, e, e, e, e, ei, ei)


def _perp_from_spot(spot: Bars, m: F64, dp: int, qvu: I64) -> Bars:
    """The perpetual's bars from the spot's: prices times the perp/spot factor ``m`` (per bar), rounded
    to the tick; lots times ``PERP_VOLUME_MULT``; quote volume as given (hours and minutes differ)."""
    return Bars(spot.ts, np.round(spot.open * m, dp), np.round(spot.high * m, dp), np.round(spot.low * m, dp),
                np.round(spot.close * m, dp), spot.lots * PERP_VOLUME_MULT, qvu)


def aggregate(bars: Bars, timeframe: str) -> Bars:
    """Aggregate bars into ``timeframe`` buckets: first open, max high, min low, last close, sums."""
    if len(bars) == 0:
        return bars
    keys = np.asarray(bucket_start(bars.ts, timeframe))
    idx = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    last = np.r_[idx[1:] - 1, len(bars) - 1]
    return Bars(
        keys[idx],
        bars.open[idx],
        np.maximum.reduceat(bars.high, idx),
        np.minimum.reduceat(bars.low, idx),
        bars.close[last],
        np.add.reduceat(bars.lots, idx),
        np.add.reduceat(bars.qvu, idx),
    )


def _recursive(x: F64, phi: float, y_prev: float = 0.0) -> F64:
    """y[t] = x[t] + phi * y[t-1] (y[-1] = y_prev), vectorised in blocks (scipy.signal takes 2 s to import)."""
    n = len(x)
    if n == 0:
        return np.empty(0)
    block = int(max(8, min(1024, 30.0 / max(-math.log(phi), 1e-12))))
    nb = -(-n // block)
    xp = np.zeros(nb * block)
    xp[:n] = x
    xb = xp.reshape(nb, block)
    j = np.arange(block, dtype=np.float64)
    up = phi ** -j  # phi**-(block-1) stays well inside float range by the choice of block
    down = phi**j
    inner = np.cumsum(xb * up, axis=1) * down  # the filter within each block from a zero start
    carry_w = phi ** (j + 1)
    out = np.empty_like(xb)
    prev = y_prev
    for b in range(nb):
        out[b] = inner[b] + carry_w * prev
        prev = out[b, -1]
    return out.ravel()[:n]


def _ar1(x: F64, phi: float) -> F64:
    """Unit-variance stationary AR(1) driven by x[1:], started from x[0] (so a prefix stays a prefix)."""
    return _recursive(x[1:] * math.sqrt(1.0 - phi * phi), phi, float(x[0]))


def _ema_past(x: F64, halflife: float) -> F64:
    """Exponential average of x strictly before each index (no look-ahead)."""
    a = 1.0 - 0.5 ** (1.0 / halflife)
    y = _recursive(a * x, 1.0 - a)
    return np.r_[0.0, y[:-1]]


def _std_t(rng: np.random.Generator, nu: float, n: int) -> F64:
    return rng.standard_t(nu, n) * math.sqrt((nu - 2.0) / nu)


@dataclass
class _Hourly:
    spot: Bars
    sigma: F64  # hourly diffusion volatility incl. seasonality
    lv: F64  # log-variance regime per hour (no seasonality)
    premium: F64  # perp premium during each hour (known at its start)
    oi: F64  # open interest (base units) at each hour start
    returns: F64


class MarketSim:
    """The seeded market: candles, funding, open interest and option chains for any symbols."""

    def __init__(
        self,
        seed: int = 7,
        symbols: list[str] | None = None,
        start: str | pd.Timestamp = "2022-01-01",
        end: str | pd.Timestamp = "2024-01-01",
        now: str | pd.Timestamp | None = None,
    ) -> None:
        self.seed = int(seed)
        self.symbols = list(symbols) if symbols is not None else list(DEFAULT_SYMBOLS)
        for s in self.symbols:
            asset_name(s)  # validates the shape
        start_ms = to_ms(start)
        self.start_ms = start_ms - start_ms % HOUR_MS
        self.end_ms = to_ms(end)
        if self.end_ms <= self.start_ms:
            raise ValueError(f"end ({end}) must be after start ({start})")
        # the grid runs one day past the end so prices "at end" and partial bars are defined
        gen_end = self.end_ms - self.end_ms % DAY_MS + 2 * DAY_MS
        self._hour_ts: I64 = np.arange(self.start_ms, gen_end, HOUR_MS, dtype=np.int64)
        self._now_ms = self.end_ms
        if now is not None:
            self.now = now  # type: ignore[assignment]
        self._lock = threading.RLock()
        self._factors_cache: dict[str, F64] | None = None
        self._hourly_cache: dict[str, _Hourly] = {}
        self._agg_cache: dict[tuple[str, str, str], Bars] = {}
        self._minute_cache: dict[tuple[str, str, int], Bars] = {}
        self._chain_cache: dict[tuple[str, int], pd.DataFrame] = {}
        self._crashes: dict[str, list[FlashCrash]] = {}  # injected on demand only (entasis.sim.crashes)

    # ------------------------------------------------------------------ time
    @property
    def start(self) -> pd.Timestamp:
        import pandas as pd

        return pd.Timestamp(self.start_ms, unit="ms", tz="UTC")

    @property
    def end(self) -> pd.Timestamp:
        import pandas as pd

        return pd.Timestamp(self.end_ms, unit="ms", tz="UTC")

    @property
    def now(self) -> pd.Timestamp:
        """The simulated present (default ``end``); settable to move time forward or back."""
        import pandas as pd

        return pd.Timestamp(self._now_ms, unit="ms", tz="UTC")

    @now.setter
    def now(self, value: str | pd.Timestamp) -> None:
        ms = to_ms(value)
        if not self.start_ms < ms <= self.end_ms:
            raise ValueError(f"now={value} must lie in (start, end] = ({self.start}, {self.end}]")
        self._now_ms = ms

    @property
    def now_ms(self) -> int:
        return self._now_ms

    def _resolve_now(self, now: str | pd.Timestamp | int | None) -> int:
        if now is None:
            return self._now_ms
        ms = now if isinstance(now, int) else to_ms(now)
        if not self.start_ms < ms <= self.end_ms:
            raise ValueError(f"now={now} must lie in (start, end] = ({self.start}, {self.end}]")
        return ms

    # ------------------------------------------------------------------ generation
    def params(self, symbol: str) -> AssetParams:
        return asset_params(symbol)

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *keys])

    def _factors(self) -> dict[str, F64]:
        """Market-wide streams shared by every asset (the source of correlation)."""
        with self._lock:
            if self._factors_cache is None:
                n = len(self._hour_ts)
                f = {
                    "m": _std_t(self._rng(0, 1), 4.5, n),
                    "g_fast": _ar1(self._rng(0, 2).standard_normal(n + 1), 0.995),
                    "g_slow": _ar1(self._rng(0, 3).standard_normal(n + 1), 0.9997),
                    "jump": (self._rng(0, 4).random(n) < 1.0 / (24 * 25))
                    * (self._rng(0, 5).standard_normal(n) * 0.02),
                    "drift": _ar1(self._rng(0, 6).standard_normal(n + 1), 0.9995) * 0.3,
                }
                self._factors_cache = f
            return self._factors_cache

    def _hourly(self, symbol: str) -> _Hourly:
        name = asset_name(symbol)
        with self._lock:
            hit = self._hourly_cache.get(name)
            if hit is None:
                hit = self._generate_hourly(name)
                self._hourly_cache[name] = hit
            return hit

    def _generate_hourly(self, name: str) -> _Hourly:
        p = asset_params(name)
        f = self._factors()
        ts = self._hour_ts
        n = len(ts)
        k = p.key

        def rng(i: int) -> np.random.Generator:
            return self._rng(k, i)

        beta, rest = p.beta, math.sqrt(1.0 - p.beta**2)
        z = beta * f["m"] + rest * _std_t(rng(1), p.nu, n)
        idio_vol = _ar1(rng(2).standard_normal(n + 1), 0.99)
        a_f, a_s, a_i = 0.5, 0.4, 0.35
        lv_base = 2.0 * math.log(p.vol / math.sqrt(HOURS_PER_YEAR))
        lv = lv_base + a_f * f["g_fast"] + a_s * f["g_slow"] + a_i * idio_vol - 0.5 * (a_f**2 + a_s**2 + a_i**2)
        hod = (ts // HOUR_MS) % 24
        season = 1.0 + 0.25 * np.cos(2 * np.pi * (hod - 15) / 24.0)
        season /= math.sqrt(1.0 + 0.25**2 / 2.0)
        sigma = np.exp(0.5 * lv) * season
        scale = p.vol / 0.62
        jumps = f["jump"] * beta * scale + (rng(3).random(n) < 1.0 / (24 * 40)) * rng(4).standard_normal(n) * (
            0.025 * scale
        )
        drift = (beta * f["drift"] + rest * 0.25 * _ar1(rng(5).standard_normal(n + 1), 0.9995)) / HOURS_PER_YEAR
        r = drift + sigma * z + jumps  # median log growth ~0: no -sigma^2/2 drag

        dp = p.price_dp
        tick = 10.0**-dp
        p0 = max(round(p.price, dp), tick)
        close = np.maximum(np.round(p0 * np.exp(np.cumsum(r)), dp), tick)
        open_ = np.r_[p0, close[:-1]]
        # exact Brownian-bridge extremes in log space given open, close and the hour's volatility
        a, b = np.log(open_), np.log(close)
        u_hi, u_lo = rng(6).random(n), rng(11).random(n)  # one stream each: prefixes stay prefixes
        spread = (b - a) ** 2
        hi = np.exp(0.5 * (a + b + np.sqrt(spread - 2.0 * sigma**2 * np.log1p(-u_hi))))
        lo = np.exp(0.5 * (a + b - np.sqrt(spread - 2.0 * sigma**2 * np.log1p(-u_lo))))
        high = np.maximum(np.round(hi, dp), np.maximum(open_, close))
        low = np.maximum(np.minimum(np.round(lo, dp), np.minimum(open_, close)), tick)

        vseason = 1.0 + 0.35 * np.cos(2 * np.pi * (hod - 15) / 24.0)
        quote_turnover = (
            p.turnover / 24.0 * vseason * np.exp(0.6 * (lv - lv_base)) * (0.55 + 0.45 * np.abs(z))
            * np.exp(0.3 * rng(7).standard_normal(n) - 0.045)
        )
        typ = (open_ + high + low + close) / 4.0
        lots = np.floor(quote_turnover / typ * 10.0**p.lot_dp + rng(8).random(n)).astype(np.int64)
        qvu = np.rint(lots * typ * 10.0 ** (QV_DP - p.lot_dp)).astype(np.int64)

        premium = (
            INTEREST_8H
            + 0.0005 * _ar1(rng(9).standard_normal(n + 1), 0.97) * np.exp(0.5 * (lv - lv_base))
            + 0.02 * 24.0 * _ema_past(r, 24.0)  # trending markets pay (or receive) funding
        )
        shock = np.maximum(np.abs(r) / sigma - 2.5, 0.0) * 0.03
        liq = _ema_past(shock, 48.0) * 48.0
        x = 0.3 * _ar1(rng(10).standard_normal(n + 1), 0.999) + 2.0 * _ema_past(r, 168.0) * 24.0 - liq
        oi = np.round(p.oi_usd / p0 * np.exp(x), OI_DP)

        spot = Bars(ts, open_, high, low, close, lots, qvu)
        return _Hourly(spot, sigma, lv, premium, oi, r)

    # ------------------------------------------------------------------ injected flash crashes
    @property
    def flash_crashes(self) -> list[FlashCrash]:
        """Every injected crash, in time order."""
        return sorted((c for cs in self._crashes.values() for c in cs), key=lambda c: (c.start, c.asset))

    def inject_flash_crash(self, symbol: str, start: str | pd.Timestamp | int, *, depth: float = 0.2,
                           fall_minutes: int = 3, bounce: float = 0.6, recover_minutes: int = 30,
                           volume_mult: float = 6.0) -> FlashCrash:
        """Overlay one flash crash on ``symbol`` (spot and its perp) from the minute ``start``.

        Coarser candles of the hours it touches are re-aggregated from the crashed minutes; nothing
        else changes. See :mod:`entasis.sim.crashes`.
        """
        from entasis.sim.crashes import FlashCrash

        ms = start if isinstance(start, int) else to_ms(start)
        crash = FlashCrash(asset_name(symbol), ms, depth, fall_minutes, bounce, recover_minutes, volume_mult)
        return self._add_crashes([crash])[0]

    def inject_flash_crashes(self, n: int, *, seed: int, symbols: list[str] | None = None,
                             start: str | pd.Timestamp | int | None = None,
                             end: str | pd.Timestamp | int | None = None, **kw: object) -> list[FlashCrash]:
        """``n`` crashes drawn from ``seed`` (same seed, same crashes) among ``symbols`` (default: the
        market's) with starts in [start, end) (default: the whole simulated range)."""
        from entasis.sim.crashes import seeded_crashes

        names = sorted({asset_name(s) for s in (symbols or self.symbols)})
        lo = self.start_ms if start is None else (start if isinstance(start, int) else to_ms(start))
        hi = self.end_ms if end is None else (end if isinstance(end, int) else to_ms(end))
        return self._add_crashes(seeded_crashes(seed, names, lo, hi, n, **kw))  # type: ignore[arg-type]

    def _add_crashes(self, crashes: list[FlashCrash]) -> list[FlashCrash]:
        for c in crashes:
            if not (self.start_ms < c.start and c.end <= int(self._hour_ts[-1])):
                raise ValueError(f"flash crash at {c.start} ms lies outside the simulated range")
        with self._lock:
            for c in crashes:
                self._crashes.setdefault(c.asset, []).append(c)
            names = {c.asset for c in crashes}
            for mk in [k for k in self._minute_cache if k[0] in names]:
                del self._minute_cache[mk]
            for ak in [k for k in self._agg_cache if k[0] in names]:
                del self._agg_cache[ak]
        return crashes

    def _spot_hours(self, symbol: str) -> Bars:
        """Hourly spot bars; hours touched by an injected crash are re-aggregated from its minutes."""
        name = asset_name(symbol)
        base = self._hourly(name).spot
        crashes = self._crashes.get(name)
        if not crashes:
            return base
        key = (name, "spot", "1h")
        with self._lock:
            hit = self._agg_cache.get(key)
        if hit is not None:
            return hit
        cols = {f: getattr(base, f).copy() for f in Bars._fields}
        for day in sorted({ms // DAY_MS for c in crashes for ms in (c.start, c.end - 1)}):
            agg = aggregate(self._minute_block(name, "spot", day), "1h")
            idx = ((agg.ts - self.start_ms) // HOUR_MS).astype(np.int64)
            ok = (idx >= 0) & (idx < len(base))
            for f in Bars._fields:
                cols[f][idx[ok]] = getattr(agg, f)[ok]
        hit = Bars(**cols)
        with self._lock:
            self._agg_cache[key] = hit
        return hit

    def _perp_factor(self, symbol: str) -> F64:
        return 1.0 + self._hourly(symbol).premium

    def _hour_bars(self, symbol: str, kind: str) -> Bars:
        """Complete hourly bars of the whole generated grid for spot or perp."""
        if kind == "spot":
            return self._spot_hours(symbol)
        if kind != "perp":
            raise ValueError(f"unknown market kind {kind!r}; expected 'spot' or 'perp'")
        key = (asset_name(symbol), "perp", "1h")
        with self._lock:
            hit = self._agg_cache.get(key)
            if hit is None:
                dp = asset_params(symbol).price_dp
                m = self._perp_factor(symbol)
                s = self._spot_hours(symbol)
                hit = _perp_from_spot(s, m, dp, np.rint(s.qvu * PERP_VOLUME_MULT * m).astype(np.int64))
                self._agg_cache[key] = hit
            return hit

    def _agg_full(self, symbol: str, kind: str, timeframe: str) -> Bars:
        if timeframe == "1h":
            return self._hour_bars(symbol, kind)
        key = (asset_name(symbol), kind, timeframe)
        with self._lock:
            hit = self._agg_cache.get(key)
            if hit is None:
                hit = aggregate(self._hour_bars(symbol, kind), timeframe)
                self._agg_cache[key] = hit
            return hit

    def _minute_block(self, symbol: str, kind: str, day: int) -> Bars:
        """One-minute bars of one UTC day, hitting each hour's high and low exactly."""
        name = asset_name(symbol)
        key = (name, kind, day)
        with self._lock:
            hit = self._minute_cache.get(key)
            if hit is not None:
                return hit
        hit = self._generate_minutes(name, kind, day)
        if kind == "spot" and self._crashes.get(name):
            from entasis.sim.crashes import apply_to_minutes

            p = asset_params(name)
            hit = apply_to_minutes(hit, self._crashes[name], p.price_dp, 10.0 ** (QV_DP - p.lot_dp))
        with self._lock:
            if len(self._minute_cache) > 256:
                self._minute_cache.clear()
            self._minute_cache[key] = hit
        return hit

    def _generate_minutes(self, name: str, kind: str, day: int) -> Bars:
        p = asset_params(name)
        ts_h = self._hour_ts
        i0 = int(np.searchsorted(ts_h, day * DAY_MS))
        i1 = int(np.searchsorted(ts_h, (day + 1) * DAY_MS))
        if i1 <= i0:
            return _empty_bars()
        spot = self._hourly(name).spot.take(slice(i0, i1))
        if kind == "perp":
            spot_min = self._minute_block(name, "spot", day)
            return self._perp_minutes(name, day, i0, i1, spot_min)
        n = i1 - i0
        dp = p.price_dp
        scale = 10.0**dp
        rng = self._rng(p.key, 100, day)
        o_h, h_h, l_h, c_h = (x[:, None] for x in (spot.open, spot.high, spot.low, spot.close))
        ih = rng.integers(0, 60, n)
        il = (ih + 1 + rng.integers(0, 59, n)) % 60
        th, tl = ih + 0.5, il + 0.5
        high_first = th < tl
        t1 = np.where(high_first, th, tl)[:, None]
        v1 = np.where(high_first, spot.high, spot.low)[:, None]
        t2 = np.where(high_first, tl, th)[:, None]
        v2 = np.where(high_first, spot.low, spot.high)[:, None]
        t = np.arange(1, 61, dtype=np.float64)[None, :]
        path = np.where(
            t <= t1,
            o_h + (v1 - o_h) * t / t1,
            np.where(t <= t2, v1 + (v2 - v1) * (t - t1) / (t2 - t1), v2 + (c_h - v2) * (t - t2) / (60.0 - t2)),
        )
        walk = np.cumsum(rng.standard_normal((n, 60)), axis=1)
        bridge = walk - t / 60.0 * walk[:, -1:]
        rng_hl = h_h - l_h
        closes = np.round(np.clip(path + bridge * 0.04 * rng_hl, l_h, h_h), dp)
        closes[:, -1] = spot.close
        opens = np.concatenate([o_h, closes[:, :-1]], axis=1)
        wick = np.abs(rng.standard_normal((2, n, 60))) * 0.05 * rng_hl
        highs = np.minimum(np.ceil((np.maximum(opens, closes) + wick[0]) * scale) / scale, h_h)
        lows = np.maximum(np.floor((np.minimum(opens, closes) - wick[1]) * scale) / scale, l_h)
        highs = np.round(np.maximum(highs, np.maximum(opens, closes)), dp)
        lows = np.round(np.minimum(lows, np.minimum(opens, closes)), dp)
        rows = np.arange(n)
        highs[rows, ih] = spot.high
        lows[rows, il] = spot.low
        weight = rng.gamma(1.5, size=(n, 60)) * (1.0 + 3.0 * np.abs(closes - opens) / np.maximum(rng_hl, 1e-300))
        weight[rows, ih] *= 2.0
        weight[rows, il] *= 2.0
        lots = rng.multinomial(spot.lots, weight / weight.sum(axis=1, keepdims=True))
        typ = (opens + highs + lows + closes) / 4.0
        pq = lots * typ
        tot = pq.sum(axis=1, keepdims=True)
        pq = np.where(tot > 0, pq / np.where(tot > 0, tot, 1.0), 1.0 / 60.0)
        qvu = rng.multinomial(spot.qvu, pq)
        ts = (spot.ts[:, None] + np.arange(60, dtype=np.int64)[None, :] * MINUTE_MS).ravel()
        f64 = np.float64
        return Bars(ts, opens.ravel().astype(f64), highs.ravel().astype(f64), lows.ravel().astype(f64),
                    closes.ravel().astype(f64), lots.ravel().astype(np.int64), qvu.ravel().astype(np.int64))

    def _perp_minutes(self, name: str, day: int, i0: int, i1: int, spot_min: Bars) -> Bars:
        p = asset_params(name)
        dp = p.price_dp
        perp_h = self._hour_bars(name, "perp").take(slice(i0, i1))
        m = np.repeat(self._perp_factor(name)[i0:i1], 60)
        n = i1 - i0
        rng = self._rng(p.key, 101, day)
        w = spot_min.qvu.reshape(n, 60).astype(np.float64)
        tot = w.sum(axis=1, keepdims=True)
        w = np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 1.0 / 60.0)
        qvu = rng.multinomial(perp_h.qvu, w).ravel().astype(np.int64)
        return _perp_from_spot(spot_min, m, dp, qvu)

    # ------------------------------------------------------------------ bars with a "now"
    def _minutes_between(self, symbol: str, kind: str, lo: int, hi: int, now: int) -> Bars:
        """Minute bars with open in [lo, hi), complete before ``now``, plus the partial minute at now."""
        lo = max(lo, self.start_ms)
        hi = min(hi, now)
        if hi <= lo:
            return _empty_bars()
        parts = [self._minute_block(symbol, kind, d) for d in range(lo // DAY_MS, (hi - 1) // DAY_MS + 1)]
        mins = Bars.concat(parts)
        sel = (mins.ts >= lo) & (mins.ts < hi) & (mins.ts + MINUTE_MS <= now)
        out = mins.take(sel)
        cur = now - now % MINUTE_MS
        if cur < now and lo <= cur < hi:
            j = np.searchsorted(mins.ts, cur)
            if j < len(mins) and mins.ts[j] == cur:
                out = Bars.concat([out, self._partial_minute(symbol, mins.take(slice(j, j + 1)), now - cur)])
        return out

    def _partial_minute(self, symbol: str, m: Bars, elapsed_ms: int) -> Bars:
        frac = elapsed_ms / MINUTE_MS
        dp = asset_params(symbol).price_dp
        close = np.round(m.open + (m.close - m.open) * frac, dp)
        return Bars(
            m.ts, m.open, np.maximum(m.open, close), np.minimum(m.open, close), close,
            np.floor(m.lots * frac).astype(np.int64), np.floor(m.qvu * frac).astype(np.int64),
        )

    def bars(
        self, symbol: str, timeframe: str, kind: str = "spot", *, lo: int | None = None, hi: int | None = None,
        now: int | None = None,
    ) -> Bars:
        """Bars with open time in [lo, hi] (ms) and open < now; the last is partial when now is mid-bar."""
        size = timeframe_ms(timeframe)
        now = self._now_ms if now is None else now
        # a bucket that starts before ``start`` (a week, or a day when start is mid-day) is listed
        # under its real open time, as an exchange lists the first candle after a listing
        lo = int(bucket_start(self.start_ms, timeframe)) if lo is None else lo
        hi = now - 1 if hi is None else min(hi, now - 1)
        if hi < lo:
            return _empty_bars()
        if size < HOUR_MS:
            first = int(bucket_start(lo, timeframe))
            mins = self._minutes_between(symbol, kind, first, hi + size, now)
            out = aggregate(mins, timeframe) if timeframe != "1m" else mins
            return out.take((out.ts >= lo) & (out.ts <= hi))
        full = self._agg_full(symbol, kind, timeframe)
        cur = int(bucket_start(now, timeframe))
        sel = (full.ts >= lo) & (full.ts <= hi) & (full.ts < cur)
        # the first bucket may be cut by start (e.g. a week starting before start): still complete data
        out = full.take(sel)
        if cur < now and lo <= cur <= hi:
            out = Bars.concat([out, self._partial_bucket(symbol, kind, timeframe, cur, now)])
        return out

    def _partial_bucket(self, symbol: str, kind: str, timeframe: str, cur: int, now: int) -> Bars:
        hours = self._hour_bars(symbol, kind)
        nh = now - now % HOUR_MS
        parts = [hours.take((hours.ts >= cur) & (hours.ts < nh))]
        if nh < now:
            mins = self._minutes_between(symbol, kind, nh, now, now)
            if len(mins):
                parts.append(aggregate(mins, "1h"))
        got = Bars.concat(parts)
        if len(got) == 0:
            return got
        agg = aggregate(got, timeframe)
        return agg.take(slice(len(agg) - 1, len(agg)))

    def to_frame(self, symbol: str, bars: Bars) -> pd.DataFrame:
        """Bars as the candle frame: ts (UTC open time), open, high, low, close, volume, quote_volume."""
        import pandas as pd

        p = asset_params(symbol)
        return pd.DataFrame(
            {
                "ts": pd.to_datetime(bars.ts, unit="ms", utc=True),
                "open": bars.open,
                "high": bars.high,
                "low": bars.low,
                "close": bars.close,
                "volume": bars.lots / 10.0**p.lot_dp,
                "quote_volume": bars.qvu / 10.0**QV_DP,
            }
        )

    # ------------------------------------------------------------------ public API
    def candles(
        self, symbol: str, timeframe: str, *, kind: str = "spot", now: str | pd.Timestamp | None = None
    ) -> pd.DataFrame:
        """Candles with open time < now (default ``self.now``, i.e. ``end``); the last is partial mid-bar.

        ``kind='perp'`` gives the perpetual's candles (spot times 1 + premium, more volume).
        """
        return self.to_frame(symbol, self.bars(symbol, timeframe, kind, now=self._resolve_now(now)))

    def price_at(self, symbol: str, ts: str | pd.Timestamp | int, kind: str = "spot") -> float:
        """Last traded price at ``ts``: the close of the partial bar that ends at ts (no look-ahead)."""
        ms = ts if isinstance(ts, int) else to_ms(ts)
        if not self.start_ms < ms <= self._hour_ts[-1]:
            raise ValueError(f"no price at {ts}: outside the simulated range")
        if ms % MINUTE_MS == 0:
            block = self._minute_block(symbol, kind, (ms - 1) // DAY_MS)
            j = int(np.searchsorted(block.ts, ms - MINUTE_MS))
            return float(block.close[j])
        cur = ms - ms % MINUTE_MS
        block = self._minute_block(symbol, kind, cur // DAY_MS)
        j = int(np.searchsorted(block.ts, cur))
        return float(self._partial_minute(symbol, block.take(slice(j, j + 1)), ms - cur).close[0])

    def _mark_at_hours(self, symbol: str, idx: I64) -> F64:
        """Perp mark at hour starts: the previous hour's perp close (the first hour: its open)."""
        perp = self._hour_bars(symbol, "perp")
        return np.where(idx > 0, perp.close[np.maximum(idx - 1, 0)], perp.open[idx])

    def funding(self, symbol: str, *, now: str | pd.Timestamp | None = None) -> pd.DataFrame:
        """Perpetual funding every 8h (00/08/16 UTC) for times < now: ts, funding_rate, mark_price."""
        import pandas as pd

        ts, rate, mark = self.funding_arrays(symbol, now=self._resolve_now(now))
        return pd.DataFrame({"ts": pd.to_datetime(ts, unit="ms", utc=True), "funding_rate": rate, "mark_price": mark})

    def funding_arrays(self, symbol: str, *, now: int | None = None) -> tuple[I64, F64, F64]:
        now = self._now_ms if now is None else now
        h = self._hourly(symbol)
        period = 8 * HOUR_MS
        first = -(-self.start_ms // period) * period
        ts = np.arange(first, now, period, dtype=np.int64)
        idx = ((ts - self.start_ms) // HOUR_MS).astype(np.int64)
        csum = np.r_[0.0, np.cumsum(h.premium)]
        lo = np.maximum(idx - 8, 0)
        count = idx - lo
        mean_p = np.where(count > 0, (csum[idx] - csum[lo]) / np.maximum(count, 1), h.premium[idx])
        rate = mean_p + np.clip(INTEREST_8H - mean_p, -FUNDING_CLAMP, FUNDING_CLAMP)
        rate = np.round(np.clip(rate, -FUNDING_CAP, FUNDING_CAP), 8)
        mark = self._mark_at_hours(symbol, idx)
        return ts, rate, mark

    def open_interest(
        self, symbol: str, timeframe: str = "1h", *, now: str | pd.Timestamp | None = None
    ) -> pd.DataFrame:
        """Perp open interest snapshots every ``timeframe`` for times < now: ts, open_interest (base
        units), open_interest_value (quote)."""
        import pandas as pd

        ts, oi, val = self.open_interest_arrays(symbol, timeframe, now=self._resolve_now(now))
        return pd.DataFrame(
            {"ts": pd.to_datetime(ts, unit="ms", utc=True), "open_interest": oi, "open_interest_value": val}
        )

    def open_interest_arrays(
        self, symbol: str, timeframe: str = "1h", *, lo: int | None = None, hi: int | None = None,
        now: int | None = None,
    ) -> tuple[I64, F64, F64]:
        size = timeframe_ms(timeframe)
        if timeframe not in ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"):
            raise ValueError(f"open interest is kept for 5m..1d periods, not {timeframe!r}")
        now = self._now_ms if now is None else now
        lo = self.start_ms if lo is None else max(lo, self.start_ms)
        hi = now - 1 if hi is None else min(hi, now - 1)
        first = -(-lo // size) * size
        ts = np.arange(first, hi + 1, size, dtype=np.int64)
        if len(ts) == 0:
            e = np.empty(0)
            return ts, e, e
        h = self._hourly(symbol)
        idx = ((ts - self.start_ms) // HOUR_MS).astype(np.int64)
        if size >= HOUR_MS:
            oi = h.oi[idx]
            mark = self._mark_at_hours(symbol, idx)
        else:
            # between hourly snapshots OI jitters with noise that carries no information about the future
            p = asset_params(symbol)
            per_hour = HOUR_MS // size
            k = ((ts - self.start_ms) // size).astype(np.int64)
            noise = self._rng(p.key, 200, per_hour).standard_normal(int(k[-1]) + 1)[k]
            oi = np.round(h.oi[idx] * np.exp(0.002 * noise * (ts % HOUR_MS > 0)), OI_DP)
            mins = self._minutes_between(symbol, "perp", int(ts[0]) - MINUTE_MS, int(ts[-1]), now)
            j = np.searchsorted(mins.ts, ts - MINUTE_MS)
            ok = (j < len(mins)) & (mins.ts[np.minimum(j, len(mins) - 1)] == ts - MINUTE_MS) if len(mins) else \
                np.zeros(len(ts), dtype=bool)
            first_open = float(self._hour_bars(symbol, "perp").open[0])
            mark = np.where(ok, mins.close[np.minimum(j, max(len(mins) - 1, 0))] if len(mins) else first_open,
                            first_open)
        return ts, oi, np.round(oi * mark, 2)

    def option_chain(self, currency: str, ts: str | pd.Timestamp | int) -> pd.DataFrame:
        """A Deribit-style option chain snapshot at ``ts`` (must not be after now), like
        ``market.option_quotes`` without the exchange column."""
        return self.option_chain_full(currency, ts)[QUOTE_COLUMNS].copy()

    def option_chain_full(self, currency: str, ts: str | pd.Timestamp | int) -> pd.DataFrame:
        """The chain with the extra fields the simulated exchange serves (bid/ask IV, creation...)."""
        ms = ts if isinstance(ts, int) else to_ms(ts)
        if ms > self._now_ms:
            raise ValueError(f"option chain at {ts} is after now ({self.now}): that would be look-ahead")
        if ms <= self.start_ms:
            raise ValueError(f"option chain at {ts} is not after the simulated start ({self.start})")
        key = (currency.upper(), ms)
        with self._lock:
            hit = self._chain_cache.get(key)
        if hit is None:
            hit = build_chain(self, currency.upper(), ms)
            with self._lock:
                if len(self._chain_cache) > 64:
                    self._chain_cache.clear()
                self._chain_cache[key] = hit
        return hit

    def variance_at(self, symbol: str, ms: int) -> tuple[float, float]:
        """(current, long-run) annualised variance of an asset at ``ms``: the Heston v0 and theta."""
        h = self._hourly(symbol)
        i = int((ms - 1 - self.start_ms) // HOUR_MS)
        p = asset_params(symbol)
        return float(np.exp(h.lv[i]) * HOURS_PER_YEAR), p.vol**2

    def premium_at(self, symbol: str, ms: int) -> float:
        h = self._hourly(symbol)
        return float(h.premium[int((ms - 1 - self.start_ms) // HOUR_MS)])
