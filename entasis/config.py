"""One validated place for every setting.

Values come, in order of precedence, from init kwargs, ``ENTASIS_*`` environment variables
(nested with ``__``, e.g. ``ENTASIS_SPARK__MASTER``; the common ones also have flat names such
as ``ENTASIS_DATABASE_URL``, read through ``AliasChoices`` and beaten by the nested name), an
optional YAML file (``ENTASIS_CONFIG`` or ``./entasis.yaml``, pydantic-settings' own YAML source),
then the defaults below. Sources merge field by field. Secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from entasis.domain import PIPELINE_TIMEFRAMES

TIMEFRAMES = PIPELINE_TIMEFRAMES  # the timeframes the pipeline collects and builds (entasis.domain)
EXCHANGES = ("binance", "binanceusdm", "bybit", "deribit")


class ConfigError(ValueError):
    """Raised when settings are invalid; the message names the offending field."""


class UniverseConfig(BaseModel):
    """What we collect and model."""

    exchange: str = "binance"
    perp_exchange: str = "binanceusdm"
    symbols: list[str] = Field(default_factory=lambda: ["BTC/USDT", "ETH/USDT", "SOL/USDT"])
    timeframes: list[str] = Field(default_factory=lambda: ["1d", "1h"])
    option_currencies: list[str] = Field(default_factory=lambda: ["BTC", "ETH"])
    perp_symbols: list[str] = Field(default_factory=lambda: ["BTC/USDT:USDT", "ETH/USDT:USDT"])
    backfill_since: str = "2021-01-01"  # where a series with no watermark starts
    model_timeframe: str = "1d"  # the bars models are trained and published on

    @field_validator("exchange", "perp_exchange")
    @classmethod
    def _known_exchange(cls, v: str) -> str:
        if v not in EXCHANGES:
            raise ValueError(f"unknown exchange {v!r}; expected one of {', '.join(EXCHANGES)}")
        return v

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one symbol is required")
        for s in v:
            base, sep, quote = s.partition("/")
            settle = quote.split(":")[0]
            if not sep or not base or not quote or base.upper() != base or settle.upper() != settle:
                raise ValueError(f"symbol {s!r} must look like 'BTC/USDT'")
        return v

    @field_validator("timeframes")
    @classmethod
    def _timeframes(cls, v: list[str]) -> list[str]:
        for tf in v:
            if tf not in TIMEFRAMES:
                raise ValueError(f"unknown timeframe {tf!r}; expected one of {', '.join(TIMEFRAMES)}")
        return v


class LabelConfig(BaseModel):
    """How forward returns become bearish / neutral / bullish."""

    horizons: list[int] = Field(default_factory=lambda: [7, 14, 30])
    neutral_band: float = 0.02
    band_mode: Literal["fixed", "vol_scaled"] = "fixed"
    vol_scale: float = 0.5

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, v: list[int]) -> list[int]:
        if not v or any(h <= 0 for h in v):
            raise ValueError("horizons must be a non-empty list of positive day counts")
        return sorted(set(v))

    @field_validator("neutral_band")
    @classmethod
    def _band(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError("neutral_band must be in [0, 1), e.g. 0.02 for ±2%")
        return v


class DatabaseConfig(BaseModel):
    """PostgreSQL: an external server by URL, else an embedded one under ENTASIS_HOME."""

    url: SecretStr | None = None
    embedded_port: int = 54329
    batch_size: int = 200_000


class MlflowConfig(BaseModel):
    tracking_uri: str | None = None
    artifact_root: str | None = None
    s3_endpoint_url: str | None = None
    keep_versions: int = 5


class SparkConfig(BaseModel):
    master: str = "local[*]"
    jdbc_jar: str = "/usr/share/java/postgresql.jar"
    driver_memory: str = "2g"
    shuffle_partitions: int = 4


class ExchangeConfig(BaseModel):
    """Base-URL overrides point ccxt at the simulated exchange; empty means the real venue."""

    sim_url: str | None = None
    timeout_ms: int = 10_000
    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None


class TrainConfig(BaseModel):
    models: list[str] = Field(default_factory=lambda: ["lstm", "rf", "xgb", "lgbm"])
    pooled: bool = True
    seq_len: int = 90
    max_epochs: int = 100
    seed: int = 42
    # per-member constructor overrides, e.g. {"lstm": {"hidden": [64, 32, 16]}, "lgbm": {"n_jobs": 1}}
    member_params: dict[str, dict[str, Any]] = Field(default_factory=dict)


class BacktestConfig(BaseModel):
    """The walk-forward the weekly train DAG runs, and the promotion rule's window."""

    lookback_days: int = 365  # span of the walk-forward report ending at the run's data interval end
    refit_days: int = 7
    models: list[str] = Field(default_factory=lambda: ["rf", "xgb", "lgbm"])
    promotion_window_days: int = 180
    promotion_refit_days: int = 30
    promotion_margin: float = 0.01  # challenger log-loss may be at most this much worse than the champion's


