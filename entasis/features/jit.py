"""numba compilation for the feature layer's compiled passes (one place for the flags)."""

from __future__ import annotations

from typing import Any


def jit(fn: Any) -> Any:
    """numba-compile (IEEE division: x/0 is inf or NaN, as in numpy) with an on-disk cache; without
    one where no cache directory is writable, rather than failing at import."""
    from numba import njit

    try:
        return njit(cache=True, error_model="numpy", boundscheck=False)(fn)
    except RuntimeError:
        return njit(error_model="numpy", boundscheck=False)(fn)
