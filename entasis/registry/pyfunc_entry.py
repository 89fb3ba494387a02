"""MLflow "models from code" entry: executed by mlflow.pyfunc.load_model instead of unpickling."""

from __future__ import annotations

from mlflow.models import set_model

from entasis.registry.pyfunc import EntasisPyfunc

set_model(EntasisPyfunc())
