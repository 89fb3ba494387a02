"""Features speed, as ratios against references measured in this same process.

    .venv/bin/python bench/features.py [--symbols 100] [--years 5] [--timeframe 1h] [--skip-spark]

Data: simulated hourly candles (numpy: stochastic-volatility random walk, consistent OHLC), the
default 100 symbols x 5 years = 4.38M rows; generated in seconds, not timed.

1. ``compute`` (features + warm-up + labels, the function every path uses) in ONE pandas process,
   against calling the same TA-Lib functions alone on the same arrays (the overhead of our layer:
   returns, ratios, bounded-history blocks, labels, frame assembly). Target: <= 2x raw TA-Lib.
2. The Spark path in ``local[2]``: the job's own input layout (series id, kind, ts, six numbers;
   one parquet file per series, as the job's JDBC read puts one series in one partition) ->
   ``mapInArrow`` through the same arithmetic -> stage-shaped rows -> noop sink, against (1).
   Spark start-up and the first run (Python workers starting) are reported, not counted.
   Target: <= 3x the single pandas process.
The end-to-end job (JDBC in/out of PostgreSQL) is not in this bench: its cost is the database's.
Ends with one JSON line per target.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entasis.features import catalog  # noqa: E402
from entasis.features.compute import LabelParams, compute  # noqa: E402

PARAMS = LabelParams(horizons=(7, 14, 30))


def simulate(n_symbols: int, years: float, timeframe: str, seed: int = 7) -> list[pd.DataFrame]:
    """Fast synthetic candles: log-price random walk with AR(1) log-volatility; valid OHLCV."""
    from scipy.signal import lfilter

    step = pd.Timedelta(seconds=catalog.timeframe_seconds(timeframe))
    n = int(years * 365 * 86_400 / step.total_seconds())
    start = pd.Timestamp("2019-01-01", tz="UTC")
    ts = pd.DatetimeIndex(start + step * np.arange(n))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_symbols):
        z = rng.standard_normal(n)
        logv = lfilter([1.0], [1.0, -0.98], rng.standard_normal(n) * 0.1)  # AR(1) log-volatility
        sig = 0.008 * np.exp(logv)
        lc = math.log(10 + 100 * rng.random()) + np.cumsum(sig * z)
        c = np.exp(lc)
        o = np.r_[c[0], c[:-1]]
        spread = np.abs(rng.standard_normal((2, n))) * sig * c * 0.5
        hi = np.maximum(o, c) + spread[0]
        lo = np.maximum(np.minimum(o, c) - spread[1], 1e-9)
        vol = rng.lognormal(5, 1, n)
        out.append(pd.DataFrame({"exchange": "sim", "symbol": f"S{i:03d}/USDT", "timeframe": timeframe, "ts": ts,
                                 "open": o, "high": hi, "low": lo, "close": c, "volume": vol}))
    return out


def raw_talib(df: pd.DataFrame, timeframe: str) -> int:
    """The TA-Lib calls compute makes, on the whole arrays, and nothing else."""
    import talib

    h, lo, c, v = (df[k].to_numpy() for k in ("high", "low", "close", "volume"))
    lr = np.log(c[1:] / c[:-1])
    talib.MACD(c, 12, 26, 9)
    talib.BBANDS(c, 20, 2.0, 2.0, matype=talib.MA_Type.SMA)
    talib.RSI(c, 14)
    talib.EMA(c, 20)
    talib.EMA(c, 50)
    talib.SMA(c, 50)
    talib.SMA(v, 20)
    talib.STDDEV(lr, 20, 1.0)
    talib.ATR(h, lo, c, 14)
    for hd in PARAMS.horizons:
        talib.STDDEV(lr, catalog.horizon_bars(hd, timeframe), 1.0)
    return len(c)


def best_of(fn: object, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def _json(bench: str, metric: float, reference: float, target: float) -> str:
    ratio = metric / reference
    return json.dumps({"bench": bench, "metric": round(metric, 4), "reference": round(reference, 4),
                       "ratio": round(ratio, 3), "target": f"<= {target:g}x", "met": bool(ratio <= target)})


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--years", type=float, default=5.0)
    ap.add_argument("--timeframe", default="1h")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-spark", action="store_true")
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    frames = simulate(args.symbols, args.years, args.timeframe)
    rows = sum(len(f) for f in frames)
    print(f"data: {args.symbols} symbols x {args.years:g} years {args.timeframe} = {rows:,} rows "
          f"(simulated in {time.perf_counter() - t0:.1f}s)")

    def run_compute() -> None:
        for f in frames:
            compute(f, labels=PARAMS, extensions=False)

    def run_talib() -> None:
        for f in frames:
            raw_talib(f, args.timeframe)

    run_compute()  # warm: imports, caches
    t_talib = best_of(run_talib, args.repeat)
    t_comp = best_of(run_compute, args.repeat)
    lines = [_json("features_compute_vs_talib", t_comp, t_talib, 2.0)]
    print(f"raw TA-Lib calls:        {t_talib:8.2f}s  {rows / t_talib:12,.0f} rows/s")
    print(f"compute (1 process):     {t_comp:8.2f}s  {rows / t_comp:12,.0f} rows/s")
    print(f"  our layer / raw TA-Lib: {t_comp / t_talib:.2f}x   (target <= 2x; extension features off)")
    # the registered extension features (entasis.features.extensions), measured apart: not our layer
    one = frames[0].iloc[: min(len(frames[0]), 2000)]
    compute(one, labels=PARAMS)  # untimed: the first call loads the levels' compiled (numba) code
    t_ext = best_of(lambda: compute(one, labels=PARAMS), args.repeat) - best_of(
        lambda: compute(one, labels=PARAMS, extensions=False), args.repeat)
    print(f"extension features:      {t_ext / len(one) * 1e6:8.1f} us/row on {len(one)} rows "
          f"(~{t_ext / len(one) * rows:,.0f}s for these {rows:,} rows; not in the ratios)")

    if not args.skip_spark:
        from entasis.config import load_settings
        from entasis.features.spark_job import apply_compute, job_input_frame, spark_session

        keys = [(str(f["exchange"].iloc[0]), str(f["symbol"].iloc[0]), str(f["timeframe"].iloc[0])) for f in frames]
        with tempfile.TemporaryDirectory(prefix="entasis_bench_") as tmp:
            path = os.path.join(tmp, "inputs")
            os.makedirs(path)
            for i, f in enumerate(frames):  # one file per series: a series never spans two partitions
                job_input_frame(f, None, keys).assign(sid=i).to_parquet(
                    os.path.join(path, f"part-{i:04d}.parquet"), index=False)
            frames.clear()  # free the memory before Spark starts
            t0 = time.perf_counter()
            spark = spark_session(load_settings(), master=args.master,
                                  extra_conf={"spark.sql.files.maxPartitionBytes": str(1 << 30),
                                              "spark.sql.files.openCostInBytes": str(1 << 20)})
            t_start = time.perf_counter() - t0
            try:
                sdf = spark.read.parquet(path)
                kmap = dict(enumerate(keys))

                def run_spark() -> None:
                    apply_compute(sdf, kmap, PARAMS, partitioned_by_series=True, extensions=False) \
                        .write.format("noop").mode("overwrite").save()

                t_first = best_of(run_spark, 1)  # includes Python worker start-up
                t_spark = best_of(run_spark, args.repeat)
            finally:
                spark.stop()
        print(f"spark {args.master} start-up: {t_start:6.2f}s (not counted below)")
        print(f"spark {args.master} first run: {t_first:6.2f}s  (Python workers starting)")
        print(f"spark {args.master}:          {t_spark:8.2f}s  {rows / t_spark:12,.0f} rows/s")
        print(f"  spark / one pandas process: {t_spark / t_comp:.2f}x   (target <= 3x)")
        lines.append(_json("features_spark_vs_pandas", t_spark, t_comp, 3.0))
    for line in lines:
        print(line)
    return [json.loads(x) for x in lines]


if __name__ == "__main__":
    main()
