"""The one interface every direction model shares, so callers never care which model they hold.

The ensemble, the walk-forward backtest and the publisher all speak to a :class:`Model`:

``model = build_model("lstm", seq_len=90, max_epochs=100)``  (:mod:`entasis.models.factory`; or ``build_from_config``)
``model.fit(train, target="y_cls_7d", valid=valid)``
``proba = model.predict_proba(rows, history=earlier_rows)``
``model.save(path)`` / ``factory.load_model(path)`` (or ``ModelClass.load(path)``)

Input contract (identical for the sequence LSTM and the tabular trees)
----------------------------------------------------------------------
Every frame handed to a model is a slice of ``features.bars``: one row per (symbol, ts) with columns
``symbol``, ``ts`` (tz-aware UTC), optionally ``exchange`` / ``timeframe`` / ``warmup``, the feature columns
and, for ``fit``, the label column named by ``target`` (``y_cls_{h}d``: 0 bearish, 1 neutral,
2 bullish, NULL where the horizon has not passed). Row order does not matter: a model whose view reads
earlier bars sorts by (symbol, ts) itself, and the last-bar tree view looks at no other row. The index
must be unique, and (symbol, ts) must be unique across everything given in one call (a frame mixing two
exchanges that share a symbol is refused).

Each model builds its own view from these rows:

* LSTM: for each sample row, the window of the ``seq_len`` (default 90) bars of the same symbol that
  end at (and include) that row.
* Trees: by default the row's own (last-bar) features only, since the features already summarise
  windows; ``lags`` (e.g. ``[1, 3, 7]``) and ``roll`` (e.g. ``[7, 30]``) add lagged copies and rolling
  mean / std of each feature within the same symbol (off by default: :mod:`entasis.models.trees` says why).
* Pooled models (``pooled=True``) also see a one-hot asset id over the symbols seen in ``fit``; a symbol
  unseen at fit time gets an all-zero asset vector (the "average asset").

**Context and samples.** Windows, lags and rolling statistics only ever look *backward*, over the
union of all rows passed in one call (``history`` + ``train`` + ``valid`` in ``fit``; ``history`` +
``rows`` in ``predict_proba``). Giving more context therefore never leaks the future; it only lets
early rows have full history. Samples are only the rows of ``train`` / ``valid`` (fit) or ``rows``
(predict): ``history`` rows provide context and are never scored or trained on.

**Rows lacking history.** A row is *eligible* when the model has ``min_history`` bars of its symbol
(itself included) in the context and it is not flagged ``warmup``. ``predict_proba`` returns a frame
with exactly ``rows.index`` and the columns :data:`PROBA_COLUMNS`; ineligible rows get NaN in all three
columns (never dropped, never guessed). Eligible rows sum to 1. In ``fit``, ineligible rows and rows
with a NULL target are skipped. Individual NaN feature values inside an eligible row or window (e.g. a
feature missing on one day) are imputed with the training mean (0 after scaling).

Gaps in time are not detected: windows count bars, not days (features.bars has one bar per period).

Persistence: ``save(path)`` writes a directory of native, non-executable formats (torch state dict
loaded with ``weights_only=True``, xgboost UBJ/JSON, lightgbm text, skops for scikit-learn, ``.npz``
for scalers, JSON for the spec). ``factory.load_model(path)`` reads ``spec.json`` to pick the class; this
module never imports its subclasses (the factory sits above them).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from entasis.domain import LABEL_PREFIXES, N_CLASSES, PROBA_COLUMNS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SPEC_FILE = "spec.json"
ModelT = TypeVar("ModelT", bound="Model")
# Columns of features.bars that are never features.
NON_FEATURE_COLUMNS = frozenset({"exchange", "symbol", "timeframe", "ts", "warmup", "asset", "horizon"})


class ModelError(ValueError):
    """Bad input to a model (missing column, duplicate keys, unfitted model, unknown name...)."""


def default_features(frame: pd.DataFrame | None = None) -> list[str]:
    """Feature columns: the features catalogue when importable, else the numeric non-label columns of frame."""
    registry_cols: list[str] = []
    try:
        from entasis.features.catalog import FEATURE_COLUMNS  # type: ignore[import-not-found,unused-ignore]

        registry_cols = list(FEATURE_COLUMNS)
    except ImportError:
        pass
    if registry_cols:
        cols = registry_cols
        if frame is None:
            return cols
        present = [c for c in cols if c in frame.columns]
        if present:
            return present
    if frame is None:
        raise ModelError("no feature list given and entasis.features.catalog is not importable")
    import pandas as pd

    return [
        c for c in frame.columns
        if c not in NON_FEATURE_COLUMNS
        and not str(c).startswith(LABEL_PREFIXES)
        and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
    ]


def check_frame(frame: pd.DataFrame, features: Sequence[str], *, what: str, target: str | None = None,
                classes: bool = True) -> None:
    """Fail early, naming what is wrong, instead of deep inside torch or xgboost."""
    need = ["symbol", "ts", *features] + ([target] if target else [])
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise ModelError(f"{what} is missing column(s): {', '.join(map(str, missing))}")
    if not frame.index.is_unique:
        raise ModelError(f"{what} has a non-unique index; reset_index() it first")
    if target is not None and classes:
        vals = frame[target].dropna()
        bad = vals[~vals.isin([0, 1, 2])]
        if len(bad):
            raise ModelError(f"{what}[{target}] must be 0/1/2 or NULL; found {bad.iloc[0]!r} at index {bad.index[0]!r}")


def label_array(values: Any) -> np.ndarray:
    """Labels as float64 with NaN for NULL (features.bars returns y_cls as nullable Int16)."""
    import numpy as np
    import pandas as pd

    return np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").astype("Float64")
                      .to_numpy(dtype=np.float64, na_value=np.nan))


class Model(ABC):
    """A 3-class direction classifier over features.bars rows (see the module docstring for the contract)."""

    kind: ClassVar[str] = ""

    def __init__(self, *, features: Sequence[str] | None = None, pooled: bool = True, seed: int = 42) -> None:
        self.features: list[str] | None = list(features) if features is not None else None
        self.pooled = pooled
        self.seed = seed
        self.assets: list[str] = []
        self.target: str | None = None
        self.fitted = False
        # What training recorded, for tracking: e.g. {"train_loss": [...], "valid_loss": [...]}.
        self.history_: dict[str, list[float]] = {}

    # -- the interface ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def min_history(self) -> int:
        """Bars of the same symbol (the row itself included) a row needs to be eligible."""

    @abstractmethod
    def fit(self, train: pd.DataFrame, target: str, *, valid: pd.DataFrame | None = None,
            history: pd.DataFrame | None = None) -> Model:
        """Train on the eligible, labelled rows of ``train``; ``valid`` drives early stopping where used."""

    @abstractmethod
    def predict_proba(self, rows: pd.DataFrame, *, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """Probabilities indexed like ``rows`` with :data:`PROBA_COLUMNS`; NaN where a row is ineligible."""

    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, JSON-serialisable, such that ``type(m)(**m.get_params())`` rebuilds it."""

    @abstractmethod
    def _save_state(self, path: Path) -> None:
        """Write the fitted state (weights, scalers) into directory ``path``."""

    @abstractmethod
    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        """Read what ``_save_state`` wrote."""

    # -- shared plumbing -------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        """Small JSON-able fitted state kept in spec.json beside the params."""
        return {"features": self.features, "assets": self.assets, "target": self.target,
                "history": self.history_}

    def save(self, path: str | Path) -> None:
        """Write the model into directory ``path`` (created) in safe, native formats."""
        if not self.fitted:
            raise ModelError(f"cannot save an unfitted {self.kind} model")
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self._save_state(p)
        spec = {"kind": self.kind, "params": self.get_params(), "state": self._state()}
        (p / SPEC_FILE).write_text(json.dumps(spec, indent=1, default=_json_default))

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Rebuild a fitted model saved with :meth:`save`."""
        p = Path(path)
        spec = read_spec(p)
        if not cls.kind:
            raise ModelError("Model.load needs a concrete class; use entasis.models.factory.load_model")
        if spec["kind"] != cls.kind:
            raise ModelError(f"{p} holds a {spec['kind']!r} model, not {cls.kind!r}")
        model = cls(**spec["params"])
        st = spec.get("state", {})
        model.features = st.get("features")
        model.assets = list(st.get("assets") or [])
        model.target = st.get("target")
        model.history_ = st.get("history") or {}
        model._load_state(p, st)
        model.fitted = True
        return model

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ModelError(f"{self.kind} model is not fitted; call fit() first")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


def construct(cls: type[ModelT], params: Mapping[str, Any], *, what: str) -> ModelT:
    """``cls(**params)``, a wrong or unknown parameter named as a :class:`ModelError` (``what``: e.g.
    ``"model 'rf'"``); the one place the factory and the ensemble's members are built."""
    try:
        return cls(**params)
    except TypeError as e:
        raise ModelError(f"bad parameters for {what}: {e}") from None


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_spec(path: Path) -> dict[str, Any]:
    """The saved model's spec.json (kind, params, state); an error naming the path when it is not one."""
    f = path / SPEC_FILE
    if not f.exists():
        raise ModelError(f"{path} is not a saved model (no {SPEC_FILE})")
    spec: dict[str, Any] = json.loads(f.read_text())
    if not isinstance(spec.get("kind"), str) or not spec["kind"]:
        raise ModelError(f"{f}: no model kind")
    return spec


def empty_proba(index: pd.Index) -> pd.DataFrame:
    """An all-NaN probability frame for ``index`` (what ineligible rows get)."""
    import numpy as np
    import pandas as pd

    return pd.DataFrame(np.full((len(index), N_CLASSES), np.nan), index=index, columns=list(PROBA_COLUMNS))


def proba_frame(index: pd.Index, positions: np.ndarray, proba: np.ndarray) -> pd.DataFrame:
    """Place ``proba`` (n_eligible × 3) at integer ``positions`` of ``index``; NaN elsewhere."""
    out = empty_proba(index)
    if len(positions):
        out.iloc[positions, :] = proba
    return out
