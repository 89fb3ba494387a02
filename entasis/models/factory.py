"""Build and load any direction model by name: the one place that knows every model class.

It sits above :mod:`entasis.models.base` and the model modules (``trees``, ``lstm``, ``ensemble``), so
``base`` never imports its own subclasses (the old lazy ``base`` → ``lstm/trees/ensemble`` cycle).
Importing it stays light: torch, xgboost and lightgbm are imported inside the models' methods.

``build_model("xgb", n_estimators=300)``, ``build_from_config({"name": "lstm", "seq_len": 90})``,
``load_model(path)`` (dispatches on the ``kind`` in ``spec.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from entasis.models.base import Model, ModelError, construct, read_spec
from entasis.models.ensemble import MEMBER_CLASSES, EnsembleModel

# every member model (one list, kept in ensemble.py) plus the ensemble itself
MODEL_CLASSES: dict[str, type[Model]] = {**MEMBER_CLASSES, EnsembleModel.kind: EnsembleModel}


def available_models() -> list[str]:
    """Every buildable model name."""
    return sorted(MODEL_CLASSES)


def model_class(name: str) -> type[Model]:
    """The class behind a model name (a clear error naming the known ones otherwise)."""
    try:
        return MODEL_CLASSES[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; expected one of {', '.join(available_models())}") from None


def build_model(name: str, **params: Any) -> Model:
    """A fresh, unfitted model by name: ``lstm``, ``rf``, ``xgb``, ``lgbm`` or ``ensemble``."""
    return construct(model_class(name), params, what=f"model {name!r}")


def build_from_config(config: Mapping[str, Any]) -> Model:
    """Build from a dict such as ``{"name": "xgb", "n_estimators": 300}`` (``kind`` is accepted too)."""
    cfg = dict(config)
    name = cfg.pop("name", None) or cfg.pop("kind", None)
    if not name:
        raise ModelError(f"model config needs a 'name' key; got keys {sorted(config)}")
    return build_model(str(name), **cfg)


def load_model(path: str | Path) -> Model:
    """Load any saved model, dispatching on the ``kind`` in its spec.json."""
    p = Path(path)
    try:
        cls = model_class(str(read_spec(p).get("kind")))
    except ModelError as e:
        raise ModelError(f"{p}: {e}") from None
    return cls.load(p)
