"""Backtest speed: the vectorised trading simulation vs a bar-by-bar loop.

Usage: python bench/backtest.py [--bars 2200,20000,2000000] [--assets-sim 20] [--bars-per-asset 3000] [--smoke]

Simulation: the same random signals (class, confidence, funding) through
   (a) ``target_weights`` + ``strategy_returns`` (numpy) and (b) a per-bar Python loop doing the same
   (direction, sizing, block holding, fees on turnover, funding), for one series of several lengths and
   for 10 strategies x 2,200 bars at once (what the walk-forward does per asset); also the frame-level
   path (``simulate_predictions``) against a loop over DataFrame rows. Results are checked equal.
The walk-forward's speed (pooled monthly refits, BTC weekly refits) is measured by bench/walkforward.py.

The last line is the JSON summary: metric = the vectorised simulation of 10 strategies x 2,200 bars (one
asset of the walk-forward) in ms, reference = the per-bar loop on the same inputs; target (ours, a guard
against losing the vectorisation; no specification figure exists): at least 10x faster, results identical.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from entasis.backtest.simulate import (
    TradingConfig,
    direction_from_class,
    simulate_predictions,
    strategy_returns,
    target_weights,
)


def loop_simulation(cls: np.ndarray, conf: np.ndarray, ret: np.ndarray, fund: np.ndarray, cfg: TradingConfig,
                    horizon: int) -> np.ndarray:
    """The bar-by-bar reference: decide, size, hold, pay fees and funding one bar at a time."""
    out = np.empty(len(cls))
    prev = 0.0
    held_dir, held_conf = 0.0, 0.0
    for i in range(len(cls)):
        if cfg.hold == "latest" or i % horizon == 0:
            c = cls[i]
            if c != c:  # NaN: no forecast
                held_dir, held_conf = 0.0, 0.0
            else:
                held_dir = 1.0 if c == 2 else (-1.0 if c == 0 else 0.0)
                held_conf = conf[i]
            if cfg.long_only and held_dir < 0:
                held_dir = 0.0
        w = held_dir if cfg.sizing == "full" else held_dir * min(cfg.risk_fraction * held_conf, cfg.max_fraction)
        out[i] = w * ret[i] - cfg.cost_rate * abs(w - prev) - w * fund[i]
        prev = w
    return out


def vector_simulation(cls: np.ndarray, conf: np.ndarray, ret: np.ndarray, fund: np.ndarray, cfg: TradingConfig,
                      horizon: int) -> np.ndarray:
    w = target_weights(direction_from_class(cls), conf, cfg, horizon)
    return strategy_returns(w, ret, fund, cfg.cost_rate)["net"]


def _best(fn: object, reps: int) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()  # type: ignore[operator]
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def bench_arrays(sizes: list[int]) -> None:
    """One asset's series of n bars; best of 3 runs for both paths."""
    for cfg, label in ((TradingConfig(), "long/short, full size, daily rebalance"),
                       (TradingConfig(sizing="confidence", hold="block", slippage_bps=5),
                        "confidence sizing, 7-day blocks, slippage")):
        for n in sizes:
            rng = np.random.default_rng(0)
            cls = rng.choice([0.0, 1.0, 2.0, np.nan], size=n, p=[0.3, 0.3, 0.35, 0.05])
            conf = np.where(np.isnan(cls), np.nan, rng.uniform(0.34, 1.0, n))
            ret = rng.normal(0, 0.03, n)
            fund = rng.normal(1e-4, 1e-4, n)
            vec = vector_simulation(cls, conf, ret, fund, cfg, 7)
            ref = loop_simulation(cls, conf, ret, fund, cfg, 7)
            assert np.allclose(vec, ref, atol=1e-15), "vectorised and loop simulations disagree"
            args = (cls, conf, ret, fund, cfg, 7)
            t_vec = _best(lambda a=args: vector_simulation(*a), max(1, 200_000 // n))  # type: ignore[misc]
            t_loop = _best(lambda a=args: loop_simulation(*a), 1)  # type: ignore[misc]
            print(f"simulation, {n:>9,} bars, {label}: vectorised {t_vec * 1e3:8.3f} ms, loop {t_loop * 1e3:8.1f} ms,"
                  f" ratio {t_loop / t_vec:5.0f}x (identical results)")


def bench_matrix(n_strategies: int, n_bars: int) -> tuple[float, float]:
    """What the walk-forward does per asset: every model and baseline simulated together (one matrix)."""
    rng = np.random.default_rng(2)
    cls = rng.choice([0.0, 1.0, 2.0, np.nan], size=(n_strategies, n_bars), p=[0.3, 0.3, 0.35, 0.05])
    conf = np.where(np.isnan(cls), np.nan, rng.uniform(0.34, 1.0, cls.shape))
    ret = rng.normal(0, 0.03, n_bars)
    fund = rng.normal(1e-4, 1e-4, n_bars)
    cfg = TradingConfig()

    def vec() -> np.ndarray:
        w = target_weights(direction_from_class(cls), conf, cfg, 7)
        return strategy_returns(w, ret, fund, cfg.cost_rate)["net"]

    def loop() -> np.ndarray:
        return np.vstack([loop_simulation(cls[i], conf[i], ret, fund, cfg, 7) for i in range(n_strategies)])

    assert np.allclose(vec(), loop(), atol=1e-15), "matrix and loop simulations disagree"
    t_vec, t_loop = _best(vec, 50), _best(loop, 1)
    print(f"simulation, {n_strategies} strategies x {n_bars:,} bars at once (per asset in the walk-forward): "
          f"vectorised {t_vec * 1e3:.3f} ms, loop {t_loop * 1e3:.1f} ms, ratio {t_loop / t_vec:.0f}x "
          "(identical results)")
    return t_vec, t_loop


def bench_frames(n_assets: int, n_bars: int) -> None:
    rng = np.random.default_rng(1)
    ts = pd.date_range("2000-01-01", periods=n_bars + 1, freq="1D", tz="UTC")
    preds, prices = [], []
    for a in range(n_assets):
        sym = f"A{a}/USDT"
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, n_bars + 1)))
        prices.append(pd.DataFrame({"symbol": sym, "ts": ts, "close": close}))
        preds.append(pd.DataFrame({"symbol": sym, "ts": ts[:-1],
                                   "predicted_class": rng.choice([0.0, 1.0, 2.0], size=n_bars),
                                   "confidence": rng.uniform(0.34, 1, n_bars)}))
    p, px = pd.concat(preds, ignore_index=True), pd.concat(prices, ignore_index=True)
    cfg = TradingConfig()
    t0 = time.perf_counter()
    vec = simulate_predictions(p, px, cfg=cfg, horizon_bars=7)
    t_vec = time.perf_counter() - t0
    t0 = time.perf_counter()
    closes = {(r.symbol, r.ts): r.close for r in px.itertuples(index=False)}
    out, prev_sym, prev_w = [], None, 0.0
    step = pd.Timedelta("1D")
    for r in p.sort_values(["symbol", "ts"]).itertuples(index=False):
        if r.symbol != prev_sym:
            prev_sym, prev_w = r.symbol, 0.0
        nxt = closes.get((r.symbol, r.ts + step))
        if nxt is None:
            continue
        w = 1.0 if r.predicted_class == 2 else (-1.0 if r.predicted_class == 0 else 0.0)
        out.append(w * (nxt / closes[(r.symbol, r.ts)] - 1) - cfg.cost_rate * abs(w - prev_w))
        prev_w = w
    t_loop = time.perf_counter() - t0
    assert np.allclose(vec["net"].to_numpy(), np.array(out)), "frame-level results disagree"
    print(f"simulation from frames, {n_assets} assets x {n_bars:,} bars: vectorised {t_vec * 1e3:.0f} ms, "
          f"row loop {t_loop * 1e3:.0f} ms, ratio {t_loop / t_vec:.0f}x (identical results)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", default="2200,20000,2000000", help="comma-separated series lengths")
    ap.add_argument("--assets-sim", type=int, default=20)
    ap.add_argument("--bars-per-asset", type=int, default=3000)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the bench runs")
    args = ap.parse_args()
    if args.smoke:
        args.bars, args.assets_sim, args.bars_per_asset = "2200", 2, 300
    bench_arrays([int(x) for x in args.bars.split(",")])
    t_vec, t_loop = bench_matrix(10, 2200)  # equality asserted inside
    bench_frames(args.assets_sim, args.bars_per_asset)
    ratio = t_vec / t_loop
    print(json.dumps({"bench": "backtest", "metric": round(t_vec * 1e3, 4), "reference": round(t_loop * 1e3, 4),
                      "ratio": round(ratio, 5), "target": "vectorised simulation <= 0.1x the per-bar loop (ms, "
                      "10 strategies x 2200 bars, identical results)", "met": bool(ratio <= 0.1), "unit": "ms"}))


if __name__ == "__main__":
    main()
