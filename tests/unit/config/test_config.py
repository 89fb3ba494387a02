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


@pytest.mark.parametrize(
    ("yaml_master", "flat", "nested", "expected"),
    [
        (None, None, None, "local[*]"),                                 # default
        ("spark://yaml:7077", None, None, "spark://yaml:7077"),         # YAML > default
        ("spark://yaml:7077", "spark://flat:7077", None, "spark://flat:7077"),  # flat env > YAML
        ("spark://yaml:7077", None, "spark://nested:7077", "spark://nested:7077"),  # nested env > YAML
        (None, "spark://flat:7077", "spark://nested:7077", "spark://nested:7077"),  # nested > flat name
        ("spark://yaml:7077", "", None, "spark://yaml:7077"),           # an empty flat env var is unset
    ],
)
def test_precedence_env_over_yaml_over_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                yaml_master: str | None, flat: str | None,
                                                nested: str | None, expected: str) -> None:
    cfg = tmp_path / "entasis.yaml"
    cfg.write_text(f"spark:\n  master: {yaml_master}\n  driver_memory: 3g\n" if yaml_master else "labels: {}\n")
    monkeypatch.setenv("ENTASIS_CONFIG", str(cfg))
    if flat is not None:
        monkeypatch.setenv("ENTASIS_SPARK_MASTER", flat)
    if nested is not None:
        monkeypatch.setenv("ENTASIS_SPARK__MASTER", nested)
    s = load_settings()
    assert s.spark.master == expected
    # a section merges field by field: the YAML's other keys survive an env override of one key
    assert s.spark.driver_memory == ("3g" if yaml_master else "2g")


def test_init_kwargs_beat_env_and_every_flat_name_lands_in_its_section(monkeypatch: pytest.MonkeyPatch) -> None:
    flat = {
        "ENTASIS_DATABASE_URL": ("database", "url", "postgresql://u:pw@flat/x"),
        "ENTASIS_MLFLOW_TRACKING_URI": ("mlflow", "tracking_uri", "http://mlflow:5000"),
        "ENTASIS_SPARK_MASTER": ("spark", "master", "spark://m:7077"),
        "ENTASIS_JDBC_JAR": ("spark", "jdbc_jar", "/opt/pg.jar"),
        "ENTASIS_SIM_URL": ("exchange", "sim_url", "http://127.0.0.1:1"),
        "ENTASIS_REDIS_URL": ("api", "redis_url", "redis://r:6379/0"),
    }
    for env, (_, _, value) in flat.items():
        monkeypatch.setenv(env, value)
    s = load_settings()
    for section, key, value in flat.values():
        got = getattr(getattr(s, section), key)
        got = got.get_secret_value() if hasattr(got, "get_secret_value") else got
        assert got == value, (section, key)
    assert load_settings(spark={"master": "local[2]"}).spark.master == "local[2]"


def test_bad_yaml_files_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "entasis.yaml"
    monkeypatch.setenv("ENTASIS_CONFIG", str(cfg))
    cfg.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"entasis.yaml: top level must be a mapping"):
        load_settings()
    cfg.write_text("labels: [1\n")
    with pytest.raises(ConfigError, match=r"entasis.yaml: not valid YAML"):
        load_settings()
    cfg.write_text("labels:\n  neutral_band: 2.0\n")
    with pytest.raises(ConfigError, match=r"labels.neutral_band"):
        load_settings()
