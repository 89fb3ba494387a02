"""The analyst dashboard: server-rendered pages with plotly.js charts, no external network.

plotly.js is served from the ``plotly`` wheel's bundled ``plotly.min.js`` (``/static/plotly.min.js``);
figures are plain plotly JSON built here from the same rows the REST API serves, so the charts and
the API can never disagree. Pages are cached under the store's serving generation like the API.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from entasis.api import analytics, service
from entasis.api.cache import cache_key
from entasis.domain import CLASS_NAMES, class_code
from entasis.features.catalog import timeframe_seconds

if TYPE_CHECKING:
    from jinja2 import Environment

    from entasis.api.app import Serving

TEMPLATES = Path(__file__).parent / "templates"
OUTCOME_COLOURS = {True: "#2ca02c", False: "#d62728", None: "#9e9e9e"}
CLASS_COLOURS = {"bearish": "#d62728", "neutral": "#7f7f7f", "bullish": "#2ca02c"}
CLASS_SYMBOLS = {"bearish": "triangle-down", "neutral": "circle", "bullish": "triangle-up"}


def slug(asset: str) -> str:
    """URL form of a symbol: 'BTC/USDT' -> 'BTC-USDT' (resolve_asset maps it back)."""
    return asset.replace("/", "-")


@lru_cache(maxsize=1)
def _env() -> Environment:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]))
    env.filters["slug"] = slug
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.1f}%"
    env.filters["num"] = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
    env.filters["when"] = lambda v: "–" if v is None else f"{v:%Y-%m-%d %H:%M}"
    return env


def figure_json(fig: dict[str, Any]) -> str:
    """Figure JSON safe inside a <script> element."""
    return orjson.dumps(fig, option=orjson.OPT_UTC_Z).decode().replace("</", "<\\/")


def _layout(title: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"title": {"text": title}, "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
                            "height": 320, "legend": {"orientation": "h"}}
    base.update(kw)
    return base


def probabilities_figure(latest: list[dict[str, Any]]) -> dict[str, Any]:
    x = [p["timeframe"] for p in latest]
    data = [{"type": "bar", "name": c, "x": x, "y": [p["probabilities"][c] for p in latest],
             "marker": {"color": CLASS_COLOURS[c]}} for c in CLASS_NAMES]
    return {"data": data, "layout": _layout("Latest prediction: class probabilities", barmode="group",
                                            yaxis={"range": [0, 1], "title": {"text": "probability"}})}


def price_figure(prices: list[tuple[Any, float]], preds: list[dict[str, Any]], step: timedelta) -> dict[str, Any]:
    """Close prices with each past prediction at its bar's close, coloured by outcome."""
    close_at = {ts + step: float(c) for ts, c in prices}
    data: list[dict[str, Any]] = [{"type": "scatter", "mode": "lines", "name": "close",
                                   "x": [ts + step for ts, _ in prices], "y": [float(c) for _, c in prices],
                                   "line": {"color": "#1f77b4", "width": 1.5}}]
    for outcome, label in ((True, "correct"), (False, "wrong"), (None, "pending")):
        pts = [p for p in preds if p["correct"] is outcome and p["predicted_at"] in close_at]
        data.append({
            "type": "scatter", "mode": "markers", "name": label,
            "x": [p["predicted_at"] for p in pts], "y": [close_at[p["predicted_at"]] for p in pts],
            "text": [f"{p['predicted_class']} ({p['confidence']:.0f}%) → {p['actual_class'] or 'pending'}"
                     for p in pts],
            "marker": {"color": OUTCOME_COLOURS[outcome], "size": 9,
                       "symbol": [CLASS_SYMBOLS[p["predicted_class"]] for p in pts]},
        })
    return {"data": data, "layout": _layout("Price and past predictions (▲ bullish ▼ bearish ● neutral)",
                                            yaxis={"title": {"text": "close"}})}


def hit_rate_figure(points: list[dict[str, Any]]) -> dict[str, Any]:
    x = [p["target_date"] for p in points]
    data = [{"type": "scatter", "mode": "lines+markers", "name": "model", "x": x, "y": [p["model"] for p in points]},
            {"type": "scatter", "mode": "lines+markers", "name": f"baseline ({analytics.BASELINE_NAME})", "x": x,
             "y": [p["baseline"] for p in points], "line": {"dash": "dot"}}]
    return {"data": data, "layout": _layout("Live hit rate (expanding) vs baseline",
                                            yaxis={"range": [0, 1], "title": {"text": "hit rate"}})}


def reliability_figure(bins: list[dict[str, Any]]) -> dict[str, Any]:
    data = [{"type": "scatter", "mode": "lines", "name": "perfectly calibrated", "x": [1 / 3, 1], "y": [1 / 3, 1],
             "line": {"dash": "dash", "color": "#999"}},
            {"type": "scatter", "mode": "lines+markers", "name": "observed",
             "x": [b["mean_confidence"] for b in bins], "y": [b["observed"] for b in bins],
             "text": [f"n={b['n']}" for b in bins], "marker": {"size": 10}}]
    return {"data": data, "layout": _layout("Reliability: confidence vs hit rate",
                                            xaxis={"range": [0.3, 1], "title": {"text": "predicted probability"}},
                                            yaxis={"range": [0, 1], "title": {"text": "observed frequency"}})}


