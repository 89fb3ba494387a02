"""The FastAPI app: REST under /api/v1/ml, /healthz, /metrics and the analyst dashboard at /.

Every answer is read from the store as ``entasis_reader`` and cached under the store's serving
generation (see :mod:`entasis.api.cache`). The generation is held in memory, advanced by the store's
NOTIFY on every publish (:mod:`entasis.api.generation`), so a cached answer costs no database round trip
and a publish is visible as soon as it commits. While that listener is down each request reads the
generation from the store instead, so a database that is down answers 503 with a reason, never a stale
cached body.

A valid ``POST /predict`` whose asset this generation knows is answered by :class:`PredictFastPath` before
FastAPI's routing and body validation, from the cache or, on a miss, by the full handler's own query (in
the profiles of both paths FastAPI's stack cost more than the query and the JSON together); anything else it
hands to the full app unchanged.

Several uvicorn workers (``api.workers``) each hold their own cache and listener; /metrics merges them
(see :mod:`entasis.api.metrics`). Each process freezes its start-up objects out of the garbage collector.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from entasis.api import dashboard, metrics, service
from entasis.api.cache import Cache, cache_key, make_cache
from entasis.api.generation import GenerationWatch
from entasis.api.store import DatabaseUnavailable, ReaderStore, reader_url
from entasis.config import Settings, get_settings
from entasis.domain import ASSET_SYMBOL_MAX_LEN, ASSET_SYMBOL_MIN_LEN

log = logging.getLogger(__name__)
API = "/api/v1/ml"
JSON = "application/json"


class PredictRequest(BaseModel):
    """Body of POST /api/v1/ml/predict."""

    model_config = ConfigDict(extra="forbid")
    asset_symbol: str = Field(min_length=ASSET_SYMBOL_MIN_LEN, max_length=ASSET_SYMBOL_MAX_LEN, examples=["BTC/USDT"])
    timeframe: Literal["7d", "14d", "30d"] = Field(examples=["7d"])


class ErrorOut(BaseModel):
    detail: str


class UnknownAssetOut(ErrorOut):
    assets: list[str]


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


def _json(body: bytes, status: int = 200, cache: str = "miss") -> Response:
    return Response(content=body, status_code=status, media_type=JSON, headers={"X-Cache": cache})


class Serving:
    """Per-app state: settings, the reader store, the cache."""

    def __init__(self, settings: Settings, store: ReaderStore, cache: Cache,
                 watch: GenerationWatch | None = None) -> None:
        self.settings, self.store, self.cache = settings, store, cache
        self.watch = watch or GenerationWatch(store, poll_s=settings.api.generation_poll_s)
        self.horizons = list(settings.labels.horizons)
        self._has_vol = False
        self._vol_checked_at: float | None = None
        self.metrics_memo: tuple[int, dict[str, Any]] | None = None
        self._known: tuple[int, list[str]] | None = None

    def predict_target(self, gen: int, body: bytes) -> tuple[str, int] | None:
        """The (asset, horizon) the full /predict handler would answer for ``body`` under ``gen``, when that is
        certain without the store (a body PredictRequest accepts as is, an asset this generation knows); else
        None."""
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if type(req) is not dict or req.keys() != PREDICT_FIELDS:
            return None
        asset, tf = req["asset_symbol"], req["timeframe"]
        if (type(asset) is not str or type(tf) is not str or tf not in TIMEFRAMES
                or not ASSET_SYMBOL_MIN_LEN <= len(asset) <= ASSET_SYMBOL_MAX_LEN):
            return None
        known = self._known
        if known is None or known[0] != gen:
            return None
        try:
            h = service.parse_horizon(tf, self.horizons)
            name = service.resolve_asset(asset, known[1])
        except (ValueError, service.UnknownAsset):
            return None
        return name, h

    def predict_key(self, gen: int, body: bytes) -> str | None:
        """The cache key the full /predict handler would use for ``body`` under ``gen`` (see predict_target)."""
        target = self.predict_target(gen, body)
        return None if target is None else cache_key(gen, "predict", *target)

    async def cached(self, gen: int, parts: tuple[object, ...], compute: Callable[[], Awaitable[Any]]) -> Response:
        """The response for ``parts`` under generation ``gen``, computing and storing it on a miss."""
        key = cache_key(gen, *parts)
        body = await self.cache.get(key)
        if body is not None:
            return _json(body, cache="hit")
        body = _dumps(await compute())
        await self.cache.set(key, body)
        return _json(body)

    async def has_volatility(self) -> bool:
        """Whether the store has ml.vol_forecasts (a store that predates it is re-checked once a minute)."""
        if not self._has_vol:
            if self._vol_checked_at is not None and time.monotonic() - self._vol_checked_at < 60:
                return False  # checked a moment ago: the store has no ml.vol_forecasts
            rows = await self.store.fetch("SELECT to_regclass('ml.vol_forecasts') IS NOT NULL")
            self._has_vol, self._vol_checked_at = bool(rows and rows[0][0]), time.monotonic()
        return self._has_vol

    async def asset(self, gen: int, value: str) -> str:
        """The published asset ``value`` names (404 naming the known ones otherwise); the list of assets is
        kept per generation in this process."""
        if self._known is None or self._known[0] != gen:
            self._known = (gen, await service.known_assets(self.store))
        return service.resolve_asset(value, self._known[1])


PREDICT_PATH = f"{API}/predict"
PREDICT_FIELDS = frozenset(PredictRequest.model_fields)
TIMEFRAMES = frozenset(get_args(PredictRequest.model_fields["timeframe"].annotation))  # its Literal


class PredictFastPath:
    """Pure ASGI layer that answers a valid ``POST /predict`` without FastAPI's routing and pydantic.

    It only answers when everything but the prediction itself is known without the store: the generation is
    trusted in memory (the listener is up), the body is a JSON object PredictRequest would accept as it is
    (the two fields, strings, a known timeframe, the asset's length bounds), and the asset resolves against
    this generation's asset list. Then it answers from the cache under the key the full handler uses, or on a
    miss runs the full handler's query (:func:`_predict`), stores the bytes under that key and answers them:
    the same body and headers the full handler would send. In every other case (a bad body, an unknown asset,
    the listener down, the store failing) the request, body included, goes to the full app unchanged, which
    validates, answers the error (422, 404, 503) and fills the cache. (py-spy, uncached, one worker: routing,
    dependency solving, body validation and Starlette's middleware took ~14% of the samples, the query and the
    JSON ~11%.)
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.route: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PREDICT_PATH:
            await self.app(scope, receive, send)
            return
        sv: Serving | None = getattr(scope["app"].state, "serving", None)
        gen = sv.watch.peek() if sv is not None else None
        if sv is None or gen is None or (b"content-type", b"application/json") not in scope["headers"]:
            await self.app(scope, receive, send)
            return
        messages, body, more = [], b"", True
        while more:
            msg = await receive()
            messages.append(msg)
            if msg["type"] != "http.request":
                break
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        target = sv.predict_target(gen, body)
        answer: bytes | None = None
        if target is not None:
            key = cache_key(gen, "predict", *target)
            answer = await sv.cache.get(key)
            status = b"hit"
            if answer is None:
                status = b"miss"
                try:
                    answer = _dumps(await _predict(sv, *target))
                except (DatabaseUnavailable, service.NoPrediction):
                    answer = None  # the full app answers the error (503 with its reason, 404)
                else:
                    await sv.cache.set(key, answer)
        if answer is not None:
            if self.route is None:
                self.route = next((r for r in scope["app"].routes if getattr(r, "path", None) == PREDICT_PATH), None)
            scope["route"] = self.route  # the latency histogram's label, as for the full handler
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-length", str(len(answer)).encode()), (b"content-type", JSON.encode()),
                (b"x-cache", status)]})
            await send({"type": "http.response.body", "body": answer})
            return
        replay = iter(messages)

        async def receive_again() -> Any:
            msg = next(replay, None)
            return msg if msg is not None else await receive()

        await self.app(scope, receive_again, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the pool opens on startup without waiting, so it starts even with the store down."""
    from prometheus_client import CollectorRegistry

    s = settings or get_settings()
    registry = CollectorRegistry(auto_describe=False)
    histogram = metrics.latency_histogram(registry)
    gauges = metrics.WorkerGauges(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = ReaderStore(reader_url(s), pool_size=s.api.pool_size, timeout_s=s.api.db_timeout_s)
        cache = make_cache(s.api.redis_url.get_secret_value() if s.api.redis_url else None, s.api.cache_ttl_s,
                           s.api.cache_enabled)
        await store.open()
        sv = Serving(s, store, cache, GenerationWatch(store, poll_s=s.api.generation_poll_s, on_change=gauges.observe))
        gauges.observe(False, None)
        if s.api.generation_listen:
            sv.watch.start()
        app.state.serving = sv
        # Everything built so far (FastAPI, pydantic, plotly's modules: ~70k objects) lives as long as the
        # process; frozen, a full collection no longer walks it (44 ms per collection otherwise, a stall of
        # every in-flight request that showed as the uncached run's p99 bursts).
        gc.collect()
        gc.freeze()
        log.info("entasis api: cache=%s, generation from %s", cache.kind,
                 "LISTEN entasis_serving" if s.api.generation_listen else "the store per request")
        try:
            yield
        finally:
            await sv.watch.stop()
            await cache.close()
            await store.close()
            metrics.mark_dead(os.getpid())  # a worker that has left drops its live gauges from the merged /metrics

    app = FastAPI(
        title="Entasis prediction API",
        version="1",
        summary="Published crypto direction predictions, their outcomes and the models behind them (read-only).",
        lifespan=lifespan,
    )
    # outermost first: the latency histogram sees fast-path hits too
    app.add_middleware(PredictFastPath)  # type: ignore[arg-type]
    app.add_middleware(metrics.LatencyMiddleware, histogram=histogram)  # type: ignore[arg-type]

    @app.exception_handler(DatabaseUnavailable)
    async def _db_down(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return JSONResponse({"detail": f"store unavailable: {exc}"}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(service.UnknownAsset)
    async def _unknown(request: Request, exc: service.UnknownAsset) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "assets": exc.known}, status_code=404)

    @app.exception_handler(service.NoPrediction)
    async def _none(request: Request, exc: service.NoPrediction) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    def serving(request: Request) -> Serving:
        return request.app.state.serving  # type: ignore[no-any-return]

    @app.post(f"{API}/predict", tags=["predictions"],
              responses={404: {"model": UnknownAssetOut}, 422: {"description": "bad body (names the field)"},
                         503: {"model": ErrorOut}})
    async def predict(body: PredictRequest, request: Request) -> Response:
        """The latest published prediction for an asset and horizon, with its model's facts."""
        sv = serving(request)
        try:
            h = service.parse_horizon(body.timeframe, sv.horizons)
        except ValueError as e:
            return JSONResponse({"detail": [{"loc": ["body", "timeframe"], "msg": str(e),
                                             "type": "value_error"}]}, status_code=422)
        gen = await sv.watch.current()
        asset = await sv.asset(gen, body.asset_symbol)
        return await sv.cached(gen, ("predict", asset, h), lambda: _predict(sv, asset, h))

    @app.get(API + "/predictions/{asset_symbol:path}", tags=["predictions"],
             responses={404: {"model": UnknownAssetOut}, 503: {"model": ErrorOut}})
    async def predictions(
        asset_symbol: str, request: Request,
        horizon: Annotated[str | None, Query(pattern=r"^\d{1,3}d?$", description="7, 7d, 14, 14d, 30 or 30d")] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 100,
    ) -> Response:
        """Past predictions with their outcomes, and the realised hit rate beside the naive baseline's."""
        sv = serving(request)
        h = None
        if horizon is not None:
            try:
                h = service.parse_horizon(horizon, sv.horizons)
            except ValueError as e:
                return JSONResponse({"detail": [{"loc": ["query", "horizon"], "msg": str(e),
                                                 "type": "value_error"}]}, status_code=422)
        gen = await sv.watch.current()
        asset = await sv.asset(gen, asset_symbol)
        return await sv.cached(gen, ("history", asset, h, limit), lambda: service.history(sv.store, asset, h, limit))

    @app.get(f"{API}/model/status", tags=["models"], responses={503: {"model": ErrorOut}})
    async def model_status(request: Request) -> Response:
        """Per asset and horizon: the champion, when trained, live vs baseline accuracy, data freshness."""
        sv = serving(request)
        return await sv.cached(await sv.watch.current(), ("status",), lambda: service.model_status(
            sv.store, exchange=s.universe.exchange, timeframe=s.universe.model_timeframe))

    @app.get("/healthz", tags=["ops"], responses={503: {"model": ErrorOut}})
    async def healthz(request: Request) -> Response:
        """Store reachable and the age of the last publish (503 when the store is unreachable)."""
        sv = serving(request)
        body = await service.health(sv.store, datetime.now(UTC))
        # where the cache generation comes from: "listen" (NOTIFY, in memory) or "store" (read per request)
        body["generation_source"] = "listen" if sv.watch.live else "store"
        body["listener_sessions"] = sv.watch.connects
        body["pid"] = os.getpid()  # which worker answered (entasis api serve --workers N)
        return _json(_dumps(body), cache="none")

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus(request: Request) -> Response:
        """Prometheus text exposition (live accuracy, baseline, counts, freshness, drift, latency)."""
        sv = serving(request)
        snap = await _metrics_snapshot(sv)
        fams = metrics.families(snap, sv.horizons)
        return Response(metrics.exposition(fams, registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    dashboard.mount(app, serving)
    return app


async def _predict(sv: Serving, asset: str, h: int) -> dict[str, Any]:
    return await service.latest_prediction(sv.store, asset, h, with_volatility=await sv.has_volatility())


async def _metrics_snapshot(sv: Serving) -> dict[str, Any]:
    st = sv.store
    gen = await sv.watch.current()
    if sv.metrics_memo is None or sv.metrics_memo[0] != gen:  # what only a publish can change: once per generation
        live = await service.live_records(st)
        counts = {(str(a), int(c)): int(n) for a, c, n in await st.fetch(
            "SELECT asset, predicted_class, count(*) FROM ml.predictions GROUP BY asset, predicted_class")}
        champs = await service.champions(st)
        serving_champs = {}
        for a, h in sorted({(a, h) for a, _ in counts for h in sv.horizons}):
            c = service.serving_champion(champs, a, h)
            if c is not None:
                serving_champs[(a, h)] = {"trained_at": c[5], "unproven": c[7]}
        sv.metrics_memo = (gen, {"live": live, "counts": counts, "champions": serving_champs})
    memo = sv.metrics_memo[1]
    live, counts, serving_champs = memo["live"], memo["counts"], memo["champions"]
    assets = sorted({a for a, _ in counts})
    u = sv.settings.universe
    candles = await service.last_candles(st, assets, u.exchange, u.model_timeframe)
    drift_rows = await st.fetch(
        "SELECT as_of, feature, psi FROM ml.feature_drift WHERE timeframe = %(tf)s AND as_of = "
        "(SELECT max(as_of) FROM ml.feature_drift WHERE timeframe = %(tf)s)",
        {"tf": sv.settings.universe.model_timeframe})
    # flash-crash alerts (issue 16) through the reader's ml.flash_crashes view; read on every scrape, since the
    # flash-crash DAG writes them every 5 minutes without touching the publish generation
    crash_rows = await st.fetch(
        "SELECT exchange, symbol, count(*), max(detected_at), (array_agg(depth ORDER BY detected_at DESC))[1] "
        "FROM ml.flash_crashes GROUP BY exchange, symbol")
    crashes = {(str(r[0]), str(r[1])): (int(r[2]), r[3], float(r[4])) for r in crash_rows}
    return {"live": live, "counts": counts, "champions": serving_champs, "candles": candles, "crashes": crashes,
            "timeframe": sv.settings.universe.model_timeframe,
            "drift": {r[1]: r[2] for r in drift_rows}, "drift_as_of": drift_rows[0][0] if drift_rows else None}
