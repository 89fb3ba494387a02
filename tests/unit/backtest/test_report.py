"""The HTML backtest report: rendered from the packaged Jinja2 template with the run's own numbers."""

from __future__ import annotations

import fnmatch
import tomllib
from importlib.resources import files
from pathlib import Path

import pandas as pd
import pytest

from entasis.backtest.report import TEMPLATE, _fmt, write_report
from entasis.backtest.walkforward import POOLED, WalkForwardResult, walk_forward
from tests.unit.backtest.synth import make_market, tiny

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def result() -> WalkForwardResult:
    frame, prices = make_market(strength=2.0, n_days=300, seed=4)
    return walk_forward(frame, horizon=7, start="2020-08-01", end="2020-10-15", prices=prices,
                        models=[tiny("lgbm")], refit_days=30, n_boot=100, min_train_rows=100, leakage="warn")


def test_report_shows_the_runs_numbers_and_the_reliability_diagram(result: WalkForwardResult,
                                                                   tmp_path: Path) -> None:
    path = write_report(result, tmp_path, title="Report <for> 'BTC' & co")
    page = path.read_text(encoding="utf-8")
    summary = result.summary(POOLED)
    assert len(summary) >= 2  # the model and its baselines
    for _, row in summary.iterrows():
        assert f"<td>{row['model']}</td>" in page
        assert f"<td>{_fmt(row['accuracy'])}</td>" in page and f"<td>{_fmt(row['log_loss'])}</td>" in page
    assert "<h2>Reliability diagram</h2><img src='reliability.png' alt='Reliability diagram'>" in page
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"<h2>Folds ({len(result.folds)})</h2>" in page
    assert f"run <code>{result.run_id}</code>" in page
    cfg = result.config
    assert f"test {cfg['start'][:10]} → {cfg['end'][:10]}" in page
    # autoescaped: a title cannot inject markup
    assert "<title>Report &lt;for&gt; &#39;BTC&#39; &amp; co</title>" in page and "<for>" not in page
    for name in ("equity.png", "drawdown.png", "confusion.png", "rolling_accuracy.png"):
        assert f"src='{name}'" in page and (tmp_path / name).exists()


def test_leakage_warnings_are_shown_escaped(result: WalkForwardResult, tmp_path: Path) -> None:
    import copy

    r = copy.copy(result)
    r.leakage = {**result.leakage, "problems": ["rf scores 0.9 > 0.5 <b>"]}
    page = write_report(r, tmp_path).read_text(encoding="utf-8")
    assert "<p class='bad'><b>Leakage warnings:</b> rf scores 0.9 &gt; 0.5 &lt;b&gt;</p>" in page
    r.leakage = {**result.leakage, "problems": [], "threshold": 0.1, "shuffled_accuracy": 0.41, "mode": "warn"}
    page = write_report(r, tmp_path).read_text(encoding="utf-8")
    assert "plausibility threshold 0.10; shuffled-label accuracy 0.410 (warn)" in page


def test_counts_have_no_decimals_and_nan_is_a_dash() -> None:
    from entasis.backtest.report import _table

    t = _table(pd.DataFrame({"model": ["a"], "n": [12.0], "high (n)": [3.0], "accuracy": [float("nan")]}))
    assert t == {"columns": ["model", "n", "high (n)", "accuracy"], "rows": [["a", "12", "3", "–"]]}


def test_template_ships_as_package_data() -> None:
    """An installed package finds the template: it is a package resource and pyproject ships it."""
    assert files("entasis.backtest").joinpath(TEMPLATE).is_file()
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["entasis"]
    assert any(fnmatch.fnmatch(f"backtest/{TEMPLATE}", p) for p in patterns), patterns
