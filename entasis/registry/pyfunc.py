"""The registered artifact: one MLflow pyfunc wrapping the whole ensemble, scalers and feature spec.

``mlflow.pyfunc.load_model("models:/entasis-pooled-7d@champion").predict(rows)`` takes raw
features.bars rows (columns symbol, ts, the features; earlier rows of a symbol serve as history) and
returns one row per input row: symbol, ts, p_bearish, p_neutral, p_bullish, predicted_class (0/1/2),
predicted_label, confidence (0-100), confidence_level and, when a volatility model was logged,
``vol_forecast``. Rows without enough history get NaN / None (see ``entasis.models.base``).

Logged as "models from code" (``pyfunc_entry.py``): nothing is pickled. The artifact folder holds the
ensemble in native formats (torch state dict loaded with ``weights_only=True``, xgboost UBJ, lightgbm
text, skops-checked sklearn, ``.npz`` scalers, JSON specs).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel  # a runtime import: MLflow resolves predict()'s type hints

from entasis.models.ensemble import EnsembleModel
from entasis.models.factory import load_model
from entasis.models.volatility import VolatilityModel

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

    from entasis.models.ensemble import EnsembleModel
    from entasis.models.volatility import VolatilityModel

ENTRY = Path(__file__).with_name("pyfunc_entry.py")
ARTIFACT = "entasis_model"
SPEC = "feature_spec.json"
_REQUIREMENTS = ("numpy", "pandas", "scipy", "torch", "scikit-learn", "skops", "xgboost", "lightgbm", "mlflow")


class EntasisPyfunc(PythonModel):
    """Loads the saved ensemble (and optional volatility model) and predicts from raw rows."""

    def __init__(self) -> None:
        self.ensemble: EnsembleModel | None = None
        self.vol: VolatilityModel | None = None
        self.spec: dict[str, Any] = {}

    def load_context(self, context: Any) -> None:
        self.load_dir(Path(context.artifacts[ARTIFACT]))

    def load_dir(self, root: Path) -> None:
        self.spec = json.loads((root / SPEC).read_text())
        model = load_model(root / "ensemble")
        if not isinstance(model, EnsembleModel):
            raise TypeError(f"{root}/ensemble holds a {model.kind} model, expected an ensemble")
        self.ensemble = model
        self.vol = VolatilityModel.load(root / "vol") if (root / "vol").exists() else None

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        if self.ensemble is None:
            raise RuntimeError("model not loaded")
        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(f"expected a DataFrame of features.bars rows, got {type(model_input).__name__}")
        rows = model_input.reset_index(drop=True)
        out = self.ensemble.predict(rows)
        if self.vol is not None:
            out["vol_forecast"] = self.vol.predict(rows)
        return out


def save_artifact(dest: Path, ensemble: EnsembleModel, *, spec: Mapping[str, Any],
                  vol: VolatilityModel | None = None) -> Path:
    """Write the artifact folder the pyfunc loads (also usable without MLflow)."""
    dest.mkdir(parents=True, exist_ok=True)
    ensemble.save(dest / "ensemble")
    if vol is not None:
        vol.save(dest / "vol")
    full = {"features": ensemble.features, "min_history": ensemble.min_history, "target": ensemble.target,
            "assets": ensemble.assets, "members": ensemble.members, "weights": ensemble.weights,
            "temperatures": ensemble.temperatures, **spec}
    (dest / SPEC).write_text(json.dumps(full, indent=1, default=str))
    return dest


def requirements() -> list[str]:
    out = []
    for pkg in _REQUIREMENTS:
        try:
            out.append(f"{pkg}=={version(pkg).split('+')[0]}")
        except PackageNotFoundError:
            out.append(pkg)
    return out


def log_pyfunc(ensemble: EnsembleModel, *, spec: Mapping[str, Any], vol: VolatilityModel | None = None,
               registered_model_name: str | None = None, name: str = "model") -> ModelInfo:
    """Log the ensemble as a pyfunc in the active run (and register it when a name is given)."""
    # No signature on purpose: MLflow's schema enforcement rejects tz-aware timestamps, and features.bars
    # rows carry ts in UTC. Its "could not infer a signature" warning is therefore expected; mute it.
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    pyfunc_log.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="entasis-model-") as tmp:
            root = save_artifact(Path(tmp) / ARTIFACT, ensemble, spec=spec, vol=vol)
            return _log(root, registered_model_name, name, spec)
    finally:
        pyfunc_log.setLevel(level)


def _log(root: Path, registered_model_name: str | None, name: str, spec: Mapping[str, Any]) -> ModelInfo:
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(ENTRY),
        artifacts={ARTIFACT: str(root)},
        pip_requirements=requirements(),
        registered_model_name=registered_model_name,
        metadata={"entasis": {k: v for k, v in spec.items() if isinstance(v, str | int | float | bool)}},
    )
