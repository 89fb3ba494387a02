"""Airflow adapters for Entasis: the Assets that link the DAGs, and a hook for the store connection."""

from __future__ import annotations
