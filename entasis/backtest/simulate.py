"""Vectorised trading simulation of direction forecasts (numpy, no per-bar Python loop).

From forecast to position (documented choice): a forecast made on bar ``t`` (after its close) sets
the target position held from the close of ``t`` to the close of ``t+1``:

* ``hold='latest'`` (default): every bar follows the latest forecast and the book is rebalanced
  daily. An h-day forecast is refreshed each day, so the position is always the newest view; nothing
  overlaps because only one position per asset exists at a time.
* ``hold='block'``: non-overlapping h-day trades: a decision is taken on the first test bar and then
  every h bars, and held unchanged for h bars (the forecasts in between are ignored).

Direction: bullish → long, bearish → short (flat when ``long_only``), neutral or no forecast → flat.
Size: ``sizing='full'`` uses the full notional (|w| = 1); ``sizing='confidence'`` follows the
specification's rule ``|w| = min(risk_fraction · confidence, max_fraction)`` with confidence the
forecast's top-class probability in [0, 1] (defaults 2% and a 5% cap: 0.67%–2% of equity; the cap
binds only if ``risk_fraction`` is raised above 5%).

Costs, per bar ``t`` with weight ``w_t`` (fraction of equity, rebalanced to target each bar):

``net_t = w_t · r_{t+1} − (fee + slippage) · |w_t − w_{t−1}| − w_t · F_{t+1}``

where ``r_{t+1}`` is the next bar's close-to-close return, ``|w_t − w_{t−1}|`` the turnover (fees are
per side, so opening 0 → 1 pays once and flipping 1 → −1 pays twice), ``w_{−1} = 0``, and ``F_{t+1}``
the sum of perpetual funding rates settled while the position is held (events in
``(close_t, close_{t+1}]``): longs pay positive funding, shorts receive it. No funding data → 0.
The position still open at the end is not closed (no exit fee).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from entasis.backtest.folds import BacktestError
from entasis.risk.metrics import performance_summary

if TYPE_CHECKING:
    import pandas as pd

Sizing = Literal["full", "confidence"]
Hold = Literal["latest", "block"]
PORTFOLIO = "portfolio"


@dataclass(frozen=True)
class TradingConfig:
    long_only: bool = False
    sizing: Sizing = "full"
    risk_fraction: float = 0.02
    max_fraction: float = 0.05
    fee_bps: float = 10.0
    slippage_bps: float = 0.0
    hold: Hold = "latest"
    funding: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sizing not in ("full", "confidence"):
            raise BacktestError(f"sizing must be 'full' or 'confidence'; got {self.sizing!r}")
        if self.hold not in ("latest", "block"):
            raise BacktestError(f"hold must be 'latest' or 'block'; got {self.hold!r}")
        if self.fee_bps < 0 or self.slippage_bps < 0:
            raise BacktestError(f"fee_bps and slippage_bps must be >= 0; got {self.fee_bps}, {self.slippage_bps}")
        if not 0 < self.risk_fraction <= 1 or not 0 < self.max_fraction <= 1:
            raise BacktestError("risk_fraction and max_fraction must be in (0, 1]")

    @property
    def cost_rate(self) -> float:
        return (self.fee_bps + self.slippage_bps) / 1e4


def direction_from_class(cls: np.ndarray) -> np.ndarray:
    """2 → +1, 0 → −1; 1 (neutral) and NaN (no forecast) → 0 (flat)."""
    c = np.asarray(cls, dtype=np.float64)
    d = (c == 2).astype(np.float64)
    d -= c == 0
    return d


def target_weights(direction: np.ndarray, confidence: np.ndarray | None, cfg: TradingConfig,
                   horizon_bars: int = 1) -> np.ndarray:
    """Weights from forecasts: bars along the last axis (time order), one row per strategy when 2-d.

    NaN direction = flat. Written with plain ufuncs (``np.where`` / ``nan_to_num`` with scalars are slow
    in numpy 2) so a whole set of strategies costs a handful of array passes.
    """
    d = np.asarray(direction, dtype=np.float64)
    conf = None if confidence is None else np.asarray(confidence, dtype=np.float64)
    if cfg.hold == "block":
        if horizon_bars < 1:
            raise BacktestError(f"horizon_bars must be >= 1; got {horizon_bars}")
        n = d.shape[-1]
        # the decision bar's value, held for h bars
        d = np.repeat(d[..., ::horizon_bars], horizon_bars, axis=-1)[..., :n]
        conf = None if conf is None else np.repeat(conf[..., ::horizon_bars], horizon_bars, axis=-1)[..., :n]
    if not math.isfinite(d.sum()):  # no forecast (NaN): flat; a sum is one pass, isnan().any() two
        d = d.copy()
        d[np.isnan(d)] = 0.0
    if cfg.long_only:
        d = np.maximum(d, 0.0)
    if cfg.sizing == "full":
        return d
    if conf is None:
        raise BacktestError("sizing='confidence' needs a confidence per forecast")
    if not math.isfinite(conf.sum()):  # a forecast without a confidence gets no size
        conf = conf.copy()
        conf[np.isnan(conf)] = 0.0
    size = np.minimum(cfg.risk_fraction * conf, cfg.max_fraction)
    return np.asarray(d * size)


def strategy_returns(weights: np.ndarray, next_ret: np.ndarray, next_funding: np.ndarray | None,
                     cost_rate: float) -> dict[str, np.ndarray]:
    """Per-bar gross, cost, funding and net returns plus turnover (array passes, no loop).

    ``weights`` is (n,) or (strategies, n); ``next_ret`` / ``next_funding`` are (n,) and shared by all rows.
    """
    w = np.asarray(weights, dtype=np.float64)
    r = np.asarray(next_ret, dtype=np.float64)
    if w.ndim not in (1, 2) or r.ndim != 1 or w.shape[-1] != r.shape[0]:
        raise BacktestError(f"weights {w.shape} must be (n,) or (k, n) with returns of shape (n,); got {r.shape}")
    if not math.isfinite(r.sum()):
        raise BacktestError("next-bar returns contain NaN or inf; drop bars without a next close first")
    turnover = np.empty_like(w)
    if w.shape[-1]:
        turnover[..., 0] = np.abs(w[..., 0])
        np.subtract(w[..., 1:], w[..., :-1], out=turnover[..., 1:])
        np.abs(turnover, out=turnover)
    gross = w * r
    cost = cost_rate * turnover
    net = gross - cost
    if next_funding is None:
        fund = np.zeros_like(w)
    else:
        f = np.asarray(next_funding, dtype=np.float64)
        if not math.isfinite(f.sum()):
            f = f.copy()
            f[np.isnan(f)] = 0.0
        fund = w * f
        net -= fund
    return {"weight": w, "gross": gross, "cost": cost, "funding": fund, "net": net, "turnover": turnover}


def strategy_returns_loop(weights: np.ndarray, next_ret: np.ndarray, next_funding: np.ndarray | None,
                          cost_rate: float) -> np.ndarray:
    """Bar-by-bar reference of :func:`strategy_returns` (net only), for tests and the benchmark."""
    out = np.empty(len(weights))
    prev = 0.0
    for i in range(len(weights)):
        w = float(weights[i])
        fee = cost_rate * abs(w - prev)
        fund = 0.0 if next_funding is None else w * float(next_funding[i])
        out[i] = w * float(next_ret[i]) - fee - fund
        prev = w
    return out


def funding_per_bar(hold_start: np.ndarray, bar: np.timedelta64, events_ts: np.ndarray,
                    rates: np.ndarray) -> np.ndarray:
    """Sum of funding ``rates`` settled in ``(hold_start[k], hold_start[k] + bar]`` for each k."""
    hs = np.asarray(hold_start, dtype="datetime64[ns]")
    ev = np.asarray(events_ts, dtype="datetime64[ns]")
    out = np.zeros(hs.size)
    if ev.size == 0 or hs.size == 0:
        return out
    k = np.searchsorted(hs, ev, side="left") - 1
    ok = k >= 0
    ok[ok] &= ev[ok] <= hs[k[ok]] + bar
    np.add.at(out, k[ok], np.asarray(rates, dtype=np.float64)[ok])
    return out


def trading_metrics(res: dict[str, np.ndarray], periods_per_year: float) -> dict[str, float]:
    """Risk/performance of the net returns plus hit rate, turnover and exposure.

    A bar that would lose 100% or more (a full-size short through a > 100% rally, e.g. DOGE on
    2021-01-28) is counted as a wipe-out of that position's capital, -100% + 1e-9, instead of an
    impossible return the risk metrics refuse."""
    net = np.maximum(res["net"], -1.0 + 1e-9)
    out = performance_summary(net, periods_per_year)
    active = res["weight"] != 0
    out["hit_rate"] = float((net[active] > 0).mean()) if active.any() else float("nan")
    out["exposure"] = float(active.mean())
    out["turnover_per_bar"] = float(res["turnover"].mean())
    out["turnover_annual"] = float(res["turnover"].mean() * periods_per_year)
    out["total_cost"] = float(res["cost"].sum())
    out["total_funding"] = float(res["funding"].sum())
    out["n_trades"] = float((res["turnover"] > 0).sum())
    return out


def simulate_predictions(preds: pd.DataFrame, prices: pd.DataFrame, *, cfg: TradingConfig,
                         horizon_bars: int, bar: str = "1D", funding: pd.DataFrame | None = None,
                         always_long: bool = False) -> pd.DataFrame:
    """Per-asset strategy returns for one model's forecasts.

    ``preds``: symbol, ts, predicted_class (NaN = no forecast), confidence. ``prices``: symbol, ts, close
    (the full series: the bar after the last forecast supplies its next return). ``funding``: symbol,
    ts, funding_rate. ``always_long`` ignores the forecasts (buy-and-hold). Returns a long frame:
    symbol, ts (forecast bar), earned_ts (bar the return is earned over), weight, gross, cost,
    funding, net, turnover.
    """
    one = preds.drop(columns=["model"], errors="ignore").assign(model="_")
    out = simulate_models(one, prices, cfg=cfg, horizon_bars=horizon_bars, bar=bar, funding=funding,
                          always_long=("_",) if always_long else ())
    return out.drop(columns=["model"])


SIM_COLUMNS = ["model", "symbol", "ts", "earned_ts", "weight", "gross", "cost", "funding", "net", "turnover"]


def simulate_models(preds: pd.DataFrame, prices: pd.DataFrame, *, cfg: TradingConfig, horizon_bars: int,
                    bar: str = "1D", funding: pd.DataFrame | None = None,
                    always_long: Sequence[str] = ()) -> pd.DataFrame:
    """Several strategies at once: ``preds`` has a ``model`` column and every model forecasts the same
    (symbol, ts) rows, so each asset is one (models × bars) matrix through the same array passes.

    Models named in ``always_long`` are held long whatever they forecast (buy-and-hold). Returns
    :data:`SIM_COLUMNS` in long form.
    """
    import pandas as pd

    step = pd.Timedelta(bar)
    step_ns = np.int64(step.value)
    if preds.empty:
        return pd.DataFrame(columns=SIM_COLUMNS)
    codes, uniq = pd.factorize(preds["model"].astype(str), sort=False)
    models = [str(m) for m in uniq]
    cats = sorted(str(x) for x in pd.unique(preds["symbol"]))
    # one sort per model and plain arrays: the per-asset work below is numpy only (no pandas per group)
    keys, cls_rows, conf_rows = None, [], []
    has_conf = "confidence" in preds.columns
    for i, m in enumerate(models):
        sub = preds[codes == i]
        sym, t, order = _sorted_keys(sub, cats)
        if keys is None:
            keys = (sym, t)
        elif not (np.array_equal(keys[0], sym) and np.array_equal(keys[1], t)):
            raise BacktestError(f"model {m!r} forecasts other (symbol, ts) rows than {models[0]!r}; simulate "
                                "strategies together only on common rows")
        cls_rows.append(sub["predicted_class"].to_numpy(dtype=np.float64)[order])
        if has_conf:
            conf_rows.append(sub["confidence"].to_numpy(dtype=np.float64)[order])
    assert keys is not None
    p_sym, p_t = keys
    cls_m = np.vstack(cls_rows)
    conf_m = np.vstack(conf_rows) if has_conf else None
    long_rows = np.array([m in set(always_long) for m in models])
    x_sym, x_t, x_order = _sorted_keys(prices, cats)
    x_close = prices["close"].to_numpy(dtype=np.float64)[x_order]
    f_sym: np.ndarray | None = None
    if funding is not None and cfg.funding and len(funding):
        f_sym, f_t, f_order = _sorted_keys(funding, cats)
        f_rate = funding["funding_rate"].to_numpy(dtype=np.float64)[f_order]
    out: dict[str, list[np.ndarray]] = {c: [] for c in SIM_COLUMNS}
    k = len(models)
    for code, (a, b) in _groups(p_sym).items():
        name = cats[code]
        xa, xb = _span(x_sym, code)
        if xb <= xa:
            raise BacktestError(f"no prices for {name}; the trading simulation needs closes")
        t = p_t[a:b]
        cur = _lookup(x_t[xa:xb], x_close[xa:xb], t)
        nxt = _lookup(x_t[xa:xb], x_close[xa:xb], t + step_ns)
        ok = ~(np.isnan(cur) | np.isnan(nxt))
        if not ok.any():
            continue
        t = t[ok]
        next_ret = nxt[ok] / cur[ok] - 1.0
        n = t.size
        d = direction_from_class(cls_m[:, a:b][:, ok])
        conf = None if conf_m is None else conf_m[:, a:b][:, ok]
        if long_rows.any():
            d[long_rows] = 1.0
            if cfg.sizing == "confidence":
                conf = np.ones((k, n)) if conf is None else conf.copy()
                conf[long_rows] = 1.0
        w = target_weights(d, conf, cfg, horizon_bars)
        fund = None
        if f_sym is not None:
            fa, fb = _span(f_sym, code)
            if fb > fa:
                fund = funding_per_bar((t + step_ns).astype("datetime64[ns]"), step.to_timedelta64(),
                                       f_t[fa:fb].astype("datetime64[ns]"), f_rate[fa:fb])
        res = strategy_returns(w, next_ret, fund, cfg.cost_rate)
        out["model"].append(np.repeat(np.asarray(models, dtype=object), n))
        out["symbol"].append(np.full(k * n, name, dtype=object))
        out["ts"].append(np.tile(t, k))
        out["earned_ts"].append(np.tile(t + step_ns, k))
        for key, v in res.items():
            out[key].append(np.broadcast_to(v, (k, n)).ravel())
    if not out["ts"]:
        return pd.DataFrame(columns=SIM_COLUMNS)
    frame = {c: np.concatenate(v) for c, v in out.items()}
    for c in ("ts", "earned_ts"):
        frame[c] = pd.DatetimeIndex(frame[c].astype("datetime64[ns]")).tz_localize("UTC")
    return pd.DataFrame(frame)[SIM_COLUMNS]


def _sorted_keys(df: pd.DataFrame, cats: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(symbol code into ``cats`` (−1 if absent), ts as int64 ns) sorted by code then ts, and that order."""
    import pandas as pd

    code = np.asarray(pd.Categorical(df["symbol"].astype(str), categories=cats).codes, dtype=np.int64)
    t = _ns(df["ts"])
    order = np.lexsort((t, code))
    return code[order], t[order], order


