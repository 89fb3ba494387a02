"""The one exchange client: ccxt with rate limiting, timeouts, retries and a sim switch.

Every collector talks to an exchange through :class:`ExchangeClient` so that retry policy, error
classification and the simulated-exchange redirect live in one place:

* transient errors (``ccxt.NetworkError`` and all its subclasses: rate limits, DDoS protection,
  timeouts, exchange not available) are retried with exponential backoff and jitter, honouring a
  ``Retry-After`` header when the venue sends one;
* everything else fails at once. ``AuthenticationError``, ``BadSymbol`` and ``BadRequest`` become
  :class:`FatalExchangeError` with a message that says what to fix;
* with ``exchange.sim_url`` (env ``ENTASIS_SIM_URL``) set, every ccxt base URL
  ``https://<host>/<path>`` becomes ``{sim_url}/<venue>/<path>``; unset, the real venues are used.

API keys come only from settings (``ENTASIS_EXCHANGE__API_KEY`` / ``__API_SECRET``) and are never
logged or put in an error message.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from entasis.config import EXCHANGES, ExchangeConfig, get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: The sim serves each venue under one prefix; binance spot and USD-M futures share ``binance``.
VENUE = {"binance": "binance", "binanceusdm": "binance", "bybit": "bybit", "deribit": "deribit"}
#: Market types each exchange id loads, so load_markets only asks for what we collect.
MARKET_TYPES: dict[str, list[str]] = {
    "binance": ["spot"],
    "binanceusdm": ["linear"],
    "bybit": ["spot", "linear"],
}
#: Largest page each endpoint serves (venue documentation).
OHLCV_LIMIT = {"binance": 1000, "binanceusdm": 1000, "bybit": 1000}
FUNDING_LIMIT = {"binanceusdm": 1000, "bybit": 200, "binance": 1000}
OPEN_INTEREST_LIMIT = {"binanceusdm": 500, "bybit": 200, "binance": 500}
#: ccxt's throttle interval against the simulated exchange: venue limits do not apply to a local process.
SIM_RATE_LIMIT_MS = 1.0

_HOST = re.compile(r"^https?://[^/]+")


class CollectError(RuntimeError):
    """A collection run failed; the message says which exchange, call and symbol."""


class FatalExchangeError(CollectError):
    """A non-retryable exchange error (bad credentials, unknown symbol, bad request)."""


class RetriesExhausted(CollectError):
    """A transient error persisted through every retry."""


def rewrite_urls(api: Any, sim_url: str, venue: str) -> Any:
    """Point every ``https://<host>/<path>`` in ccxt's ``urls['api']`` at ``{sim_url}/<venue>/<path>``."""
    base = sim_url.rstrip("/") + "/" + venue
    if isinstance(api, str):
        return _HOST.sub(base, api)
    if isinstance(api, dict):
        return {k: rewrite_urls(v, sim_url, venue) for k, v in api.items()}
    if isinstance(api, list):
        return [rewrite_urls(v, sim_url, venue) for v in api]
    return api


def _retry_after_s(headers: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), if the venue sent one."""
    if not headers:
        return None
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
    except AttributeError:
        return None
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits about base * 2**n, capped at max_s."""

    max_retries: int = 5
    base_s: float = 0.5
    max_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_settings(cls, cfg: ExchangeConfig, rng: random.Random | None = None) -> RetryPolicy:
        return cls(max_retries=cfg.max_retries, base_s=cfg.backoff_base_s, max_s=cfg.backoff_max_s,
                   rng=rng or random.Random())

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Wait before retry ``attempt`` (0-based): half fixed, half jitter; Retry-After is a floor."""
        cap = min(self.max_s, self.base_s * (2**attempt))
        wait = cap * (0.5 + 0.5 * self.rng.random())
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_s))
        return wait


@dataclass
class ClientStats:
    """Where a client's time went: HTTP round trips, ccxt's throttle, ccxt's parsing, ours."""

    calls: int = 0
    requests: int = 0
    retries: int = 0
    http_s: float = 0.0
    throttle_s: float = 0.0
    call_s: float = 0.0
    frame_s: float = 0.0

    @property
    def ccxt_parse_s(self) -> float:
        return max(0.0, self.call_s - self.http_s - self.throttle_s)


