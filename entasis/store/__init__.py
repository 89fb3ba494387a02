"""PostgreSQL store: embedded server, migrations, bulk upsert, validation, writers."""

from __future__ import annotations

from entasis.store.db import connect, database_url, ensure_schema, jdbc_target
from entasis.store.upsert import UpsertResult, upsert_frame
from entasis.store.validate import ValidationFailed

__all__ = [
    "UpsertResult", "ValidationFailed", "connect", "database_url", "ensure_schema", "jdbc_target", "upsert_frame",
]