def _span(sorted_codes: np.ndarray, code: int) -> tuple[int, int]:
    """[a, b) of ``code`` in a sorted code array."""
    return (int(np.searchsorted(sorted_codes, code, side="left")),
            int(np.searchsorted(sorted_codes, code, side="right")))


def _groups(sorted_codes: np.ndarray) -> dict[int, tuple[int, int]]:
    """Each code's [a, b) in a sorted code array (codes < 0, i.e. unknown symbols, never occur here)."""
    if sorted_codes.size == 0:
        return {}
    cut = np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1
    starts = np.r_[0, cut]
    ends = np.r_[cut, sorted_codes.size]
    return {int(sorted_codes[a]): (int(a), int(b)) for a, b in zip(starts, ends, strict=True)}


def _ns(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds."""
    import pandas as pd

    return np.asarray(pd.to_datetime(ts, utc=True).dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
                      .astype(np.int64))


def _lookup(keys: np.ndarray, values: np.ndarray, want: np.ndarray) -> np.ndarray:
    """values at exactly the timestamps ``want`` (NaN where absent); ``keys`` sorted."""
    i = np.searchsorted(keys, want)
    i = np.minimum(i, keys.size - 1)
    hit = keys[i] == want
    out = np.full(want.size, np.nan)
    out[hit] = values[i[hit]]
    return out


def portfolio_returns(per_asset: pd.DataFrame) -> pd.DataFrame:
    """Equal capital per asset, rebalanced each bar: the mean of the assets' columns per bar."""
    cols = ["weight", "gross", "cost", "funding", "net", "turnover"]
    g = per_asset.groupby("earned_ts", sort=True)[cols].mean().reset_index()
    g["weight"] = per_asset.assign(aw=per_asset["weight"].abs()).groupby("earned_ts", sort=True)["aw"].mean().values
    return g


def as_arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy(dtype=np.float64) for c in ("weight", "gross", "cost", "funding", "net",
                                                            "turnover")}