class MonitorConfig(BaseModel):
    """When the daily monitor asks for a retrain or a rollback."""

    live_window_days: int = 30
    min_live_accuracy: float = 0.40
    min_reconciled: int = 20  # live accuracy is judged only on at least this many outcomes
    psi_threshold: float = 0.25  # population stability index above this is drift
    min_drifted_share: float = 0.25  # retrain only when at least this share of features drifted
    drift_window_days: int = 30
    reference_days: int = 180
    stale_after_bars: float = 3.0  # latest candle older than this many bars is stale


class FlashCrashConfig(BaseModel):
    """The specification's flash-crash rule (see entasis.signals.flashcrash)."""

    drop: float = Field(default=0.15, gt=0, lt=1)  # peak-to-trough drop
    window_minutes: int = Field(default=5, ge=1)  # ... within this many minutes
    volume_ratio: float = Field(default=2.5, gt=0)  # volume at least this multiple of its trailing average
    volume_lookback_minutes: int = Field(default=60, ge=1)
    min_volume_bars: int = Field(default=30, ge=1)
    recovery_minutes: int = Field(default=15, ge=0)
    onset_tolerance: float = Field(default=0.01, ge=0, lt=1)
    liquidity_impact: float = 0.3  # named by the specification; needs order-book depth, not applied yet


class LevelsConfig(BaseModel):
    """Support/resistance levels (see entasis.signals.levels)."""

    timeframe: str = "1d"
    lookback_bars: int = Field(default=250, ge=20)
    pivot_bars: int = Field(default=3, ge=1)
    atr_bars: int = Field(default=14, ge=2)
    tolerance_atr: float = Field(default=0.5, gt=0)
    halflife_bars: float = Field(default=60.0, gt=0)
    profile_bins: int = Field(default=24, ge=5)
    min_strength: float = Field(default=1.0, ge=0)


class SignalsConfig(BaseModel):
    """Market signals: which series the flash-crash DAG watches, and the rules."""

    symbols: list[str] | None = None  # default: universe.symbols
    exchange: str | None = None  # default: universe.exchange
    flash_crash: FlashCrashConfig = Field(default_factory=FlashCrashConfig)
    levels: LevelsConfig = Field(default_factory=LevelsConfig)


class ApiConfig(BaseModel):
    """The serving API (``entasis api serve``): where it listens, how it reads the store, its cache."""

    host: str = "127.0.0.1"
    port: int = 8000
    # The API reads ml.* only, as the read-only role; unset = the store's URL with user entasis_reader.
    database_url: SecretStr | None = None
    reader_user: str = "entasis_reader"
    redis_url: SecretStr | None = None  # ENTASIS_REDIS_URL; unset = an in-process TTL cache
    cache_ttl_s: float = 300.0
    cache_enabled: bool = True  # false: every request reads the store (bench/api.py's uncached run)
    pool_size: int = 8
    db_timeout_s: float = 2.0  # a request waits this long for the database before answering 503
    # The cache generation comes from one LISTEN connection (NOTIFY entasis_serving); false = one query per request.
    generation_listen: bool = True
    generation_poll_s: float = 5.0  # the listener re-reads the generation this often (fallback, liveness)
    # uvicorn worker processes of `entasis api serve` (ENTASIS_API__WORKERS); /metrics merges them (prometheus_client
    # multiprocess mode). 2: on 2 cores bench/api.py met both p99 targets only so (cached 12.5 ms vs 24.0 with one
    # worker; uncached 82 vs 50 ms, worse, since the kernel splits keep-alive connections unevenly over workers).
    workers: int = Field(default=2, ge=1)

    @field_validator("cache_ttl_s", "db_timeout_s", "generation_poll_s")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("must be > 0 seconds")
        return v


