"""Our moving-block bootstrap (entasis.backtest.evaluation) against the reference: arch's MovingBlockBootstrap.

Same scheme (overlapping blocks of length b, not wrapped), same block length, 4,000 resamples each,
on an AR(1) series (phi = 0.6, so an iid bootstrap would understate the interval about twofold).
Tolerance: each interval end within 0.25 bootstrap standard deviations of arch's, and the share of
resamples <= 0 within 0.04. The Monte Carlo error of a 2.5% quantile at 4,000 resamples is about
0.04 sd per method (0.06 for the difference), of a share near 0.2 about 0.009: the bounds sit ~4 sd
out, so a real difference in the scheme (wrong block length, iid resampling, wrapping, counts
weighted wrongly) fails and chance does not.
"""

from __future__ import annotations

import numpy as np
import pytest
from arch.bootstrap import IIDBootstrap, MovingBlockBootstrap

from entasis.backtest.evaluation import block_bootstrap_diff

REPS = 4000
BLOCK = 10
N_DAYS = 500


def _ar1(n: int, phi: float, mean: float, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return mean + scale * x


def _arch_stats(daily: np.ndarray, block: int, seed: int) -> np.ndarray:
    bs = MovingBlockBootstrap(block, daily, seed=np.random.default_rng(seed))
    return np.asarray(bs.apply(np.mean, REPS)).ravel()


@pytest.mark.parametrize("mean", [0.05, 0.0])  # clearly positive; near zero (p_le_0 well inside (0, 1))
@pytest.mark.parametrize("rows_per_day", [1, 3])  # one series; three assets pooled per day
def test_block_bootstrap_matches_arch(mean: float, rows_per_day: int) -> None:
    daily_rows = [_ar1(N_DAYS, 0.6, mean, 0.1, seed=11 + j) for j in range(rows_per_day)]
    diff = np.concatenate(daily_rows)
    day = np.tile(np.arange(N_DAYS), rows_per_day)
    daily_mean = np.mean(daily_rows, axis=0)  # equal rows per day: our row-weighted mean is the mean of days
    ref = _arch_stats(daily_mean, BLOCK, seed=1)
    sd = ref.std()
    for level in (0.95, 0.68):
        ours = block_bootstrap_diff(day, diff, block=BLOCK, n_boot=REPS, level=level, seed=2)
        a = (1 - level) / 2
        assert ours["estimate"] == pytest.approx(diff.mean(), abs=1e-15)
        assert abs(ours["lo"] - np.quantile(ref, a)) < 0.25 * sd, (level, ours, np.quantile(ref, a))
        assert abs(ours["hi"] - np.quantile(ref, 1 - a)) < 0.25 * sd, (level, ours, np.quantile(ref, 1 - a))
        assert abs(ours["p_le_0"] - float(np.mean(ref <= 0))) < 0.04
    if mean == 0.0:
        assert 0.05 < float(np.mean(ref <= 0)) < 0.95  # the near-zero case really tests p_le_0


def test_the_cross_check_can_tell_block_from_iid_resampling() -> None:
    """On autocorrelated data arch's iid bootstrap is far narrower than both block bootstraps."""
    x = _ar1(N_DAYS, 0.6, 0.05, 0.1, seed=11)
    iid = np.asarray(IIDBootstrap(x, seed=np.random.default_rng(3)).apply(np.mean, REPS)).ravel()
    block = _arch_stats(x, BLOCK, seed=1)
    ours = block_bootstrap_diff(np.arange(N_DAYS), x, block=BLOCK, n_boot=REPS, level=0.95, seed=2)
    width_iid = np.quantile(iid, 0.975) - np.quantile(iid, 0.025)
    width_block = np.quantile(block, 0.975) - np.quantile(block, 0.025)
    assert width_block > 1.6 * width_iid
    assert ours["hi"] - ours["lo"] > 1.6 * width_iid
    assert abs((ours["hi"] - ours["lo"]) / width_block - 1) < 0.1
