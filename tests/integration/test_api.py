"""`entasis api serve` for real: uvicorn on loopback, the embedded PostgreSQL seeded by the pipeline's own
publish and reconcile functions, Redis from Debian's redis-server, the dashboard in headless Chromium.

Both cache paths (Redis, in-process) run the same assertions; every answer is compared with what the
store holds, read directly as the owner.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.unit.api import seed
from tests.unit.api.servers import api_server, get, post, redis_server

PREDICT = "/api/v1/ml/predict"
CLASSES = ("bearish", "neutral", "bullish")
VOL_FIELDS = ("annualized_vol", "expected_move", "price_low_1sd", "price_high_1sd")


@pytest.fixture(scope="module")
def store(pg_server: str, _template: str) -> Iterator[str]:
    """A database of this module's own, cloned from the seeded one (owner's URL)."""
    with seed.module_store(pg_server, _template, "api") as url:
        yield url


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def servers(store: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two API servers on the same store: one caching in Redis, one in process."""
    home = tmp_path_factory.mktemp("api_home")
    env = {"ENTASIS_API__GENERATION_POLL_S": "3600"}  # no poll: a publish can only arrive by its NOTIFY
    with api_server(store, redis_url=redis_url, home=home, extra_env=env) as with_redis, \
            api_server(store, home=home, extra_env=env) as in_memory:
        for base in (with_redis, in_memory):  # the listener is up (else the cache tests test the fallback)
            _wait_for(lambda base=base: get(base, "/healthz").json().get("generation_source") == "listen", 20)
        yield {"redis": with_redis, "memory": in_memory}


def _wait_for(cond, timeout: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``cond()`` held (polling every 5 ms); fails the test after ``timeout``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"not within {timeout}s")
        time.sleep(0.005)
    return time.monotonic() - t0


@pytest.fixture(params=["redis", "memory"])
def api(request: pytest.FixtureRequest, servers: dict[str, str]) -> str:
    return servers[request.param]


def _latest(url: str, asset: str, h: int) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT as_of, model_version, predicted_class, p_bearish, p_neutral, p_bullish, confidence, target_date "
            "FROM ml.predictions WHERE asset = %s AND horizon = %s ORDER BY as_of DESC LIMIT 1", (asset, h)).fetchone()


def _vol(url: str, asset: str, h: int, as_of: datetime) -> dict | None:
    """What ml.vol_forecasts holds for this prediction (None where the store has no such table or row)."""
    with psycopg.connect(url) as conn:
        if not conn.execute("SELECT to_regclass('ml.vol_forecasts') IS NOT NULL").fetchone()[0]:
            return None
        row = conn.execute("SELECT vol_annualized, expected_move, price_low_1sd, price_high_1sd FROM ml.vol_forecasts "
                           "WHERE asset = %s AND horizon = %s AND as_of = %s", (asset, h, as_of)).fetchone()
    return None if row is None else dict(zip(VOL_FIELDS, row, strict=True))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_predict_serves_the_latest_published_row(api: str, store: str) -> None:
    for asset in seed.ASSETS:
        for h in seed.HORIZONS:
            r = post(api, PREDICT, json={"asset_symbol": asset, "timeframe": f"{h}d"})
            assert r.status_code == 200, r.text
            body = r.json()
            as_of, mv, cls, pb, pn, pu, conf, target = _latest(store, asset, h)
            assert body["asset_symbol"] == asset and body["horizon_days"] == h
            assert body["predicted_at"] == _iso(as_of) and body["target_date"] == _iso(target)
            assert body["predicted_class"] == CLASSES[cls]
            assert body["probabilities"] == {"bearish": pb, "neutral": pn, "bullish": pu}
            assert body["confidence"] == conf
            assert body["model"]["version"] == mv == f"entasis-pooled-{h}d/4"
            # the second champion was recorded unproven, with test accuracy below its baseline's
            assert body["model"]["unproven"] is True and body["model"]["is_current_champion"] is True
            skill = body["model"]["skill"]
            assert skill["beats_baseline"] is False
            assert skill["accuracy_vs_baseline"] == pytest.approx(0.36 - 0.38)
            assert body["factors"] and {"feature", "value", "contribution"} <= set(body["factors"][0])
            vol, want = body["volatility_forecast"], _vol(store, asset, h, as_of)
            assert (vol is None) == (want is None)
            if want is not None:
                assert {k: vol[k] for k in VOL_FIELDS} == want


