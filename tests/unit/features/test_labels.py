"""The compiled label classification in ``compute`` is the domain's rule (``classify_returns``), case for
case: a change to the rule that ``compute`` did not follow would make stored labels and settled
predictions disagree."""

from __future__ import annotations

import numpy as np
import pytest

from entasis.domain import BandRule, classify_returns
from entasis.features.compute import _classify_into

NAN = np.nan
# returns against a band of 0.02: well inside, exactly at each edge, just past each edge, signed zeros,
# infinities, NaN
R = np.array([0.0, -0.0, 0.01, -0.01, 0.02, -0.02, np.nextafter(0.02, 1), np.nextafter(-0.02, -1),
              0.5, -0.5, np.inf, -np.inf, NAN])


def _compiled(r: np.ndarray, band: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(band, dtype=np.float64).reshape(-1)
    codes, unknown = np.empty(len(r), np.int16), np.empty(len(r), bool)
    _classify_into(r, b, codes, unknown)
    return codes, unknown


@pytest.mark.parametrize("band", [0.02, 0.0, NAN])
def test_fixed_band_edges_ties_and_nan(band: float) -> None:
    want_codes, want_unknown = classify_returns(R, band)
    codes, unknown = _compiled(R, band)
    assert np.array_equal(unknown, want_unknown)
    known = ~want_unknown
    assert np.array_equal(codes[known], want_codes[known])
    if band == 0.02:  # the table itself: an exact edge is neutral, one ulp past it is not
        assert codes[:8].tolist() == [1, 1, 1, 1, 1, 1, 2, 0] and unknown.tolist() == [False] * 12 + [True]


def test_band_per_return_as_vol_scaled_mode_gives() -> None:
    rvol = np.array([0.4, 0.4, NAN, 0.0, 1.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])
    band = BandRule(band_mode="vol_scaled", vol_scale=0.5).band(7, rvol)
    r = R.copy()
    r[0] = band[0]          # a return exactly at a per-bar band: neutral
    r[1] = -band[1]
    want_codes, want_unknown = classify_returns(r, band)
    codes, unknown = _compiled(r, band)
    assert np.array_equal(unknown, want_unknown) and unknown[2]  # no volatility yet: unknown
    assert np.array_equal(codes[~unknown], want_codes[~unknown])
    assert codes[0] == 1 and codes[1] == 1


def test_empty() -> None:
    codes, unknown = _compiled(np.array([]), 0.02)
    assert codes.shape == unknown.shape == (0,)