class Settings(BaseSettings):
    """All of Entasis's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="ENTASIS_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    # "production": workers share servers; nothing may fall back to local state (entasis.deploy.production)
    deployment: Literal["local", "production"] = "local"
    home: Path = Path(".entasis")
    shared_data: Path = Path("../shared/data")
    reports_dir: Path = Path("reports")
    universe: UniverseConfig = Field(default_factory=UniverseConfig)
    labels: LabelConfig = Field(default_factory=LabelConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    exchange: ExchangeConfig = Field(default_factory=ExchangeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    signals: SignalsConfig = Field(default_factory=SignalsConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """init kwargs > nested env > flat env names > YAML file > defaults (sources are deep-merged)."""
        return (init_settings, env_settings, _FlatEnvSource(settings_cls), _yaml_source(settings_cls))

    def masked(self) -> dict[str, Any]:
        """A printable dict: secrets become '**********', never their value."""
        return self.model_dump(mode="json")

    @property
    def database_url(self) -> str | None:
        return self.database.url.get_secret_value() if self.database.url else None


class _FlatEnv(BaseSettings):
    """The documented flat env names (ENTASIS_DATABASE_URL, ...), read by pydantic-settings through
    each field's ``AliasChoices``. A field named ``section__key`` sets that nested field; the nested
    name (``ENTASIS_DATABASE__URL``) wins when both are set, and either beats the YAML file."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    database__url: str | None = Field(default=None, validation_alias=AliasChoices("ENTASIS_DATABASE_URL"))
    mlflow__tracking_uri: str | None = Field(default=None, validation_alias=AliasChoices("ENTASIS_MLFLOW_TRACKING_URI"))
    spark__master: str | None = Field(default=None, validation_alias=AliasChoices("ENTASIS_SPARK_MASTER"))
    spark__jdbc_jar: str | None = Field(default=None, validation_alias=AliasChoices("ENTASIS_JDBC_JAR"))
    exchange__sim_url: str | None = Field(default=None, validation_alias=AliasChoices("ENTASIS_SIM_URL"))
    api__redis_url: str | None = Field(default=None, validation_alias=AliasChoices("ENTASIS_REDIS_URL"))


class _FlatEnvSource(PydanticBaseSettingsSource):
    """The flat env names as nested settings ({"database": {"url": ...}})."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {}
        for name, value in _FlatEnv().model_dump(exclude_none=True).items():
            section, key = name.split("__", 1)
            out.setdefault(section, {})[key] = value
        return out


def _yaml_source(settings_cls: type[BaseSettings]) -> YamlConfigSettingsSource:
    """pydantic-settings' YAML source on ENTASIS_CONFIG (which must exist), else ./entasis.yaml if present."""
    path = os.environ.get("ENTASIS_CONFIG")
    p = Path(path) if path else Path("entasis.yaml")
    if path and not p.is_file():
        raise ConfigError(f"ENTASIS_CONFIG points at {p}, which does not exist")
    import yaml

    try:
        return YamlConfigSettingsSource(settings_cls, yaml_file=p)
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML ({err})") from None
    except (TypeError, ValueError, AttributeError):
        raise ConfigError(f"{p}: top level must be a mapping of settings") from None


def _format_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return "invalid Entasis configuration: " + "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's error into one that names each bad field."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached; call ``get_settings.cache_clear()`` after changing env)."""
    return load_settings()
