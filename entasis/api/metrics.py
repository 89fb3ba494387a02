"""Prometheus exposition for /metrics: the request-latency histogram this process records, plus series
read from the store at scrape time (live accuracy beside the live baseline, prediction counts, model
age, data freshness, feature drift, the unproven flag). The rules in monitoring/alerts.yml use them.

Store-derived series are built fresh for each scrape from a snapshot dict (no global gauges that could
keep a value the store no longer holds), so whichever worker answers a scrape exports them once.

Several uvicorn workers (``entasis api serve --workers N``): prometheus_client's multiprocess mode.
``PROMETHEUS_MULTIPROC_DIR`` (set by the CLI before the workers start) makes every process-recorded series
(the latency histogram, the workers' listener gauges) live in per-process files there; a scrape, answered
by any one worker, merges them all (:class:`~prometheus_client.multiprocess.MultiProcessCollector`):
counters and histogram buckets summed over the workers, including ones that have exited, and each worker's
listener gauge per pid while it lives (``multiprocess_mode="liveall"``); the serving generation as the
oldest any live worker holds (``"livemin"``). A worker that shuts down marks itself dead
(:func:`mark_dead`), which drops its live gauges; one that was killed cannot, so each scrape also marks dead
the workers whose process is gone (uvicorn's supervisor starts a new one in its place).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from entasis.api.analytics import BASELINE_NAME
from entasis.domain import CLASS_NAMES

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REQUEST_SECONDS = "entasis_api_request_duration_seconds"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class LatencyMiddleware:
    """Pure ASGI middleware: observes each HTTP request's duration by method, route template and status.

    Route templates (``/api/v1/ml/predictions/{asset_symbol:path}``), never raw paths, keep the label
    set bounded; unmatched paths are labelled ``<unmatched>``.
    """

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def _send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "<unmatched>"
            self.histogram.labels(scope.get("method", ""), path, str(status[0])).observe(time.perf_counter() - start)


def multiprocess() -> bool:
    """Whether this process records into PROMETHEUS_MULTIPROC_DIR (decided by prometheus_client at import)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def latency_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(REQUEST_SECONDS, "API request latency by method, route and status.",
                     ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=registry)


class WorkerGauges:
    """What each worker knows of its own generation listener: up or not (one series per live worker's pid in
    multiprocess mode) and the serving generation it holds (the oldest over the live workers)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge("entasis_api_generation_listener_up",
                        "1 while this worker's LISTEN connection is up (cached answers need no store round trip).",
                        registry=registry, multiprocess_mode="liveall")
        self.generation = Gauge("entasis_api_serving_generation",
                                "The store's serving generation this worker serves (oldest over live workers).",
                                registry=registry, multiprocess_mode="livemin")

    def observe(self, live: bool, generation: int | None) -> None:
        self.up.set(1.0 if live else 0.0)
        if generation is not None:
            self.generation.set(float(generation))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_workers(path: str) -> list[int]:
    """Mark dead the workers whose live-gauge files remain though their process is gone (killed, crashed);
    the pids marked."""
    from prometheus_client import multiprocess as mp

    pids = {f.stem.rsplit("_", 1)[1] for f in Path(path).glob("gauge_live*_*.db")}
    gone = sorted(pid for pid in map(int, filter(str.isdigit, pids)) if pid != os.getpid() and not _alive(pid))
    for pid in gone:
        mp.mark_process_dead(pid, path)
    return gone


def mark_dead(pid: int) -> None:
    """Drop a finished worker's live gauges from PROMETHEUS_MULTIPROC_DIR (a no-op in single-process mode)."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)


def _ts(v: datetime | None) -> float | None:
    return None if v is None else v.timestamp()


