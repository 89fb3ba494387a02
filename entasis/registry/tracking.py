"""Where MLflow tracks runs and registers models.

Default: a SQLite store ``sqlite:///<ENTASIS_HOME>/mlflow.db`` (MLflow 3's model registry needs a
database-backed store; a plain file store is deprecated for it) with artifacts in
``<ENTASIS_HOME>/mlartifacts``. ``ENTASIS_MLFLOW_TRACKING_URI`` points at a server instead;
``mlflow.artifact_root`` (e.g. ``s3://bucket/prefix``) with ``mlflow.s3_endpoint_url`` (MinIO, moto)
sends artifacts to S3 through boto3 (credentials from the usual AWS environment).
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entasis.config import Settings, get_settings
from entasis.deploy.production import require

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
EXPERIMENT = "entasis-train"


def tracking_uri(settings: Settings | None = None) -> str:
    s = settings or get_settings()

    require("mlflow", settings=s)  # production: the shared server, never a worker-local SQLite store
    if s.mlflow.tracking_uri:
        return s.mlflow.tracking_uri
    home = Path(s.home).expanduser().resolve()
    return f"sqlite:///{home / 'mlflow.db'}"


def artifact_root(settings: Settings | None = None) -> str:
    """Experiment artifact location: the configured root, else a folder under ENTASIS_HOME."""
    s = settings or get_settings()

    require("artifacts", settings=s)  # production: a shared store (s3://...), never worker-local files
    if s.mlflow.artifact_root:
        return s.mlflow.artifact_root.rstrip("/")
    return (Path(s.home).expanduser().resolve() / "mlartifacts").as_uri()


def configure(settings: Settings | None = None) -> str:
    """Point this process's MLflow at the configured store; returns the tracking URI.

    Idempotent and cheap, so every entry point calls it rather than relying on global state.
    """
    import mlflow

    s = settings or get_settings()
    uri = tracking_uri(s)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if s.mlflow.s3_endpoint_url:
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = s.mlflow.s3_endpoint_url
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client(settings: Settings | None = None) -> MlflowClient:
    from mlflow import MlflowClient

    uri = configure(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name: str = EXPERIMENT, settings: Settings | None = None) -> str:
    """The experiment id, creating it with our artifact location (not MLflow's ./mlruns default)."""
    c = client(settings)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    root = artifact_root(settings)
    try:
        return str(c.create_experiment(name, artifact_location=f"{root}/{name}"))
    except Exception:  # a concurrent creator won the race
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def package_version() -> str:
    """The installed entasis distribution's version (``entasis==X.Y.Z``), else ``unknown``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"entasis=={version('entasis')}"
    except PackageNotFoundError:
        return "unknown"


def code_version() -> str:
    """The build the code came from: ``ENTASIS_BUILD_ID`` (baked into images by ``docker build
    --build-arg ENTASIS_BUILD_ID=$(git rev-parse HEAD)``), else the git commit of a checkout, else
    the package version. Inside an image there is no .git, so the build id is what identifies it."""
    build = os.environ.get("ENTASIS_BUILD_ID", "").strip()
    if build:
        return build
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"entasis=={version('entasis')}"
    except PackageNotFoundError:
        return "unknown"


def describe_store(settings: Settings | None = None) -> dict[str, Any]:
    return {"tracking_uri": tracking_uri(settings), "artifact_root": artifact_root(settings)}
