"""Simulator and simulated-exchange speed, as ratios against references measured in the same process.

Usage: python bench/sim.py [--symbols 20] [--repeat 3] [--smoke]

* generation: 20 symbols x 2 years of hourly candles (a fresh MarketSim, so nothing is cached) vs
  the bare cost of its random numbers (numpy drawing and cumsumming the same count of normals);
  the brief's target is "a second or two";
* one-minute bars for a day vs the hourly bars of two years of one symbol;
* an option chain (Heston + IV inversion) vs pricing the same options once with Black-76;
* one 1000-candle klines page over HTTP vs json.dumps of the same page in-process.

The last line is the JSON summary of the generation figure: metric = seconds to generate the symbols'
hourly candles, reference = the bare random draws, target = 2 s (for the default 20 symbols).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from collections.abc import Callable

import numpy as np

from entasis.options.black import black_price as black76
from entasis.sim.exchange import start_server
from entasis.sim.market import DEFAULT_SYMBOLS, MarketSim

TARGET_GEN_S = 2.0  # the brief: 20 symbols x 2 years of hourly candles in "a second or two"


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="2 symbols, one repeat: checks the bench runs")
    a = ap.parse_args()
    if a.smoke:
        a.symbols, a.repeat = 2, 1
    if a.symbols < 1 or a.repeat < 1:
        ap.error("--symbols and --repeat must be >= 1")
    symbols = (DEFAULT_SYMBOLS + [f"SIM{i}/USDT" for i in range(max(a.symbols - len(DEFAULT_SYMBOLS), 0))]
               )[:a.symbols]
    MarketSim(seed=1).candles("BTC/USDT", "1d")  # warm imports

    def generate() -> None:
        m = MarketSim(seed=7, symbols=symbols)
        for s in symbols:
            m.candles(s, "1h")

    n_hours = len(MarketSim()._hour_ts)

    def reference() -> None:
        rng = np.random.default_rng(0)
        for _ in symbols:
            np.cumsum(rng.standard_normal((12, n_hours)), axis=1)

    t_gen, t_ref = best(generate, a.repeat), best(reference, a.repeat)
    print(f"generate {len(symbols)} symbols x {n_hours} hourly bars: {t_gen:.3f} s "
          f"({t_gen / t_ref:.1f}x the bare random draws, {t_ref:.3f} s)")

    m = MarketSim(seed=7)
    m.candles("BTC/USDT", "1h")
    one = MarketSim(seed=7, end="2022-01-02")
    one.candles("ETH/USDT", "1h")

    def one_day() -> None:
        one._minute_cache.clear()
        one.candles("ETH/USDT", "1m")

    def hourly_two_years() -> None:
        MarketSim(seed=7, symbols=["ETH/USDT"]).candles("ETH/USDT", "1h")

    t_min, t_h = best(one_day, a.repeat), best(hourly_two_years, a.repeat)
    print(f"1-minute bars of one day (1440): {t_min * 1000:.1f} ms ({t_min / t_h:.2f}x two years of hourly "
          f"bars of one symbol, {t_h * 1000:.1f} ms)")

    def chain() -> None:
        m._chain_cache.clear()
        m.option_chain_full("BTC", "2023-06-15T10:00Z")

    t_chain = best(chain, a.repeat)
    full = m.option_chain_full("BTC", "2023-06-15T10:00Z")
    f = full["underlying_price"].to_numpy()
    k = full["strike"].to_numpy()
    t = (full["expiry_ms"].to_numpy() - m.now_ms) / 3.15e10 + 1.0
    iv = full["mark_iv"].to_numpy() / 100
    calls = (full["kind"] == "call").to_numpy()
    t_b76 = best(lambda: black76(f, k, np.abs(t), iv, calls), a.repeat)
    print(f"BTC option chain ({len(full)} options, Heston + IV): {t_chain * 1000:.0f} ms "
          f"({t_chain / t_b76:.0f}x one Black-76 pass, {t_b76 * 1000:.2f} ms)")

    with start_server(market=MarketSim(seed=7)) as srv:
        url = f"{srv.url}/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime=1672531200000&limit=1000"

        def http_page() -> list[object]:
            with urllib.request.urlopen(url) as r:  # noqa: S310 - loopback
                return list(json.loads(r.read()))

        page = http_page()
        t_http = best(http_page, a.repeat * 3)
        t_json = best(lambda: json.dumps(page), a.repeat * 3)
    print(f"klines page of 1000 over HTTP: {t_http * 1000:.1f} ms ({t_http / t_json:.0f}x json.dumps of the page, "
          f"{t_json * 1000:.2f} ms)")
    print(json.dumps({"bench": "sim", "metric": round(t_gen, 4), "reference": round(t_ref, 4),
                      "ratio": round(t_gen / t_ref, 3), "target": TARGET_GEN_S, "met": bool(t_gen <= TARGET_GEN_S),
                      "unit": "s", "what": f"generate {len(symbols)} symbols x {n_hours} hourly bars"}))


if __name__ == "__main__":
    main()