class ExchangeClient:
    """A ccxt exchange with our retry policy, timeouts, sim redirect and typed fetch helpers."""

    def __init__(
        self,
        exchange_id: str,
        *,
        config: ExchangeConfig | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        rate_limit_ms: float | None = None,
    ) -> None:
        import ccxt

        if exchange_id not in EXCHANGES:
            raise ValueError(f"unknown exchange {exchange_id!r}; expected one of {', '.join(EXCHANGES)}")
        cfg = config or get_settings().exchange
        self.id = exchange_id
        self.sim_url = cfg.sim_url or None
        self.policy = RetryPolicy.from_settings(cfg, rng)
        self._sleep = sleep
        self.stats = ClientStats()
        opts: dict[str, Any] = {"enableRateLimit": True, "timeout": int(cfg.timeout_ms)}
        if cfg.api_key is not None:
            opts["apiKey"] = cfg.api_key.get_secret_value()
        if cfg.api_secret is not None:
            opts["secret"] = cfg.api_secret.get_secret_value()
        ex = getattr(ccxt, exchange_id)(opts)
        if exchange_id in MARKET_TYPES:
            ex.options["fetchMarkets"] = {**(ex.options.get("fetchMarkets") or {}),
                                          "types": list(MARKET_TYPES[exchange_id])}
        if exchange_id == "deribit":
            ex.options["fetchMarkets"] = {**(ex.options.get("fetchMarkets") or {}), "fetchAllMarkets": True}
        if self.sim_url:
            ex.urls["api"] = rewrite_urls(ex.urls["api"], self.sim_url, VENUE[exchange_id])
            ex.rateLimit = SIM_RATE_LIMIT_MS
        if rate_limit_ms is not None:
            ex.rateLimit = float(rate_limit_ms)
        ex.enableLastJsonResponse = True  # quote volume is read from the raw klines body
        self._instrument(ex)
        self.ex = ex
        self._markets: dict[str, Any] | None = None

    # -- instrumentation --------------------------------------------------------------------------
    def _instrument(self, ex: Any) -> None:
        """Time HTTP round trips and ccxt's throttle separately, so benches can say where time goes."""
        fetch, throttle = ex.fetch, ex.throttle
        stats = self.stats

        def timed_fetch(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            stats.requests += 1
            try:
                return fetch(*a, **k)
            finally:
                stats.http_s += time.perf_counter() - t

        def timed_throttle(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return throttle(*a, **k)
            finally:
                stats.throttle_s += time.perf_counter() - t

        ex.fetch = timed_fetch
        ex.throttle = timed_throttle

    # -- the retry loop ---------------------------------------------------------------------------
    def call(self, method: str, *args: Any, what: str = "", **kwargs: Any) -> Any:
        """Call ccxt ``method`` retrying transient errors; fatal ones raise at once, clearly."""
        import ccxt

        fn = getattr(self.ex, method)
        label = f"{self.id} {method}({what})" if what else f"{self.id} {method}"
        attempt = 0
        while True:
            t = time.perf_counter()
            self.stats.calls += 1
            try:
                return fn(*args, **kwargs)
            except ccxt.NetworkError as e:
                if attempt >= self.policy.max_retries:
                    raise RetriesExhausted(
                        f"{label}: gave up after {attempt + 1} attempts; last error "
                        f"{type(e).__name__}: {_short(e)}"
                    ) from e
                wait = self.policy.delay(attempt, _retry_after_s(getattr(self.ex, "last_response_headers", None)))
                log.warning("%s: %s (%s); retry %d/%d in %.2fs", label, type(e).__name__, _short(e),
                            attempt + 1, self.policy.max_retries, wait)
                self.stats.retries += 1
                attempt += 1
                self._sleep(wait)
            except ccxt.AuthenticationError as e:
                raise FatalExchangeError(
                    f"{label}: authentication failed ({type(e).__name__}: {_short(e)}); check "
                    "ENTASIS_EXCHANGE__API_KEY / ENTASIS_EXCHANGE__API_SECRET (public data needs no key)"
                ) from e
            except ccxt.BadSymbol as e:
                raise FatalExchangeError(
                    f"{label}: the exchange does not know this symbol ({_short(e)}); use ccxt's unified "
                    "form, 'BTC/USDT' for spot or 'BTC/USDT:USDT' for perpetuals"
                ) from e
            except ccxt.BadRequest as e:
                raise FatalExchangeError(f"{label}: request rejected ({type(e).__name__}: {_short(e)})") from e
            except ccxt.BaseError as e:
                raise CollectError(f"{label}: {type(e).__name__}: {_short(e)}") from e
            finally:
                self.stats.call_s += time.perf_counter() - t

    # -- markets ----------------------------------------------------------------------------------
    def load_markets(self) -> dict[str, Any]:
        if self._markets is None:
            self._markets = self.call("load_markets", what="markets")
        return self._markets

    def check_symbol(self, symbol: str) -> dict[str, Any]:
        """The market for ``symbol``; an unknown one is a fatal, clear error before any data call."""
        markets = self.load_markets()
        if symbol not in markets:
            near = sorted(s for s in markets if s.split(":")[0] == symbol.split(":")[0])[:3]
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise FatalExchangeError(f"{self.id}: unknown symbol {symbol!r}{hint}")
        return dict(markets[symbol])

    def instruments_frame(self) -> pd.DataFrame:
        """market.instruments rows for every market this client loaded."""
        import pandas as pd

        rows = []
        for sym, m in self.load_markets().items():
            mtype = "option" if m.get("option") else "swap" if m.get("swap") else str(m.get("type") or "spot")
            rows.append({"exchange": self.id, "symbol": sym, "market_type": mtype, "base": m.get("base"),
                         "quote": m.get("quote"), "active": m.get("active") is not False})
        return pd.DataFrame(rows, columns=["exchange", "symbol", "market_type", "base", "quote", "active"])

    # -- typed fetches ----------------------------------------------------------------------------
    def fetch_ohlcv(self, symbol: str, timeframe: str, since: int, until: int, limit: int) -> pd.DataFrame:
        """Bars with open time in [since, until) as served (order and duplicates kept), ms timestamps."""
        rows = self.call("fetch_ohlcv", symbol, timeframe, since, limit, {"until": until - 1},
                         what=f"{symbol} {timeframe} since={since}")
        raw = getattr(self.ex, "last_json_response", None)
        t = time.perf_counter()
        try:
            return ohlcv_frame(rows, _quote_volumes(raw))
        finally:
            self.stats.frame_s += time.perf_counter() - t

    def fetch_funding(self, symbol: str, since: int, until: int, limit: int) -> pd.DataFrame:
        rows = self.call("fetch_funding_rate_history", symbol, since, limit, {"until": until - 1},
                         what=f"{symbol} since={since}")
        t = time.perf_counter()
        try:
            return funding_frame(rows)
        finally:
            self.stats.frame_s += time.perf_counter() - t

    def fetch_open_interest(self, symbol: str, timeframe: str, since: int, until: int, limit: int) -> pd.DataFrame:
        rows = self.call("fetch_open_interest_history", symbol, timeframe, since, limit, {"until": until - 1},
                         what=f"{symbol} {timeframe} since={since}")
        t = time.perf_counter()
        try:
            return open_interest_frame(rows)
        finally:
            self.stats.frame_s += time.perf_counter() - t

    def fetch_option_chain(self, currency: str) -> list[dict[str, Any]]:
        """Book summary of every listed option on ``currency`` (one request)."""
        chain = self.call("fetch_option_chain", currency, what=currency)
        return [dict(v.get("info") or {}) | {"symbol": k} for k, v in chain.items()]

    def fetch_greeks(self, symbol: str) -> dict[str, Any]:
        return dict(self.call("fetch_greeks", symbol, what=symbol))


def _short(e: BaseException, n: int = 300) -> str:
    text = str(e).replace("\n", " ")
    return text if len(text) <= n else text[:n] + "..."


def _quote_volumes(raw: Any) -> dict[int, list[float]]:
    """Quote volumes by open time from a raw klines body, in served order per open time.

    Binance rows are [t,o,h,l,c,v,T,qv,...], Bybit ``result.list`` rows [t,o,h,l,c,v,turnover];
    ccxt drops that column. Rows sharing an open time keep their relative order, as ccxt's stable
    sort does, so duplicates get their own value back. Anything else: none.
    """
    rows: Any = raw
    idx = 7
    if isinstance(raw, dict):
        res = raw.get("result")
        rows = res.get("list") if isinstance(res, dict) else None
        idx = 6
    if not isinstance(rows, list):
        return {}
    out: dict[int, list[float]] = {}
    for r in rows:
        if isinstance(r, list | tuple) and len(r) > idx:
            try:
                t = int(float(r[0]))
            except (TypeError, ValueError):
                continue
            try:
                v = float(r[idx])
            except (TypeError, ValueError):
                v = float("nan")
            out.setdefault(t, []).append(v)
    return out


def ohlcv_frame(rows: list[list[Any]], quote_volume: dict[int, list[float]] | None = None) -> pd.DataFrame:
    """ccxt OHLCV rows -> frame with ms ``t`` plus numeric columns; unparseable cells become NaN."""
    import numpy as np
    import pandas as pd

    cols = ["t", "open", "high", "low", "close", "volume"]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in [*cols, "quote_volume"]}).astype({"t": "int64"})
    width = [list(r[:6]) + [None] * (6 - len(r[:6])) for r in rows]
    df = pd.DataFrame(width, columns=cols)
    for c in cols[1:]:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    t = pd.to_numeric(df["t"], errors="coerce")
    df = df[t.notna()].copy()
    df["t"] = t[t.notna()].astype("int64")
    queues = {k: list(v) for k, v in (quote_volume or {}).items()}
    df["quote_volume"] = np.array([queues[x].pop(0) if queues.get(x) else np.nan for x in df["t"].tolist()],
                                  dtype="float64")
    return df.reset_index(drop=True)


def funding_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    recs = []
    for r in rows:
        info = r.get("info") or {}
        mark = info.get("markPrice") if isinstance(info, dict) else None
        recs.append({"t": r.get("timestamp"), "funding_rate": r.get("fundingRate"), "mark_price": mark})
    df = pd.DataFrame(recs, columns=["t", "funding_rate", "mark_price"])
    for c in ("funding_rate", "mark_price"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    t = pd.to_numeric(df["t"], errors="coerce")
    df = df[t.notna()].copy()
    df["t"] = t[t.notna()].astype("int64")
    return df.reset_index(drop=True)


def open_interest_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    recs = [{"t": r.get("timestamp"),
             "open_interest": r.get("openInterestAmount", r.get("baseVolume")),
             "open_interest_value": r.get("openInterestValue", r.get("quoteVolume"))} for r in rows]
    df = pd.DataFrame(recs, columns=["t", "open_interest", "open_interest_value"])
    for c in ("open_interest", "open_interest_value"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    t = pd.to_numeric(df["t"], errors="coerce")
    df = df[t.notna()].copy()
    df["t"] = t[t.notna()].astype("int64")
    return df.reset_index(drop=True)