def test_second_request_is_a_cache_hit_with_the_same_body(api: str) -> None:
    body = {"asset_symbol": "ETH/USDT", "timeframe": "14d"}
    first, second = post(api, PREDICT, json=body), post(api, PREDICT, json=body)
    assert second.headers["x-cache"] == "hit"
    assert first.content == second.content


def test_asset_spellings_resolve_to_the_same_prediction(api: str) -> None:
    bodies = {post(api, PREDICT, json={"asset_symbol": a, "timeframe": "7d"}).content
              for a in ("BTC/USDT", "btc-usdt", "BTC_USDT", "BTCUSDT")}
    assert len(bodies) == 1


@pytest.mark.parametrize(("body", "field"), [
    ({"asset_symbol": "BTC/USDT", "timeframe": "8d"}, "timeframe"),
    ({"asset_symbol": "BTC/USDT", "timeframe": 7}, "timeframe"),
    ({"asset_symbol": "BTC/USDT"}, "timeframe"),
    ({"timeframe": "7d"}, "asset_symbol"),
    ({"asset_symbol": "", "timeframe": "7d"}, "asset_symbol"),
    ({"asset_symbol": "BTC/USDT", "timeframe": "7d", "horizon": 7}, "horizon"),
])
def test_bad_body_is_422_naming_the_field(api: str, body: dict, field: str) -> None:
    r = post(api, PREDICT, json=body)
    assert r.status_code == 422
    assert field in [d["loc"][-1] for d in r.json()["detail"]]


