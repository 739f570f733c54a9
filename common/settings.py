"""Settings shared by every service: where Kafka, PostgreSQL and Redis are, and the topic names.

Each service has one frozen settings class deriving from :class:`SharedSettings` with its own env prefix
(``SIM_``, ``FLOW_``, ``API_``, ``STACK_``). The shared fields are read without a prefix (``KAFKA_PORT``,
``DATABASE_URL``, ...) so one ``.env`` configures every process alike. Nothing else in the project reads
``os.environ`` for configuration.
"""

from __future__ import annotations

import json
from typing import Any, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: pydantic-settings configuration every service class starts from (merge with its own env_prefix).
BASE_CONFIG = SettingsConfigDict(
    env_file=".env",
    env_file_encoding="utf-8",
    extra="ignore",
    frozen=True,
    populate_by_name=True,
)


def _env(name: str) -> Any:
    """Alias for a shared field: read from the unprefixed variable ``name``, or by field name in code."""
    return AliasChoices(name, name.lower())


class SharedSettings(BaseSettings):
    """Connection endpoints and topic names common to the simulator, the flows and the gateway."""

    model_config = BASE_CONFIG

    host: str = Field("127.0.0.1", validation_alias=_env("SERVICES_HOST"))
    kafka_port: int = Field(9092, ge=1, le=65535, validation_alias=_env("KAFKA_PORT"))
    postgres_port: int = Field(5432, ge=1, le=65535, validation_alias=_env("POSTGRES_PORT"))
    redis_port: int = Field(6379, ge=1, le=65535, validation_alias=_env("REDIS_PORT"))

    kafka_bootstrap_servers: str = Field("", validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"))
    database_url: SecretStr = Field(SecretStr(""), validation_alias=_env("DATABASE_URL"))
    redis_url: str = Field("", validation_alias=_env("REDIS_URL"))
    postgres_user: str = Field("marketdata", validation_alias=_env("POSTGRES_USER"))
    postgres_password: SecretStr = Field(SecretStr("marketdata"), validation_alias=_env("POSTGRES_PASSWORD"))
    postgres_db: str = Field("marketdata", validation_alias=_env("POSTGRES_DB"))

    topic_ticks: str = Field("market-ticks", min_length=1, validation_alias=_env("TOPIC_TICKS"))
    topic_bars: str = Field("market-bars", min_length=1, validation_alias=_env("TOPIC_BARS"))
    topic_dead_letter: str = Field("market-dead-letter", min_length=1, validation_alias=_env("TOPIC_DEAD_LETTER"))
    topic_alerts: str = Field("alerts", min_length=1, validation_alias=_env("TOPIC_ALERTS"))

    @model_validator(mode="after")
    def _derive_urls(self) -> Self:
        """Fill the connection URLs from host and ports unless they were given explicitly."""
        # frozen model: bypass __setattr__ once, during validation only
        if not self.kafka_bootstrap_servers:
            object.__setattr__(self, "kafka_bootstrap_servers", f"{self.host}:{self.kafka_port}")
        if not self.redis_url:
            object.__setattr__(self, "redis_url", f"redis://{self.host}:{self.redis_port}/0")
        if not self.database_url.get_secret_value():
            url = (
                f"postgresql://{self.postgres_user}:{self.postgres_password.get_secret_value()}"
                f"@{self.host}:{self.postgres_port}/{self.postgres_db}"
            )
            object.__setattr__(self, "database_url", SecretStr(url))
        return self


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable name a settings class reads (aliases and prefixed field names)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def split_list(value: Any) -> Any:
    """A list setting from the environment: ``"a, b"`` or a JSON list -> ``["a", "b"]``; lists pass through.

    Use as a ``mode="before"`` field validator (with ``NoDecode`` on the field, so pydantic-settings does not
    insist on JSON).
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip().strip("\"'") for part in text.split(",") if part.strip()]
    return value