def volatility_figure(latest: list[dict[str, Any]]) -> dict[str, Any] | None:
    with_vol = [p for p in latest if p.get("volatility_forecast")]
    if not with_vol:
        return None
    x = [p["timeframe"] for p in with_vol]
    vf = [p["volatility_forecast"] for p in with_vol]
    data = [{"type": "bar", "name": "forecast (annualized)", "x": x, "y": [v["annualized_vol"] for v in vf],
             "text": [f"±1σ {v['price_low_1sd']:.2f}–{v['price_high_1sd']:.2f}" for v in vf],
             "marker": {"color": "#9467bd"}}]
    if any(v.get("realized_vol") is not None for v in vf):
        data.append({"type": "bar", "name": "realized", "x": x, "y": [v.get("realized_vol") for v in vf],
                     "marker": {"color": "#c5b0d5"}})
    return {"data": data, "layout": _layout("Volatility forecast (annualized) and ±1σ price range",
                                            barmode="group", yaxis={"title": {"text": "vol"}})}


async def _asset_page(sv: Serving, asset: str, horizon: int) -> str:
    st, s = sv.store, sv.settings
    latest = []
    for h in sv.horizons:
        try:
            latest.append(await service.latest_prediction(st, asset, h, with_volatility=await sv.has_volatility()))
        except service.NoPrediction:
            continue
    hist = await service.history(st, asset, horizon, limit=100_000)
    preds = hist["predictions"]
    step = timedelta(seconds=timeframe_seconds(s.universe.model_timeframe))
    start = min((p["predicted_at"] for p in preds), default=None)
    prices: list[tuple[Any, float]] = []
    if start is not None:
        prices = [(r[0], r[1]) for r in await st.fetch(
            "SELECT ts, close FROM ml.asset_prices WHERE exchange = %(ex)s AND asset = %(a)s AND timeframe = %(tf)s "
            "AND ts >= %(lo)s ORDER BY ts",
            {"ex": s.universe.exchange, "a": asset, "tf": s.universe.model_timeframe, "lo": start - 30 * step})]
    outcomes = [analytics.Outcome(asset=asset, horizon=horizon, as_of=p["predicted_at"], target_date=p["target_date"],
                                  predicted_class=class_code(p["predicted_class"]),
                                  confidence=p["confidence"],
                                  actual_class=None if p["actual_class"] is None
                                  else class_code(p["actual_class"]))
                for p in preds]
    calls = analytics.baseline_calls(outcomes)
    champs = await st.fetch(
        "SELECT asset, horizon, model_name, version, unproven, promoted_at FROM ml.champion_history "
        "WHERE asset IN (%(a)s, 'pooled') ORDER BY promoted_at DESC, horizon LIMIT 200", {"a": asset})
    figs = {"probabilities": probabilities_figure(latest) if latest else None,
            "price": price_figure(prices, preds, step),
            "hitrate": hit_rate_figure(analytics.hit_rate_over_time(outcomes, calls)),
            "reliability": reliability_figure(analytics.reliability(outcomes)),
            "volatility": volatility_figure(latest)}
    return _env().get_template("asset.html").render(
        asset=asset, horizon=horizon, horizons=sv.horizons, latest=latest, rates=hist["hit_rate"],
        champions=champs, baseline=analytics.BASELINE_NAME,
        figures={k: figure_json(v) for k, v in figs.items() if v is not None},
        recent=preds[:20])


async def _index_page(sv: Serving) -> str:
    status = await service.model_status(sv.store, exchange=sv.settings.universe.exchange,
                                        timeframe=sv.settings.universe.model_timeframe)
    assets = await service.known_assets(sv.store)
    latest: dict[str, list[dict[str, Any]]] = {}
    for a in assets:
        for h in sv.horizons:
            try:
                latest.setdefault(a, []).append(await service.latest_prediction(sv.store, a, h))
            except service.NoPrediction:
                continue
    figs = {slug(a): figure_json(probabilities_figure(v)) for a, v in latest.items() if v}
    return _env().get_template("index.html").render(
        assets=assets, latest=latest, status=status["models"], figures=figs, baseline=analytics.BASELINE_NAME)


def mount(app: FastAPI, serving: Callable[[Request], Serving]) -> None:
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

    async def cached_html(sv: Serving, gen: int, parts: tuple[object, ...], render: Callable[[], Any]) -> Response:
        key = cache_key(gen, "html", *parts)
        body = await sv.cache.get(key)
        if body is None:
            body = (await render()).encode()
            await sv.cache.set(key, body)
        return HTMLResponse(body)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    async def _plotly() -> FileResponse:
        return FileResponse(plotly_js, media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/", response_class=HTMLResponse, tags=["dashboard"])
    async def index(request: Request) -> Response:
        """Overview: every asset's latest predictions and each model's live record."""
        sv = serving(request)
        return await cached_html(sv, await sv.watch.current(), ("index",), lambda: _index_page(sv))

    @app.get("/assets/{asset_symbol}", response_class=HTMLResponse, tags=["dashboard"])
    async def asset_page(asset_symbol: str, request: Request, horizon: str | None = None) -> Response:
        """One asset at one horizon: price with past predictions, hit rate vs baseline, reliability."""
        sv = serving(request)
        try:
            h = service.parse_horizon(horizon, sv.horizons) if horizon else sv.horizons[0]
        except ValueError as e:
            return HTMLResponse(f"<p>{html.escape(str(e))}</p>", status_code=422)
        gen = await sv.watch.current()
        asset = await sv.asset(gen, asset_symbol)
        return await cached_html(sv, gen, ("asset", asset, h), lambda: _asset_page(sv, asset, h))