def families(snap: dict[str, Any], horizons: list[int]) -> list[Metric]:
    """Metric families from a store snapshot (see :func:`entasis.api.app` ``_metrics_snapshot``)."""
    out: list[Metric] = []
    for h in horizons:
        acc = GaugeMetricFamily(f"model_accuracy_{h}d",
                                f"Live accuracy of published {h}d predictions (reconciled, 30-day window).",
                                labels=["asset"])
        base = GaugeMetricFamily(f"baseline_accuracy_{h}d",
                                 f"Live accuracy of the naive baseline on the same {h}d outcomes.",
                                 labels=["asset", "baseline"])
        n = GaugeMetricFamily(f"model_live_outcomes_{h}d",
                              f"Reconciled {h}d predictions in the live window.", labels=["asset"])
        for (asset, hh), live in sorted(snap["live"].items()):
            if hh != h:
                continue
            n.add_metric([asset], float(live.n_reconciled))
            if live.model is not None:
                acc.add_metric([asset], live.model)
            if live.baseline is not None:
                base.add_metric([asset, BASELINE_NAME], live.baseline)
        out += [acc, base, n]
    total = CounterMetricFamily("predictions", "Published predictions by asset and predicted class.",
                                labels=["asset", "class"])
    for (asset, cls), count in sorted(snap["counts"].items()):
        total.add_metric([asset, CLASS_NAMES[cls]], float(count))
    out.append(total)
    trained = GaugeMetricFamily("model_last_trained_timestamp",
                                "When the serving champion was trained (unix seconds).", labels=["asset", "horizon"])
    unproven = GaugeMetricFamily("model_champion_unproven",
                                 "1 when the serving champion never beat the naive baselines.",
                                 labels=["asset", "horizon"])
    for (asset, h), champ in sorted(snap["champions"].items()):
        t = _ts(champ["trained_at"])
        if t is not None:
            trained.add_metric([asset, f"{h}d"], t)
        if champ["unproven"] is not None:
            unproven.add_metric([asset, f"{h}d"], 1.0 if champ["unproven"] else 0.0)
    out += [trained, unproven]
    candle = GaugeMetricFamily("data_last_candle_timestamp",
                               "Open time of the newest candle of the model timeframe (unix seconds).",
                               labels=["asset", "timeframe"])
    for asset, ts in sorted(snap["candles"].items()):
        if ts is not None:
            candle.add_metric([asset, snap["timeframe"]], ts.timestamp())
    out.append(candle)
    drift = GaugeMetricFamily("feature_drift_psi", "Population stability index per feature at the last monitor run.",
                              labels=["feature"])
    for feature, value in sorted(snap["drift"].items()):
        if value is not None:
            drift.add_metric([feature], value)
    out.append(drift)
    alerts = CounterMetricFamily("flash_crash_alerts", "Flash crashes detected (the spec's drop-and-volume rule).",
                                 labels=["exchange", "symbol"])
    last = GaugeMetricFamily("flash_crash_last_detected_timestamp", "When the latest flash crash was detected.",
                             labels=["exchange", "symbol"])
    depth = GaugeMetricFamily("flash_crash_last_depth", "Peak-to-trough depth of the latest flash crash (fraction).",
                              labels=["exchange", "symbol"])
    for (exchange, symbol), (n, detected_at, d) in sorted(snap.get("crashes", {}).items()):
        alerts.add_metric([exchange, symbol], float(n))
        last.add_metric([exchange, symbol], detected_at.timestamp())
        depth.add_metric([exchange, symbol], d)
    out += [alerts, last, depth]
    if snap.get("drift_as_of") is not None:
        out.append(GaugeMetricFamily("feature_drift_last_run_timestamp", "When the monitor last measured drift.",
                                     value=snap["drift_as_of"].timestamp()))
    return out


class _Static:
    def __init__(self, fams: list[Metric]) -> None:
        self.fams = fams

    def collect(self) -> list[Metric]:
        return self.fams


def exposition(fams: list[Metric], process_registry: CollectorRegistry) -> bytes:
    """The store's series, then the process-recorded ones: this process's registry, or in multiprocess mode
    every worker's files merged (the registry's own values are in those files, so it is not read twice)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Static(fams))  # type: ignore[arg-type]  # any object with collect() is a collector
    if multiprocess():
        from prometheus_client import multiprocess as mp

        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if path:
            reap_dead_workers(path)
        merged = CollectorRegistry(auto_describe=False)
        mp.MultiProcessCollector(merged)
        return bytes(generate_latest(reg)) + bytes(generate_latest(merged))
    return bytes(generate_latest(reg)) + bytes(generate_latest(process_registry))
