"""The backtest report: one HTML page with PNG figures (matplotlib, Agg backend, no display needed).

The page is the Jinja2 template ``report.html.j2`` beside this module (package data, autoescaped);
this module computes the figures and the formatted tables it shows.

Figures: equity curve of each strategy against buy-and-hold, drawdowns, reliability diagram, confusion
matrices, and rolling accuracy of the models against the baselines. Tables: the model-vs-baseline
summary with bootstrap intervals, per-asset scores, accuracy by confidence level, trading and risk
metrics, the folds and the leakage checks. Every number is on the common out-of-sample rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entasis.backtest.simulate import PORTFOLIO
from entasis.backtest.walkforward import BUY_AND_HOLD
from entasis.config import get_settings
from entasis.domain import CLASS_NAMES, POOLED

if TYPE_CHECKING:
    import pandas as pd

    from entasis.backtest.walkforward import WalkForwardResult

FIGURES = ("equity.png", "drawdown.png", "reliability.png", "confusion.png", "rolling_accuracy.png")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


TEMPLATE = "report.html.j2"


def _fmt(v: Any, digits: int = 4) -> str:
    """A cell as text (the template escapes it): floats to ``digits`` places, NaN as a dash."""
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        if math.isnan(float(v)):
            return "–"
        return f"{float(v):.{digits}f}"
    return str(v)


def _table(df: pd.DataFrame, digits: int = 4) -> dict[str, Any]:
    """Column names and formatted cells for the template's ``table`` macro; counts without decimals."""
    counts = [str(c) == "n" or str(c).startswith("n_") or str(c).endswith("(n)") for c in df.columns]
    rows = [[_fmt(v, 0 if is_n else digits) for v, is_n in zip(row, counts, strict=True)]
            for row in df.itertuples(index=False, name=None)]
    return {"columns": [str(c) for c in df.columns], "rows": rows}


def render_html(context: dict[str, Any]) -> str:
    """The report page from the packaged template (found through importlib.resources when installed)."""
    from importlib.resources import files

    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    source = files("entasis.backtest").joinpath(TEMPLATE).read_text(encoding="utf-8")
    return env.from_string(source).render(**context)


def _ml_models(result: WalkForwardResult) -> list[str]:
    return [m for m in result.models if not m.startswith("shuffled:")]


def _portfolio_equity(result: WalkForwardResult, names: list[str]) -> Iterator[tuple[str, pd.Series, np.ndarray]]:
    """(strategy, its bar times, its portfolio equity net of costs from 1) for each of ``names`` traded."""
    eq = result.equity[result.equity["scope"] == PORTFOLIO]
    for name in names:
        g = eq[eq["strategy"] == name].sort_values("ts")
        if not g.empty:
            yield name, g["ts"], np.cumprod(1 + g["net"].to_numpy())


def _save(plt: Any, fig: Any, path: Path, ax: Any = None, *, legend: int = 8, ncol: int = 1) -> None:
    """Legend (font size ``legend``) and grid on ``ax`` when given; the figure written as PNG, closed."""
    if ax is not None:
        ax.legend(fontsize=legend, ncol=ncol)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def figure_equity(result: WalkForwardResult, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5))
    best = result.best_baseline("accuracy") if result.baselines else None
    lo, hi = 1.0, 1.0
    for name, ts, curve in _portfolio_equity(result, [*_ml_models(result), *([best] if best else []), BUY_AND_HOLD]):
        style = {"color": "black", "lw": 2} if name == BUY_AND_HOLD else ({"ls": "--"} if name == best else {})
        lo, hi = min(lo, float(curve.min())), max(hi, float(curve.max()))
        ax.plot(ts, curve, label=name, **style)
    log_scale = hi / max(lo, 1e-12) > 3
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(f"Equity (portfolio, net of costs), {result.horizon}-day forecasts")
    ax.set_ylabel("equity (start = 1" + (", log scale)" if log_scale else ")"))
    _save(plt, fig, path, ax)


def figure_drawdown(result: WalkForwardResult, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4))
    for name, ts, e in _portfolio_equity(result, [*_ml_models(result), BUY_AND_HOLD]):
        dd = e / np.maximum.accumulate(np.concatenate([[1.0], e]))[1:] - 1
        ax.plot(ts, dd * 100, label=name, **({"color": "black"} if name == BUY_AND_HOLD else {}))
    ax.set_title("Drawdown (%)")
    _save(plt, fig, path, ax)


