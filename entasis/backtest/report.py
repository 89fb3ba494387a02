"""The backtest report: one HTML page with PNG figures (matplotlib, Agg backend, no display needed).

Figures: equity curve of each strategy against buy-and-hold, drawdowns, reliability diagram, confusion
matrices, and rolling accuracy of the models against the baselines. Tables: the model-vs-baseline
summary with bootstrap intervals, per-asset scores, accuracy by confidence level, trading and risk
metrics, the folds and the leakage checks. Every number is on the common out-of-sample rows.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from entasis.backtest.walkforward import WalkForwardResult

FIGURES = ("equity.png", "drawdown.png", "reliability.png", "confusion.png", "rolling_accuracy.png")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        if math.isnan(float(v)):
            return "–"
        return f"{float(v):.{digits}f}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, digits: int = 4) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    counts = [str(c) == "n" or str(c).startswith("n_") or str(c).endswith("(n)") for c in df.columns]
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v, 0 if is_n else digits)}</td>" for v, is_n in zip(row, counts,
                                                                                                   strict=True))
                   + "</tr>" for row in df.itertuples(index=False, name=None))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ml_models(result: WalkForwardResult) -> list[str]:
    return [m for m in result.models if not m.startswith("shuffled:")]


def figure_equity(result: WalkForwardResult, path: Path) -> None:
    plt = _plt()
    from entasis.backtest.simulate import PORTFOLIO
    from entasis.backtest.walkforward import BUY_AND_HOLD

    fig, ax = plt.subplots(figsize=(10, 5))
    eq = result.equity[result.equity["scope"] == PORTFOLIO]
    best = result.best_baseline("accuracy") if result.baselines else None
    lo, hi = 1.0, 1.0
    for name in [*_ml_models(result), *([best] if best else []), BUY_AND_HOLD]:
        g = eq[eq["strategy"] == name].sort_values("ts")
        if g.empty:
            continue
        style = {"color": "black", "lw": 2} if name == BUY_AND_HOLD else ({"ls": "--"} if name == best else {})
        curve = np.cumprod(1 + g["net"].to_numpy())
        lo, hi = min(lo, float(curve.min())), max(hi, float(curve.max()))
        ax.plot(g["ts"], curve, label=name, **style)
    log_scale = hi / max(lo, 1e-12) > 3
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(f"Equity (portfolio, net of costs), {result.horizon}-day forecasts")
    ax.set_ylabel("equity (start = 1" + (", log scale)" if log_scale else ")"))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def figure_drawdown(result: WalkForwardResult, path: Path) -> None:
    plt = _plt()
    from entasis.backtest.simulate import PORTFOLIO
    from entasis.backtest.walkforward import BUY_AND_HOLD

    fig, ax = plt.subplots(figsize=(10, 4))
    eq = result.equity[result.equity["scope"] == PORTFOLIO]
    for name in [*_ml_models(result), BUY_AND_HOLD]:
        g = eq[eq["strategy"] == name].sort_values("ts")
        if g.empty:
            continue
        e = np.cumprod(1 + g["net"].to_numpy())
        dd = e / np.maximum.accumulate(np.concatenate([[1.0], e]))[1:] - 1
        ax.plot(g["ts"], dd * 100, label=name, **({"color": "black"} if name == BUY_AND_HOLD else {}))
    ax.set_title("Drawdown (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def figure_reliability(result: WalkForwardResult, path: Path) -> None:
    plt = _plt()
    from entasis.backtest.walkforward import POOLED

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
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def figure_confusion(result: WalkForwardResult, path: Path) -> None:
    plt = _plt()
    from entasis.backtest.metrics import CLASS_NAMES
    from entasis.backtest.walkforward import POOLED

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
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def comparison_table(result: WalkForwardResult, scope: str = "pooled") -> pd.DataFrame:
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

    from entasis.backtest.walkforward import POOLED

    if directory is None:
        from entasis.config import get_settings

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
    parts = [f"<h1>{html.escape(ttl)}</h1>",
             f"<p>run <code>{result.run_id}</code>; test {cfg['start'][:10]} → {cfg['end'][:10]}; "
             f"{cfg['window']} window, refit every {cfg['refit_days']} days, purge {cfg['purge_days']} days + "
             f"embargo {cfg['embargo_days']}; fees {cfg['trading']['fee_bps']} bps/side, slippage "
             f"{cfg['trading']['slippage_bps']} bps, sizing {cfg['trading']['sizing']}, hold "
             f"{cfg['trading']['hold']}{', long-only' if cfg['trading']['long_only'] else ''}; "
             f"funding {'applied' if cfg.get('funding') else 'not available'}.</p>"]
    lk = result.leakage
    if lk.get("problems"):
        parts.append("<p class='bad'><b>Leakage warnings:</b> " + html.escape("; ".join(lk["problems"])) + "</p>")
    else:
        parts.append(f"<p>Leakage checks: purge verified on every fold; plausibility threshold "
                     f"{_fmt(lk.get('threshold'), 2)}; shuffled-label accuracy {_fmt(lk.get('shuffled_accuracy'), 3)}"
                     f" ({lk.get('mode')}).</p>")
    parts.append("<h2>Models vs baselines (pooled)</h2>")
    parts.append(_table(result.summary(POOLED)))
    parts.append("<p>Δ = model − best baseline (accuracy: higher is better; log-loss: lower is better); "
                 "intervals are 95% moving-block bootstrap over days.</p>")
    parts.append("<h2>Model vs every baseline</h2>")
    parts.append(_table(comparison_table(result)))
    for fig_name, caption in (("equity.png", "Equity vs buy-and-hold"), ("drawdown.png", "Drawdown"),
                              ("rolling_accuracy.png", "Rolling accuracy vs baselines"),
                              ("reliability.png", "Reliability diagram"), ("confusion.png", "Confusion matrices")):
        if (out / fig_name).exists():
            parts.append(f"<h2>{caption}</h2><img src='{fig_name}' alt='{caption}'>")
    for sc in result.scopes[1:]:
        parts.append(f"<h2>{html.escape(sc)}</h2>")
        parts.append(_table(result.summary(sc)))
    conf_rows = []
    for m in [*result.models, *result.baselines]:
        met = result.metrics[m].get(POOLED, {})
        conf_rows.append({"model": m, **{f"{lv} (n)": met.get(f"n_{lv}") for lv in ("high", "medium", "low")},
                          **{f"{lv} accuracy": met.get(f"accuracy_{lv}") for lv in ("high", "medium", "low")}})
    parts.append("<h2>Accuracy by confidence (high ≥ 70%, medium ≥ 50%, low)</h2>")
    parts.append(_table(pd.DataFrame(conf_rows)))
    trows = []
    for strat, per in result.trading.items():
        for sc, met in per.items():
            trows.append({"strategy": strat, "scope": sc, **{k: met[k] for k in (
                "total_return", "annualized_return", "sharpe", "sortino", "calmar", "max_drawdown", "hit_rate",
                "turnover_per_bar", "var_95_historical", "es_95_historical", "var_95_parametric",
                "es_95_parametric")}})
    if trows:
        parts.append("<h2>Trading and risk (daily returns; VaR/ES as positive daily losses)</h2>")
        parts.append(_table(pd.DataFrame(trows)))
    ft = result.folds.copy()
    parts.append(f"<h2>Folds ({len(ft)})</h2>")
    parts.append(_table(ft.head(400)))
    css = ("body{font-family:sans-serif;margin:2em;max-width:1400px} table{border-collapse:collapse;"
           "font-size:12px;margin-bottom:1em} td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
           " th{background:#eee} img{max-width:100%} .bad{color:#b00}")
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(ttl)}</title>"
           f"<style>{css}</style></head><body>{''.join(parts)}</body></html>")
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
