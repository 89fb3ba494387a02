"""Entasis Engine: batch ML pipeline for crypto markets."""

from __future__ import annotations

__version__ = "0.1.0"
