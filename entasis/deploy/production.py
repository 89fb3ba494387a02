"""No silent fallbacks in production.

Locally Entasis starts what it needs itself: an embedded PostgreSQL under ENTASIS_HOME, a SQLite
MLflow store, artifacts in a local folder. With ``ENTASIS_DEPLOYMENT=production`` (the docker stack
sets it) each of those would be a private copy on one worker that nobody else sees, so instead the
task fails at once with a message naming the setting that is missing.
"""

from __future__ import annotations

from collections.abc import Iterable

from entasis.config import ConfigError, Settings, get_settings

# artifact stores every worker and the MLflow server can reach
SHARED_ARTIFACT_SCHEMES = ("s3://", "gs://", "wasbs://", "abfss://", "hdfs://", "mlflow-artifacts:", "http://",
                           "https://")
LOCAL_TRACKING_SCHEMES = ("sqlite:", "file:")
NEEDS = ("database", "mlflow", "artifacts")


class ProductionConfigError(ConfigError):
    """Production mode lacks a shared server or store; the message names the missing setting."""


def is_production(settings: Settings | None = None) -> bool:
    return (settings or get_settings()).deployment == "production"


def problems(needs: Iterable[str] = NEEDS, settings: Settings | None = None) -> list[str]:
    """What is missing for production, one sentence each (empty when fine or not in production)."""
    s = settings or get_settings()
    if s.deployment != "production":
        return []
    out = []
    unknown = sorted(set(needs) - set(NEEDS))
    if unknown:
        raise ValueError(f"unknown production requirement(s) {unknown}; expected some of {NEEDS}")
    if "database" in needs and not s.database_url:
        out.append("no database: set ENTASIS_DATABASE_URL or the Airflow connection 'entasis_db' "
                   "(e.g. AIRFLOW_CONN_ENTASIS_DB); a worker must not start its own embedded PostgreSQL")
    if "mlflow" in needs:
        uri = s.mlflow.tracking_uri
        if not uri:
            out.append("no MLflow tracking server: set ENTASIS_MLFLOW_TRACKING_URI (e.g. http://mlflow:5000); "
                       "a worker must not use a local SQLite store")
        elif uri.startswith(LOCAL_TRACKING_SCHEMES) or "://" not in uri:
            out.append(f"ENTASIS_MLFLOW_TRACKING_URI={uri!r} is worker-local; point it at the shared MLflow server")
    if "artifacts" in needs:
        root = s.mlflow.artifact_root
        if not root:
            out.append("no artifact store: set ENTASIS_MLFLOW__ARTIFACT_ROOT (e.g. s3://entasis-mlflow/, with "
                       "ENTASIS_MLFLOW__S3_ENDPOINT_URL for MinIO); models and reports must not stay on one worker")
        elif not root.startswith(SHARED_ARTIFACT_SCHEMES):
            out.append(f"ENTASIS_MLFLOW__ARTIFACT_ROOT={root!r} is worker-local; use a shared store such as s3://")
    return out


def require(*needs: str, settings: Settings | None = None) -> None:
    """Raise :class:`ProductionConfigError` naming everything missing (no-op outside production)."""
    found = problems(needs or NEEDS, settings)
    if found:
        raise ProductionConfigError("ENTASIS_DEPLOYMENT=production, but " + "; ".join(found))
