"""Where to compute: CUDA when present (mixed precision, GPU tree methods), CPU otherwise."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Any


def _nvidia_driver_present() -> bool:
    """A cheap pre-check so tree-only work never imports torch (seconds) on a machine without a GPU."""
    import ctypes.util

    return Path("/proc/driver/nvidia/version").exists() or ctypes.util.find_library("cuda") is not None


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    if "torch" not in sys.modules and not _nvidia_driver_present():
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency of the models stage
        return False
    return bool(torch.cuda.is_available())


def torch_device(preference: str = "auto") -> Any:
    """``auto`` picks cuda when available; ``cpu`` / ``cuda`` / ``cuda:N`` are honoured (cuda fails clearly)."""
    import torch

    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(preference)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} requested but CUDA is not available")
    return dev


def xgb_device(preference: str = "auto") -> str:
    if preference == "auto":
        return "cuda" if cuda_available() else "cpu"
    return preference


@lru_cache(maxsize=1)
def lightgbm_gpu_available() -> bool:
    """LightGBM's GPU build is optional: try a one-round fit on a tiny set (only when CUDA exists)."""
    if not cuda_available():
        return False
    import lightgbm as lgb
    import numpy as np

    x = np.random.default_rng(0).normal(size=(64, 2))
    y = (x[:, 0] > 0).astype(int)
    try:
        lgb.train({"objective": "binary", "device_type": "gpu", "verbose": -1},
                  lgb.Dataset(x, y), num_boost_round=1)
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU build"
        return False
    return True


def lightgbm_device(preference: str = "auto") -> str:
    if preference == "auto":
        return "gpu" if lightgbm_gpu_available() else "cpu"
    return preference