def figure_reliability(result: WalkForwardResult, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect calibration")
    for m in [*_ml_models(result), *result.baselines[:1]]:
        rel = result.metrics[m].get(POOLED, {}).get("reliability") or []
        pts = [(r["confidence"], r["accuracy"], r["count"]) for r in rel if r["count"] > 0]
        if pts:
            c, a, n = zip(*pts, strict=True)
            ax.plot(c, a, marker="o", label=f"{m} (ECE {result.metrics[m][POOLED]['ece']:.3f})")
    ax.set_xlabel("top-class probability")
    ax.set_ylabel("observed accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability (pooled)")
    _save(plt, fig, path, ax)


def figure_confusion(result: WalkForwardResult, path: Path) -> None:
    plt = _plt()
    names = [*_ml_models(result), *([result.best_baseline("accuracy")] if result.baselines else [])]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), squeeze=False)
    for ax, m in zip(axes[0], names, strict=True):
        cm = np.asarray(result.metrics[m][POOLED]["confusion"])
        ax.imshow(cm, cmap="Blues")
        for i in range(3):
            for j in range(3):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=9)
        ax.set_xticks(range(3), CLASS_NAMES, fontsize=7)
        ax.set_yticks(range(3), CLASS_NAMES, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(m, fontsize=9)
    _save(plt, fig, path)


def rolling_accuracy(result: WalkForwardResult, days: int = 90, min_count: int = 30) -> pd.DataFrame:
    """Per model: accuracy over the trailing ``days`` days of scored forecasts (all assets pooled), once
    the window holds ``min_count`` forecasts."""
    import pandas as pd

    p = result.predictions[result.predictions["scored"]]
    cols = {}
    for m, g in p.groupby("model", sort=False):
        hit = (g["predicted_class"].to_numpy() == g["actual_class"].to_numpy()).astype(float)
        daily = pd.DataFrame({"ts": g["ts"].to_numpy(), "hit": hit}).groupby("ts")["hit"].agg(["sum", "count"])
        r = daily.rolling(f"{days}D").sum()
        acc = r["sum"] / r["count"]
        cols[str(m)] = acc.where(r["count"] >= min_count)  # too few forecasts yet: not drawn
    return pd.DataFrame(cols)


def figure_rolling(result: WalkForwardResult, path: Path, days: int = 90) -> None:
    plt = _plt()

    ra = rolling_accuracy(result, days)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for m in ra.columns:
        base = m.startswith("baseline:")
        if m.startswith("shuffled:"):
            continue
        ax.plot(ra.index, ra[m], label=m, lw=1 if base else 1.8, ls="--" if base else "-", alpha=0.8 if base else 1)
    ax.set_title(f"Rolling {days}-day accuracy: models vs baselines")
    ax.set_ylim(0, 1)
    _save(plt, fig, path, ax, legend=7, ncol=2)


def comparison_table(result: WalkForwardResult, scope: str = POOLED) -> pd.DataFrame:
    """Model vs every baseline: Δaccuracy and Δlog-loss with bootstrap intervals."""
    import pandas as pd

    c = result.comparisons[result.comparisons["scope"] == scope]
    rows = []
    for (m, b), g in c.groupby(["model", "baseline"], sort=False):
        a = g[g["metric"] == "accuracy"].iloc[0]
        ll = g[g["metric"] == "log_loss"].iloc[0]
        rows.append({"model": m, "baseline": b, "Δ accuracy": a["estimate"],
                     "95% CI": f"[{a['lo']:+.3f}, {a['hi']:+.3f}]", "Δ log-loss": ll["estimate"],
                     "95% CI ": f"[{ll['lo']:+.3f}, {ll['hi']:+.3f}]"})
    return pd.DataFrame(rows)


def write_report(result: WalkForwardResult, directory: str | Path | None = None, *, title: str | None = None
                 ) -> Path:
    """Write ``report.html`` and the PNGs into ``directory`` (default ``reports_dir/backtest/<run_id>``)."""
    import pandas as pd

    if directory is None:
        directory = Path(get_settings().reports_dir) / "backtest" / result.run_id
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if len(result.equity):
        figure_equity(result, out / "equity.png")
        figure_drawdown(result, out / "drawdown.png")
    figure_reliability(result, out / "reliability.png")
    figure_confusion(result, out / "confusion.png")
    figure_rolling(result, out / "rolling_accuracy.png")

    cfg = result.config
    ttl = title or (f"Walk-forward backtest — {', '.join(cfg['symbols'])}, {result.horizon}-day horizon, "
                    f"{result.timeframe}")
    lk = result.leakage
    conf_rows = []
    for m in [*result.models, *result.baselines]:
        met = result.metrics[m].get(POOLED, {})
        conf_rows.append({"model": m, **{f"{lv} (n)": met.get(f"n_{lv}") for lv in ("high", "medium", "low")},
                          **{f"{lv} accuracy": met.get(f"accuracy_{lv}") for lv in ("high", "medium", "low")}})
    trows = []
    for strat, per in result.trading.items():
        for sc, met in per.items():
            trows.append({"strategy": strat, "scope": sc, **{k: met[k] for k in (
                "total_return", "annualized_return", "sharpe", "sortino", "calmar", "max_drawdown", "hit_rate",
                "turnover_per_bar", "var_95_historical", "es_95_historical", "var_95_parametric",
                "es_95_parametric")}})
    captions = (("equity.png", "Equity vs buy-and-hold"), ("drawdown.png", "Drawdown"),
                ("rolling_accuracy.png", "Rolling accuracy vs baselines"),
                ("reliability.png", "Reliability diagram"), ("confusion.png", "Confusion matrices"))
    doc = render_html({
        "title": ttl,
        "run_id": result.run_id,
        "cfg": cfg,
        "leakage": {"problems": list(lk.get("problems") or []), "threshold": _fmt(lk.get("threshold"), 2),
                    "shuffled_accuracy": _fmt(lk.get("shuffled_accuracy"), 3), "mode": lk.get("mode")},
        "summary": _table(result.summary(POOLED)),
        "comparison": _table(comparison_table(result)),
        "figures": [(name, caption) for name, caption in captions if (out / name).exists()],
        "scopes": [(sc, _table(result.summary(sc))) for sc in result.scopes[1:]],
        "confidence": _table(pd.DataFrame(conf_rows)),
        "trading": _table(pd.DataFrame(trows)) if trows else None,
        "n_folds": len(result.folds),
        "folds": _table(result.folds.head(400)),
    })
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
