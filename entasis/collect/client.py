"""The one exchange client: ccxt with rate limiting, timeouts, retries and a sim switch.

Every collector talks to an exchange through :class:`ExchangeClient` so that retry policy, error
classification and the simulated-exchange redirect live in one place:

* transient errors (``ccxt.NetworkError`` and all its subclasses: rate limits, DDoS protection,
  timeouts, exchange not available) are retried by ``tenacity`` with exponential backoff and jitter
  (:class:`RetryPolicy`), honouring a ``Retry-After`` header when the venue sends one;
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from entasis.config import EXCHANGES, ExchangeConfig, get_settings

if TYPE_CHECKING:
    import numpy as np
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
#: Venues that fill a page from the end of the requested window (newest first).
PAGES_FROM_END = {"bybit"}
#: ccxt's throttle interval against the simulated exchange: venue limits do not apply to a local process.
SIM_RATE_LIMIT_MS = 1.0

_HOST = re.compile(r"^https?://[^/]+")


class CollectError(RuntimeError):
    """A collection run failed; the message says which exchange, call and symbol."""


class FatalExchangeError(CollectError):
    """A non-retryable exchange error (bad credentials, unknown symbol, bad request)."""


class RetriesExhausted(CollectError):
    """A transient error persisted through every retry."""


class _SharedThrottle:
    """ccxt's request spacing (``rateLimit`` ms per unit of cost), shared by several instances."""

    def __init__(self, interval_ms: float) -> None:
        self.interval_s = interval_ms / 1000.0
        self._lock = threading.Lock()
        self._next = 0.0

    def __call__(self, cost: float | None = None) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval_s * (1 if cost is None else float(cost))
        if start > now:
            time.sleep(start - now)


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
        if exchange_id not in EXCHANGES:
            raise ValueError(f"unknown exchange {exchange_id!r}; expected one of {', '.join(EXCHANGES)}")
        cfg = config or get_settings().exchange
        self.id = exchange_id
        self.sim_url = cfg.sim_url or None
        self.policy = RetryPolicy.from_settings(cfg, rng)
        self._sleep = sleep
        self.stats = ClientStats()
        self._opts: dict[str, Any] = {"enableRateLimit": True, "timeout": int(cfg.timeout_ms)}
        if cfg.api_key is not None:
            self._opts["apiKey"] = cfg.api_key.get_secret_value()
        if cfg.api_secret is not None:
            self._opts["secret"] = cfg.api_secret.get_secret_value()
        self._rate_limit_ms = rate_limit_ms
        self._stats_lock = threading.Lock()
        self.ex = self._new_exchange()
        self._markets: dict[str, Any] | None = None

    def _new_exchange(self, throttle: Callable[..., Any] | None = None) -> Any:
        """A configured, instrumented ccxt instance (one per thread when calls run in parallel)."""
        import ccxt

        ex = getattr(ccxt, self.id)(dict(self._opts))
        if self.id in MARKET_TYPES:
            types = list(MARKET_TYPES[self.id])
            ex.options["fetchMarkets"] = {**(ex.options.get("fetchMarkets") or {}), "types": types}
            # with keys set, these venues load currencies from a private endpoint; market data needs none
            ex.has = {**ex.has, "fetchCurrencies": False}
            # ... and Binance adds its margin pairs from a signed private endpoint (sapi margin/allPairs),
            # which fails without margin permissions: with keys set, collection stopped at load_markets
            ex.options["fetchMargins"] = False
        if self.id == "deribit":
            ex.options["fetchMarkets"] = {**(ex.options.get("fetchMarkets") or {}), "fetchAllMarkets": True}
        if self.sim_url:
            ex.urls["api"] = rewrite_urls(ex.urls["api"], self.sim_url, VENUE[self.id])
            ex.rateLimit = SIM_RATE_LIMIT_MS
        if self._rate_limit_ms is not None:
            ex.rateLimit = float(self._rate_limit_ms)
        ex.enableLastJsonResponse = True  # quote volume is read from the raw klines body
        self._instrument(ex, throttle)
        return ex

    # -- instrumentation --------------------------------------------------------------------------
    def _instrument(self, ex: Any, throttle: Callable[..., Any] | None = None) -> None:
        """Time HTTP round trips and ccxt's throttle separately, so benches can say where time goes."""
        import ccxt

        fetch, inner = ex.fetch, throttle or ex.throttle
        stats, lock = self.stats, self._stats_lock

        def timed_fetch(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                out = fetch(*a, **k)
                if isinstance(out, str | bytes):
                    # ccxt hands back the raw text when a 200 body is not JSON (cut off in transit, a
                    # proxy's page); its parsers then read it as an empty answer and a snapshot or a
                    # page silently loses its rows. Every endpoint we call answers JSON: retry instead.
                    raise ccxt.NetworkError(f"{self.id}: response body is not valid JSON "
                                            f"({len(out)} bytes: {out[:80]!r})")
                return out
            finally:
                with lock:
                    stats.requests += 1
                    stats.http_s += time.perf_counter() - t

        def timed_throttle(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                with lock:
                    stats.throttle_s += time.perf_counter() - t

        ex.fetch = timed_fetch
        ex.throttle = timed_throttle

    # -- the retry loop ---------------------------------------------------------------------------
    def call(self, method: str, *args: Any, what: str = "", **kwargs: Any) -> Any:
        """Call ccxt ``method`` retrying transient errors; fatal ones raise at once, clearly."""
        return self._call(self.ex, method, *args, what=what, **kwargs)

    def _call(self, ex: Any, method: str, *args: Any, what: str = "", **kwargs: Any) -> Any:
        import ccxt

        fn = getattr(ex, method)
        label = f"{self.id} {method}({what})" if what else f"{self.id} {method}"
        try:
            return self._retrying(ex, label)(self._attempt, fn, *args, **kwargs)
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

    def _retrying(self, ex: Any, label: str) -> Any:
        """tenacity's loop with our policy: only ``ccxt.NetworkError`` (and subclasses) is retried,
        ``max_retries`` retries after the first attempt, ``RetryPolicy.delay`` waits (jittered
        backoff, the venue's Retry-After header as a floor), ``RetriesExhausted`` at the end.
        Everything else leaves the loop at once and is mapped by ``_call``."""
        import ccxt
        import tenacity

        policy = self.policy

        def wait(state: tenacity.RetryCallState) -> float:
            return policy.delay(state.attempt_number - 1,
                                _retry_after_s(getattr(ex, "last_response_headers", None)))

        def before_sleep(state: tenacity.RetryCallState) -> None:
            e = state.outcome.exception() if state.outcome else None
            # the label and the exception text only: ccxt puts neither keys nor signatures in them
            log.warning("%s: %s (%s); retry %d/%d in %.2fs", label, type(e).__name__,
                        _short(e) if e else "", state.attempt_number, policy.max_retries, state.upcoming_sleep)
            with self._stats_lock:
                self.stats.retries += 1

        def give_up(state: tenacity.RetryCallState) -> Any:
            e = state.outcome.exception() if state.outcome else None
            raise RetriesExhausted(
                f"{label}: gave up after {state.attempt_number} attempts; last error "
                f"{type(e).__name__}: {_short(e) if e else ''}"
            ) from e

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(ccxt.NetworkError),
            stop=tenacity.stop_after_attempt(policy.max_retries + 1),
            wait=wait,
            sleep=self._sleep,
            before_sleep=before_sleep,
            retry_error_callback=give_up,
        )

    def _attempt(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One try of ``fn``, counted and timed for ``stats``."""
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with self._stats_lock:
                self.stats.calls += 1
                self.stats.call_s += time.perf_counter() - t

    def call_many(self, method: str, arg_list: list[tuple[Any, ...]], *, workers: int = 8,
                  what: Callable[[tuple[Any, ...]], str] = str) -> list[Any]:
        """``call(method, *args)`` for each args, in parallel threads; results in input order.

        Parallel requests hide network latency; one throttle shared by every thread keeps the
        request rate at the venue's limit (ccxt's ``rateLimit`` spacing), as one sequential client
        would. The first failure cancels what has not started and is raised.
        """
        from concurrent.futures import ThreadPoolExecutor

        if workers <= 1 or len(arg_list) <= 1:
            return [self.call(method, *a, what=what(a)) for a in arg_list]
        markets = self.load_markets()
        shared = _SharedThrottle(float(self.ex.rateLimit))
        local = threading.local()

        def one(args: tuple[Any, ...]) -> Any:
            ex = getattr(local, "ex", None)
            if ex is None:
                ex = self._new_exchange(shared)
                ex.set_markets(markets, self.ex.currencies)
                local.ex = ex
            return self._call(ex, method, *args, what=what(args))

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{self.id}-call") as pool:
            futures = [pool.submit(one, a) for a in arg_list]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

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
    def _timed_frame(self, build: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """``build()``, its time added to ``stats.frame_s`` (parsing, apart from the network)."""
        t = time.perf_counter()
        try:
            return build()
        finally:
            self.stats.frame_s += time.perf_counter() - t

    def fetch_ohlcv(self, symbol: str, timeframe: str, since: int, until: int, limit: int) -> pd.DataFrame:
        """Bars with open time in [since, until) as served (order and duplicates kept), ms timestamps."""
        rows = self.call("fetch_ohlcv", symbol, timeframe, since, limit, {"until": until - 1},
                         what=f"{symbol} {timeframe} since={since}")
        raw = getattr(self.ex, "last_json_response", None)
        return self._timed_frame(lambda: ohlcv_frame(rows, _quote_volumes(raw)))

    def fetch_funding(self, symbol: str, since: int, until: int, limit: int) -> pd.DataFrame:
        rows = self.call("fetch_funding_rate_history", symbol, since, limit, {"until": until - 1},
                         what=f"{symbol} since={since}")
        return self._timed_frame(lambda: funding_frame(rows))

    def fetch_open_interest(self, symbol: str, timeframe: str, since: int, until: int, limit: int) -> pd.DataFrame:
        rows = self.call("fetch_open_interest_history", symbol, timeframe, since, limit, {"until": until - 1},
                         what=f"{symbol} {timeframe} since={since}")
        return self._timed_frame(lambda: open_interest_frame(rows))

    def fetch_greeks(self, symbol: str) -> dict[str, Any]:
        return dict(self.call("fetch_greeks", symbol, what=symbol))

    def fetch_greeks_many(self, symbols: list[str], workers: int = 8) -> list[dict[str, Any]]:
        """Tickers with greeks for many instruments, ``workers`` requests in flight at a time."""
        return [dict(x) for x in self.call_many("fetch_greeks", [(s,) for s in symbols], workers=workers,
                                               what=lambda a: str(a[0]))]


def _short(e: BaseException, n: int = 300) -> str:
    text = str(e).replace("\n", " ")
    return text if len(text) <= n else text[:n] + "..."


def _floats(values: list[Any]) -> np.ndarray:
    """Strings/numbers -> float64 in one C pass; cell by cell (unparseable -> NaN) only if that fails."""
    import numpy as np
    import pandas as pd

    try:
        return np.asarray(values, dtype="float64")
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy("float64")


def _quote_volumes(raw: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(open times, quote volumes) from a raw klines body, in served order; None when it has none.

    Binance rows are [t,o,h,l,c,v,T,qv,...], Bybit ``result.list`` rows [t,o,h,l,c,v,turnover];
    ccxt drops that column.
    """
    rows: Any = raw
    idx = 7
    if isinstance(raw, dict):
        res = raw.get("result")
        rows = res.get("list") if isinstance(res, dict) else None
        idx = 6
    if not isinstance(rows, list) or not rows:
        return None
    ok = [r for r in rows if isinstance(r, list | tuple) and len(r) > idx]
    if not ok:
        return None
    return _floats([r[0] for r in ok]), _floats([r[idx] for r in ok])


def _align_quote_volume(t: np.ndarray, qv: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Quote volume for each parsed row. Rows sharing an open time are matched by occurrence in
    served order (ccxt's sort is stable), so a duplicated time gets each version's own value."""
    import numpy as np
    import pandas as pd

    out = np.full(len(t), np.nan)
    if qv is None or len(t) == 0:
        return out
    qt, qval = qv
    keep = ~np.isnan(qt)
    qt, qval = qt[keep].astype("int64"), qval[keep]
    if len(np.unique(qt)) == len(qt):  # the usual case: one row per time
        pos = pd.Index(qt).get_indexer(t)
        hit = pos >= 0
        out[hit] = qval[pos[hit]]
        return out
    left = pd.DataFrame({"t": t, "occ": pd.Series(t).groupby(t).cumcount().to_numpy()})
    right = pd.DataFrame({"t": qt, "occ": pd.Series(qt).groupby(qt).cumcount().to_numpy(), "qv": qval})
    return left.merge(right, on=["t", "occ"], how="left", sort=False)["qv"].to_numpy("float64")


def ohlcv_frame(rows: list[list[Any]], quote_volume: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """ccxt OHLCV rows -> frame with ms ``t`` plus numeric columns; unparseable cells become NaN."""
    import numpy as np
    import pandas as pd

    cols = ["t", "open", "high", "low", "close", "volume"]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in [*cols, "quote_volume"]}).astype({"t": "int64"})
    try:  # ccxt hands numbers or None: one vectorised conversion
        arr = np.asarray([r[:6] for r in rows], dtype="float64")
        if arr.ndim != 2 or arr.shape[1] != 6:
            raise ValueError("ragged rows")
    except (TypeError, ValueError):  # anything odd: cell by cell
        width = [list(r[:6]) + [None] * (6 - len(r[:6])) for r in rows]
        arr = np.column_stack([_floats([w[i] for w in width]) for i in range(6)])
    arr = arr[~np.isnan(arr[:, 0])]
    t = arr[:, 0].astype("int64")
    df = pd.DataFrame({"t": t, **{c: arr[:, i] for i, c in enumerate(cols) if i}})
    df["quote_volume"] = _align_quote_volume(t, quote_volume)
    return df


def funding_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """ccxt funding-rate history -> ``t``, funding_rate, mark_price (from the venue's raw row)."""
    recs = []
    for r in rows:
        info = r.get("info") or {}
        mark = info.get("markPrice") if isinstance(info, dict) else None
        recs.append({"t": r.get("timestamp"), "funding_rate": r.get("fundingRate"), "mark_price": mark})
    return _numeric_frame(recs, ["funding_rate", "mark_price"])


def open_interest_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """ccxt open-interest history -> ``t``, open_interest (base units), open_interest_value (quote)."""
    recs = [{"t": r.get("timestamp"),
             "open_interest": r.get("openInterestAmount", r.get("baseVolume")),
             "open_interest_value": r.get("openInterestValue", r.get("quoteVolume"))} for r in rows]
    return _numeric_frame(recs, ["open_interest", "open_interest_value"])


def _numeric_frame(recs: list[dict[str, Any]], values: list[str]) -> pd.DataFrame:
    """Records -> frame of int64 ms ``t`` and float64 ``values``; unparseable values become NaN and
    rows without a time are dropped (a venue row without a time cannot be placed)."""
    import pandas as pd

    df = pd.DataFrame(recs, columns=["t", *values])
    for c in values:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    t = pd.to_numeric(df["t"], errors="coerce")
    df = df[t.notna()].copy()
    df["t"] = t[t.notna()].astype("int64")
    return df.reset_index(drop=True)
