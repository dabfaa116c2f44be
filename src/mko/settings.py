"""The one Settings object: environment (prefix ``MKO_``), an optional TOML file, then defaults."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["Settings", "get_settings"]

DEFAULT_CONFIG_FILE = "mko.toml"


class Settings(BaseSettings):
    """Everything mko can be configured with; read by ``get_settings()``."""

    model_config = SettingsConfigDict(env_prefix="MKO_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///data/orchestrator.db",
        description="SQLAlchemy URL; sqlite:///relative/path or postgresql+psycopg://user:pw@host/db",
    )
    host: str = Field(default="127.0.0.1", description="address `mko serve` listens on")
    port: int = Field(default=8080, ge=1, le=65535, description="port `mko serve` listens on")
    log_dir: Path = Field(default=Path("logs"), description="directory of orchestrator.log")
    log_level: str = Field(default="INFO")
    log_max_bytes: int = Field(default=5_000_000, description="rotate orchestrator.log at this size")
    log_backups: int = Field(default=5)

    wol_default_retries: int = Field(default=3, ge=1, le=100, description="magic packets per wake")
    wol_default_delay: float = Field(default=1.0, ge=0.0, le=60.0, description="seconds between re-sends")
    wol_default_timeout: float = Field(default=300.0, gt=0, description="seconds --wait waits for a node")
    wol_default_interface: str | None = Field(
        default=None, description="source interface for magic packets when a node names none"
    )
    api_sync_wait: float = Field(
        default=10.0,
        ge=0,
        description="an API wake taking longer answers 202 and continues in the background",
    )
    probe_interval: float = Field(default=1.0, gt=0, description="seconds between reachability probes")
    probe_timeout: float = Field(default=1.0, gt=0, description="TCP connect timeout of one probe")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order: explicit arguments, environment, the TOML file named by MKO_CONFIG (or ./mko.toml)."""
        config_file = Path(os.environ.get("MKO_CONFIG", DEFAULT_CONFIG_FILE))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_file),
        )

    @property
    def log_file(self) -> Path:
        """Path of the rotating orchestrator log."""
        return self.log_dir / "orchestrator.log"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; tests build their own ``Settings(...)``."""
    return Settings()