def test_malformed_json_is_422(api: str) -> None:
    r = post(api, PREDICT, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_unknown_asset_is_404_naming_the_known_ones(api: str) -> None:
    r = post(api, PREDICT, json={"asset_symbol": "XRP/USDT", "timeframe": "7d"})
    assert r.status_code == 404
    assert r.json()["assets"] == sorted(seed.ASSETS)
    assert "XRP/USDT" in r.json()["detail"] and "BTC/USDT" in r.json()["detail"]
    r = get(api, "/api/v1/ml/predictions/DOGE-USDT")
    assert r.status_code == 404 and r.json()["assets"] == sorted(seed.ASSETS)


def test_history_with_outcomes_and_hit_rate_beside_the_baseline(api: str, store: str) -> None:
    r = get(api, "/api/v1/ml/predictions/SOL/USDT", params={"horizon": "7d", "limit": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    with psycopg.connect(store) as conn:
        rows = conn.execute("SELECT as_of, actual_class, correct, realized_return FROM ml.predictions "
                            "WHERE asset = 'SOL/USDT' AND horizon = 7 ORDER BY as_of DESC").fetchall()
    assert body["total"] == len(rows) and body["count"] == 5
    for item, (as_of, actual, correct, ret) in zip(body["predictions"], rows[:5], strict=True):
        assert item["predicted_at"] == _iso(as_of)
        assert item["actual_class"] == (None if actual is None else CLASSES[actual])
        assert item["correct"] is correct and item["realized_return"] == ret
    rate = body["hit_rate"]["7d"]["all"]
    settled = [c for _, _, c, _ in rows if c is not None]
    assert rate["n_reconciled"] == len(settled) > 0
    assert rate["model"] == pytest.approx(sum(settled) / len(settled))
    assert rate["baseline_name"] == "trailing_majority" and rate["baseline"] is not None
    # both horizons when none is asked for; same path with the slash URL-encoded
    both = get(api, "/api/v1/ml/predictions/SOL%2FUSDT").json()
    assert set(both["hit_rate"]) == {"7d", "14d", "30d"}


@pytest.mark.parametrize("query", [{"horizon": "8d"}, {"horizon": "seven"}, {"limit": 0}, {"limit": "x"}])
def test_bad_history_query_is_422_naming_the_parameter(api: str, query: dict) -> None:
    r = get(api, "/api/v1/ml/predictions/BTC-USDT", params=query)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", next(iter(query))]


def test_model_status_agrees_with_the_store(api: str, store: str) -> None:
    r = get(api, "/api/v1/ml/model/status")
    assert r.status_code == 200
    models = {(m["asset_symbol"], m["horizon_days"]): m for m in r.json()["models"]}
    assert set(models) == {(a, h) for a in seed.ASSETS for h in seed.HORIZONS}
    with psycopg.connect(store) as conn:
        # the 30-day live window ml.model_status (migration 0600) defines, written out
        view = {(a, h): (acc, n) for a, h, acc, n in conn.execute(
            "WITH e AS (SELECT asset, horizon, max(target_date) AS last FROM ml.predictions "
            "           WHERE correct IS NOT NULL GROUP BY 1, 2) "
            "SELECT p.asset, p.horizon, avg(p.correct::int)::float, count(*) FROM ml.predictions p "
            "JOIN e USING (asset, horizon) WHERE p.correct IS NOT NULL "
            "AND p.target_date > e.last - interval '30 days' GROUP BY 1, 2").fetchall()}
        last_candle = conn.execute("SELECT max(ts) FROM market.candles WHERE symbol = 'BTC/USDT' "
                                   "AND timeframe = '1d'").fetchone()[0]
    for key, m in models.items():
        assert m["live"]["accuracy"] == pytest.approx(view[key][0]) and m["live"]["n"] == view[key][1]
        assert m["champion"]["version"] == "4" and m["champion"]["unproven"] is True
        assert m["last_trained"] == "2023-04-01T00:00:00Z"
        assert m["baseline_comparison"]["best_baseline"] == "majority"
    assert models[("BTC/USDT", 7)]["data"]["last_candle_ts"] == _iso(last_candle)


PUBLISH_VISIBLE_S = 2.0  # NOTIFY reaches the API's listener in milliseconds; this bound allows for a loaded machine


def test_publish_and_reconcile_invalidate_the_cache(api: str, store: str) -> None:
    """A publish is served once it commits: the store's NOTIFY moves the in-memory generation (the servers
    here never poll), so the next requests miss the cache; bounded wait, then the newest row exactly."""
    from entasis.publish.predictions import publish_predictions
    from entasis.publish.reconcile import reconcile_outcomes

    body = {"asset_symbol": "BTC/USDT", "timeframe": "7d"}
    before = post(api, PREDICT, json=body).json()
    assert post(api, PREDICT, json=body).headers["x-cache"] == "hit"
    as_of = datetime.fromisoformat(before["predicted_at"])
    nxt = as_of + timedelta(days=6, hours=6)  # the next publish, 6 days on (each cache path adds one)
    with psycopg.connect(store) as conn, conn.transaction():
        gen0 = conn.execute("SELECT generation FROM ml.serving_state").fetchone()[0]
        publish_predictions(conn, as_of=nxt, assets=["BTC/USDT"], horizons=[7],
                            loader=seed._loader("4", True))
    seen: list = []
    _wait_for(lambda: seen.append(r := post(api, PREDICT, json=body)) or r.json()["predicted_at"] != before[
        "predicted_at"], PUBLISH_VISIBLE_S)
    after = seen[-1]
    assert after.headers["x-cache"] == "miss"  # the first answer under the new generation
    assert datetime.fromisoformat(after.json()["predicted_at"]) > as_of
    assert after.json()["predicted_at"] == _iso(_latest(store, "BTC/USDT", 7)[0])
    assert all(r.json() == before for r in seen[:-1])  # nothing in between but the previous answer
    hist = get(api, "/api/v1/ml/predictions/BTC-USDT", params={"horizon": "7", "limit": 1}).json()
    assert hist["predictions"][0]["actual_class"] is None  # not reconciled yet
    with psycopg.connect(store) as conn, conn.transaction():
        reconcile_outcomes(conn, now=datetime(2023, 8, 1, tzinfo=UTC))
        assert conn.execute("SELECT generation FROM ml.serving_state").fetchone()[0] > gen0
    _wait_for(lambda: get(api, "/api/v1/ml/predictions/BTC-USDT", params={"horizon": "7", "limit": 1}).json()[
        "predictions"][0]["actual_class"] in CLASSES, PUBLISH_VISIBLE_S)


def test_listener_killed_then_back_and_publishes_still_served(api: str, store: str) -> None:
    """The listener's connection is terminated: the API reads the generation per request meanwhile, the
    listener reconnects by itself, and a publish after that arrives by NOTIFY on the new session."""
    from entasis.api.generation import APPLICATION_NAME
    from entasis.publish.predictions import publish_predictions

    body = {"asset_symbol": "SOL/USDT", "timeframe": "14d"}
    sessions = get(api, "/healthz").json()["listener_sessions"]
    before = post(api, PREDICT, json=body).json()
    name = psycopg.conninfo.conninfo_to_dict(store)["dbname"]
    with psycopg.connect(store, autocommit=True) as conn:
        killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s "
                              "AND application_name = %s", (name, APPLICATION_NAME)).fetchone()[0]
    assert killed >= 1  # this server's listener (and the other server's, when up)
    assert post(api, PREDICT, json=body).json() == before  # served throughout
    _wait_for(lambda: (h := get(api, "/healthz").json())["generation_source"] == "listen"
              and h["listener_sessions"] == sessions + 1, 20)
    with psycopg.connect(store) as conn, conn.transaction():
        publish_predictions(conn, as_of=datetime.fromisoformat(before["predicted_at"]) + timedelta(days=5),
                            assets=["SOL/USDT"], horizons=[14], loader=seed._loader("4", True))
    _wait_for(lambda: post(api, PREDICT, json=body).json()["predicted_at"] == _iso(_latest(store, "SOL/USDT", 14)[0]),
              PUBLISH_VISIBLE_S)


def test_reads_as_entasis_reader(api: str, store: str) -> None:
    post(api, PREDICT, json={"asset_symbol": "BTC/USDT", "timeframe": "7d"})
    name = psycopg.conninfo.conninfo_to_dict(store)["dbname"]
    with psycopg.connect(store) as conn:
        users = {r[0] for r in conn.execute("SELECT usename FROM pg_stat_activity WHERE datname = %s "
                                            "AND pid <> pg_backend_pid()", (name,)).fetchall()}
    assert "entasis_reader" in users


def test_healthz_docs_and_openapi(api: str) -> None:
    h = get(api, "/healthz")
    assert h.status_code == 200 and h.json()["database"] == "reachable"
    assert h.json()["last_published"] is not None and h.json()["last_publish_age_s"] > 0
    assert h.json()["generation_source"] == "listen" and h.json()["listener_sessions"] >= 1
    assert get(api, "/docs").status_code == 200
    paths = get(api, "/openapi.json").json()["paths"]
    assert {"/api/v1/ml/predict", "/api/v1/ml/predictions/{asset_symbol}", "/api/v1/ml/model/status",
            "/healthz", "/metrics"} <= set(paths)


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def _predict_count(s: dict[str, float]) -> float:
    """Requests /metrics counted for POST predict answered 200 (0 before the first one)."""
    keys = [k for k in s if k.startswith("entasis_api_request_duration_seconds_count{")
            and 'method="POST"' in k and 'route="/api/v1/ml/predict"' in k and 'status="200"' in k]
    assert len(keys) <= 1, keys
    return s[keys[0]] if keys else 0.0


def _metrics_once(api: str, want: float, timeout: float = 5.0) -> dict[str, float]:
    """/metrics' samples once the predict count reached ``want`` (the server records a request just after
    answering it, so a scrape right after an answer may not count it yet), or the last scrape at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        r = get(api, "/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        s = _samples(r.text)
        if _predict_count(s) >= want or time.monotonic() > deadline:
            return s
        time.sleep(0.05)


def test_metrics_series(api: str, store: str) -> None:
    status = {(m["asset_symbol"], m["horizon_days"]): m for m in get(api, "/api/v1/ml/model/status").json()["models"]}
    before = _predict_count(_samples(get(api, "/metrics").text))  # earlier tests' predicts on this server
    post(api, PREDICT, json={"asset_symbol": "BTC/USDT", "timeframe": "7d"})
    s = _metrics_once(api, before + 1)
    assert _predict_count(s) == before + 1
    for (asset, h), m in status.items():
        assert s[f'model_accuracy_{h}d{{asset="{asset}"}}'] == pytest.approx(m["live"]["accuracy"])
        assert s[f'baseline_accuracy_{h}d{{asset="{asset}",baseline="trailing_majority"}}'] == pytest.approx(
            m["live"]["baseline_accuracy"])
        assert s[f'model_champion_unproven{{asset="{asset}",horizon="{h}d"}}'] == 1.0
        assert s[f'model_last_trained_timestamp{{asset="{asset}",horizon="{h}d"}}'] == datetime(
            2023, 4, 1, tzinfo=UTC).timestamp()
    with psycopg.connect(store) as conn:
        counts = conn.execute("SELECT asset, predicted_class, count(*) FROM ml.predictions "
                              "GROUP BY 1, 2").fetchall()
    for asset, cls, n in counts:
        assert s[f'predictions_total{{asset="{asset}",class="{CLASSES[cls]}"}}'] == n
    assert 'data_last_candle_timestamp{asset="BTC/USDT",timeframe="1d"}' in s
    # cache hits answered by the fast path are observed under the same route label, each exactly once
    for _ in range(3):
        assert post(api, PREDICT, json={"asset_symbol": "BTC/USDT", "timeframe": "7d"}).headers["x-cache"] == "hit"
    assert _predict_count(_metrics_once(api, before + 4)) == before + 4


def test_dashboard_renders_in_headless_chromium(servers: dict[str, str], store: str, tmp_path: Path) -> None:
    """Every page loads in a real browser with no console errors and its plotly charts drawn."""
    from tests.unit.api.browser import chromium

    shots = Path(__file__).resolve().parents[2] / "reports" / "api"
    shots.mkdir(parents=True, exist_ok=True)
    api = servers["memory"]
    pages = [("/", 3), ("/assets/BTC-USDT?horizon=7d", 4), ("/assets/ETH-USDT?horizon=30d", 4)]
    with chromium(tmp_path) as browser:
        for path, min_charts in pages:
            browser.get(api + path)
            drawn = browser.execute_script(
                "return Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".filter(e => e.querySelector('svg.main-svg') && e.querySelectorAll('.trace, .point, path').length)"
                ".length")
            assert drawn >= min_charts, f"{path}: {drawn} charts drawn"
            errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
            assert errors == [], f"{path}: console errors {errors}"
            assert "Traceback" not in browser.page_source
            if path.startswith("/assets/"):
                asset = path.split("/")[2].split("?")[0].replace("-", "/")
                want_vol = _vol(store, asset, 7, _latest(store, asset, 7)[0]) is not None
                assert browser.execute_script("return !!document.getElementById('chart-volatility')") == want_vol
                assert browser.execute_script("return !!document.getElementById('no-volatility')") == (not want_vol)
            name = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "index"
            assert browser.save_screenshot(str(shots / f"{name}.png"))
            assert browser.save_screenshot(str(tmp_path / f"{name}.png"))
    assert (shots / "index.png").stat().st_size > 10_000


def test_metrics_flash_crash_alerts(api: str, store: str) -> None:
    """An alert stored by the flash-crash DAG's write path shows in /metrics on the next scrape (issue 16)."""
    import pandas as pd

    from entasis.signals.store import write_alerts

    start = pd.Timestamp("2024-03-05 14:02", tz="UTC")
    alert = pd.DataFrame({"exchange": ["binance"], "symbol": ["SOL/USDT"], "start_ts": [start],
                          "detected_at": [start + pd.Timedelta(minutes=4)], "depth": [0.21], "volume_ratio": [3.4],
                          "peak_price": [100.0], "trough_price": [79.0]})
    with psycopg.connect(store) as conn:
        write_alerts(conn, alert, interval_end=datetime(2024, 3, 5, 14, 10, tzinfo=UTC))
        n = conn.execute("SELECT count(*) FROM ml.flash_crashes WHERE symbol = 'SOL/USDT'").fetchone()[0]
    s = _samples(get(api, "/metrics").text)
    key = '{exchange="binance",symbol="SOL/USDT"}'
    assert s[f"flash_crash_alerts_total{key}"] == n == 1
    assert s[f"flash_crash_last_depth{key}"] == pytest.approx(0.21)
    assert s[f"flash_crash_last_detected_timestamp{key}"] == (start + pd.Timedelta(minutes=4)).timestamp()
