"""Resolve the Entasis store from an Airflow connection when one is defined.

Tasks call ``use_airflow_connection()`` first: if the connection ``entasis_db`` exists (UI, env
``AIRFLOW_CONN_ENTASIS_DB`` or a secrets backend) its URI becomes ENTASIS_DATABASE_URL for this
task; otherwise Entasis's own settings apply (ENTASIS_DATABASE_URL or the embedded server).
Only called inside task bodies, never at parse time. The URI is never logged.
"""

from __future__ import annotations

import logging
import os

from airflow.sdk import BaseHook

log = logging.getLogger(__name__)

CONN_ID = "entasis_db"


class EntasisStoreHook(BaseHook):
    """Hands Entasis the database URL held in an Airflow connection."""

    conn_name_attr = "entasis_conn_id"
    default_conn_name = CONN_ID
    conn_type = "postgres"
    hook_name = "Entasis store"

    def __init__(self, entasis_conn_id: str = CONN_ID) -> None:
        super().__init__()
        self.entasis_conn_id = entasis_conn_id

    def database_url(self) -> str | None:
        try:
            conn = self.get_connection(self.entasis_conn_id)
        except Exception:  # AirflowNotFoundException and friends: no such connection configured
            return None
        uri = conn.get_uri()
        return uri.replace("postgres://", "postgresql://", 1) if uri else None


def use_airflow_connection(conn_id: str = CONN_ID) -> bool:
    """Point Entasis at the Airflow connection if it exists; True when it did."""
    from entasis.config import get_settings

    url = EntasisStoreHook(conn_id).database_url()
    if not url:
        return False
    os.environ["ENTASIS_DATABASE_URL"] = url
    get_settings.cache_clear()
    log.info("using the store from Airflow connection %r", conn_id)
    return True
