"""Session-scoped synthetic frames for the models tests."""

from __future__ import annotations

import pandas as pd
import pytest

from ._synth import frame


@pytest.fixture(scope="session")
def planted() -> pd.DataFrame:
    return frame(1.5)


@pytest.fixture(scope="session")
def noise() -> pd.DataFrame:
    return frame(0.0, seed=2)
