"""The CLI's core commands against a real database: upgrade twice, status, config show masks secrets."""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from entasis.cli import app
from entasis.config import get_settings

runner = CliRunner()


def test_db_upgrade_twice_and_status(db_url: str) -> None:
    r1 = runner.invoke(app, ["db", "upgrade"])
    assert r1.exit_code == 0, r1.output
    assert "up to date" in r1.output  # template already migrated
    with psycopg.connect(db_url) as conn:
        n = conn.execute("SELECT count(*) FROM public.entasis_migrations").fetchone()[0]
    r2 = runner.invoke(app, ["db", "upgrade"])
    assert r2.exit_code == 0 and "up to date" in r2.output
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM public.entasis_migrations").fetchone()[0] == n
    st = runner.invoke(app, ["db", "status"])
    assert st.exit_code == 0, st.output
    assert "market.candles" in st.output
    assert "postgresql" in st.output


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTASIS_DATABASE_URL", "postgresql://u:s3cr3t-pw@db/x")
    monkeypatch.setenv("ENTASIS_EXCHANGE__API_KEY", "key-abc-123")
    get_settings.cache_clear()
    r = runner.invoke(app, ["config", "show"])
    assert r.exit_code == 0, r.output
    assert "s3cr3t-pw" not in r.output and "key-abc-123" not in r.output
    assert "**********" in r.output
    assert "neutral_band" in r.output


def test_config_error_names_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTASIS_LABELS__NEUTRAL_BAND", "7")
    get_settings.cache_clear()
    r = runner.invoke(app, ["config", "show"])
    assert r.exit_code != 0
    assert "labels.neutral_band" in r.output
