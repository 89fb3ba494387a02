"""Config: defaults, env overrides, YAML, and errors that name the field; secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from entasis.config import ConfigError, get_settings, load_settings


def test_defaults() -> None:
    s = load_settings()
    assert s.labels.horizons == [7, 14, 30]
    assert s.labels.neutral_band == 0.02
    assert "BTC/USDT" in s.universe.symbols


def test_env_nested_and_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTASIS_LABELS__NEUTRAL_BAND", "0.03")
    monkeypatch.setenv("ENTASIS_DATABASE_URL", "postgresql://u:pw@db:5432/x")
    monkeypatch.setenv("ENTASIS_SPARK_MASTER", "spark://m:7077")
    s = load_settings()
    assert s.labels.neutral_band == 0.03
    assert s.database_url == "postgresql://u:pw@db:5432/x"
    assert s.spark.master == "spark://m:7077"


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("ENTASIS_LABELS__NEUTRAL_BAND", "1.5", "labels.neutral_band"),
        ("ENTASIS_LABELS__HORIZONS", "[7, -1]", "labels.horizons"),
        ("ENTASIS_UNIVERSE__TIMEFRAMES", '["1d", "3w"]', "universe.timeframes"),
        ("ENTASIS_UNIVERSE__SYMBOLS", '["btcusdt"]', "universe.symbols"),
        ("ENTASIS_UNIVERSE__EXCHANGE", "kraken", "universe.exchange"),
        ("ENTASIS_DATABASE__EMBEDDED_PORT", "not-a-port", "database.embedded_port"),
    ],
)
def test_invalid_values_name_the_field(monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert field in str(err.value)


def test_unknown_key_in_yaml_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "entasis.yaml"
    cfg.write_text("labels:\n  neutral_band: 0.05\nbogus: 1\n")
    monkeypatch.setenv("ENTASIS_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="bogus"):
        load_settings()
    cfg.write_text("labels:\n  neutral_band: 0.05\n")
    assert load_settings().labels.neutral_band == 0.05


def test_env_beats_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "entasis.yaml"
    cfg.write_text("labels:\n  neutral_band: 0.05\n")
    monkeypatch.setenv("ENTASIS_CONFIG", str(cfg))
    monkeypatch.setenv("ENTASIS_LABELS__NEUTRAL_BAND", "0.01")
    assert load_settings().labels.neutral_band == 0.01


def test_missing_config_file_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTASIS_CONFIG", "/nonexistent/entasis.yaml")
    with pytest.raises(ConfigError, match="/nonexistent/entasis.yaml"):
        load_settings()


def test_secrets_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTASIS_DATABASE_URL", "postgresql://u:hunter2@db/x")
    monkeypatch.setenv("ENTASIS_EXCHANGE__API_SECRET", "topsecret")
    get_settings.cache_clear()
    s = get_settings()
    dumped = str(s.masked()) + repr(s) + str(s)
    assert "hunter2" not in dumped
    assert "topsecret" not in dumped
    assert s.exchange.api_secret is not None
    assert s.exchange.api_secret.get_secret_value() == "topsecret"
