"""Running Entasis as a deployment: the production guard and the local Airflow stack."""

from __future__ import annotations
