"""Risk metrics against values worked out by hand on tiny series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from entasis.risk import metrics as rm

R4 = [0.01, -0.01, 0.02, 0.0]  # mean 0.005; deviations ±0.005, ±0.015 -> var = 5e-4 / 3


def test_total_and_annualized_return() -> None:
    r = [0.10, -0.10, 0.05]
    assert rm.total_return(r) == pytest.approx(1.1 * 0.9 * 1.05 - 1)  # 0.0395
    # three periods with three periods a year: CAGR equals the total return
    assert rm.annualized_return(r, periods_per_year=3) == pytest.approx(0.0395)
    assert rm.annualized_return(r, periods_per_year=6) == pytest.approx(1.0395 ** 2 - 1)


def test_drawdown_and_calmar() -> None:
    r = [0.10, -0.10, 0.05]  # equity 1.1, 0.99, 1.0395: trough 0.99 is 10% under the 1.1 peak
    assert rm.drawdown_series(r) == pytest.approx([0.0, -0.1, 1.0395 / 1.1 - 1])
    assert rm.max_drawdown(r) == pytest.approx(0.10)
    assert rm.calmar_ratio(r, periods_per_year=3) == pytest.approx(0.0395 / 0.10)
    # a first-period loss counts against the starting equity of 1
    assert rm.max_drawdown([-0.2, 0.1]) == pytest.approx(0.2)
    assert rm.max_drawdown([0.01, 0.02]) == 0.0
    assert math.isnan(rm.calmar_ratio([0.01, 0.02]))


def test_sharpe_and_sortino() -> None:
    sd = math.sqrt(5e-4 / 3)
    assert rm.sharpe_ratio(R4, periods_per_year=365) == pytest.approx(0.005 / sd * math.sqrt(365))
    # downside deviation: sqrt(mean([0, 0.01², 0, 0])) = 0.005 -> daily Sortino 1.0
    assert rm.sortino_ratio(R4, periods_per_year=365) == pytest.approx(math.sqrt(365))
    assert rm.sharpe_ratio(R4, periods_per_year=1, risk_free=0.004) == pytest.approx(0.001 / sd)
    assert math.isnan(rm.sharpe_ratio([0.01, 0.01, 0.01]))


def test_var_and_es_historical() -> None:
    r = np.arange(-50, 50) / 1000.0  # -0.050 .. 0.049, n = 100
    # floor(0.05 * 99) = 4 -> the 5th smallest return, -0.046
    assert rm.var_historical(r) == pytest.approx(0.046)
    # the five returns at or below it: -0.050 .. -0.046, mean -0.048
    assert rm.es_historical(r) == pytest.approx(0.048)
    # order does not matter
    assert rm.var_historical(r[::-1]) == pytest.approx(0.046)
    assert rm.var_historical(r, alpha=0.01) == pytest.approx(0.050)


def test_var_and_es_parametric() -> None:
    mu, sd = 0.005, math.sqrt(5e-4 / 3)
    z, pdf = -1.6448536269514726, 0.10313564037537132  # Φ⁻¹(0.05) and φ at that point
    assert rm.var_parametric(R4) == pytest.approx(-(mu + sd * z))          # 0.016235
    assert rm.es_parametric(R4) == pytest.approx(-(mu - sd * pdf / 0.05))  # 0.021630
    assert rm.var_parametric(R4) == pytest.approx(0.016234969, abs=1e-9)
    assert rm.es_parametric(R4) > rm.var_parametric(R4)


def test_summary_names_and_values() -> None:
    s = rm.performance_summary(R4, periods_per_year=365)
    assert s["n_periods"] == 4
    assert s["sharpe"] == pytest.approx(rm.sharpe_ratio(R4))
    assert {"var_95_historical", "es_95_historical", "var_95_parametric", "es_95_parametric"} <= set(s)
    assert "var_99_historical" in rm.performance_summary(R4, alpha=0.01)


@pytest.mark.parametrize("bad,msg", [([], "empty"), ([0.01, float("nan")], "non-finite"), ([0.1, -1.0], "100%")])
def test_bad_series_named(bad: list[float], msg: str) -> None:
    with pytest.raises(rm.RiskInputError, match=msg):
        rm.total_return(bad)


def test_bad_level_and_timeframe() -> None:
    with pytest.raises(rm.RiskInputError, match="alpha"):
        rm.var_historical(R4, alpha=0.7)
    assert rm.periods_per_year("1d") == 365
    assert rm.periods_per_year("1h") == 8760
    with pytest.raises(rm.RiskInputError, match="2d"):
        rm.periods_per_year("2d")
