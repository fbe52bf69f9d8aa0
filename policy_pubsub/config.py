"""Server settings: one object, read once from flags and ``POLICY_PUBSUB_*`` variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from policy_pubsub import constants


class Settings(BaseSettings):
    """Everything the server can be told; command-line flags override the environment."""

    model_config = SettingsConfigDict(env_prefix=constants.ENV_PREFIX, extra="forbid")

    host: str = constants.DEFAULT_HOST
    port: int = Field(constants.DEFAULT_PORT, ge=0, le=65535)
    database_url: str = constants.DEFAULT_DATABASE_URL
    router_url: str = constants.DEFAULT_ROUTER_URL

    max_body_bytes: int = Field(constants.DEFAULT_MAX_BODY_BYTES, ge=1024)
    retention_seconds: float = Field(constants.DEFAULT_RETENTION_SECONDS, gt=0)
    maintenance_interval_seconds: float = Field(
        constants.DEFAULT_MAINTENANCE_INTERVAL_SECONDS, gt=0
    )
    position_flush_seconds: float = Field(constants.DEFAULT_POSITION_FLUSH_SECONDS, ge=0)
    max_poll_timeout_ms: int = Field(constants.MAX_POLL_TIMEOUT_MS, ge=0)
    shutdown_grace_seconds: float = Field(5.0, ge=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                "database_url must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL"
            )
        return value
