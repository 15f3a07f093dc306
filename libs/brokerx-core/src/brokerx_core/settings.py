"""Settings shared by every BrokerX process.

Values come from the environment (and `.env` when present). Every field can also be
read from a file named by `<NAME>_FILE` — the Docker-secrets convention — which takes
precedence over the plain variable. Defaults run the whole system locally with no
configuration; `ENVIRONMENT=production` refuses the placeholder secrets.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PLACEHOLDER_SECRETS = frozenset(
    {"", "change-me", "changeme", "secret", "dev-insecure-jwt-secret-change-me", "pass"}
)
DEV_JWT_SECRET = "dev-insecure-jwt-secret-change-me"


class FileSecretsSource(PydanticBaseSettingsSource):
    """Reads `<NAME>_FILE` variables: the value is the stripped content of that file."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        env_name = f"{field_name.upper()}_FILE"
        path = os.environ.get(env_name)
        if not path:
            return None, field_name, False
        return Path(path).read_text(encoding="utf-8").strip(), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class BrokerXSettings(BaseSettings):
    """Base settings: infrastructure every service talks to, plus trading rules."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    environment: Literal["development", "test", "production"] = "development"
    service_name: str = "brokerx"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/brokerx"
    database_password: SecretStr | None = None
    db_pool_size: int = 20
    db_max_overflow: int = 0
    db_pool_timeout_seconds: float = 10.0  # waiting longer for a connection answers 503
    redis_url: str = "redis://127.0.0.1:6379/0"
    log_level: str = "INFO"
    log_json: bool = True

    # Heartbeats: each service refreshes `brokerx:heartbeat:<service>` with this TTL.
    heartbeat_interval_seconds: float = 2.0
    heartbeat_ttl_seconds: int = 10

    # Trading rules shared by intake (api) and the engine (matching).
    matching_shards: int = Field(default=4, ge=1, le=256)
    price_band_pct: Decimal = Decimal("10")
    market_collar_pct: Decimal = Decimal("5")
    max_open_orders: int = 200
    session_open: str | None = None  # "HH:MM" UTC; None with session_close None = always open
    session_close: str | None = None
    book_depth: int = 10

    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            FileSecretsSource(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @field_validator("session_open", "session_close")
    @classmethod
    def _session_time_is_hhmm(cls, value: str | None) -> str | None:
        # Refuse a malformed session time at start-up, not at the first order.
        if value is not None and value.strip():
            hours, sep, minutes = value.strip().partition(":")
            if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
                raise ValueError(f"session time must be HH:MM (UTC), got {value!r}")
            if not (0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59):
                raise ValueError(f"session time out of range: {value!r}")
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> BrokerXSettings:
        if self.environment == "production":
            for name, value in self.model_dump().items():
                if isinstance(value, SecretStr) and value.get_secret_value() in PLACEHOLDER_SECRETS:
                    raise ValueError(f"{name} holds a placeholder secret in production")
            if "user:pass@" in self.database_url:
                raise ValueError("database_url holds the placeholder password in production")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the password from DATABASE_PASSWORD(_FILE) merged in."""
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+asyncpg")
        if self.database_password is not None:
            url = url.set(password=self.database_password.get_secret_value())
        return url.render_as_string(hide_password=False)

    @property
    def libpq_url(self) -> str:
        """The same database as a plain, fully percent-encoded libpq URL (pg_dump, psql)."""
        from urllib.parse import quote

        from sqlalchemy.engine import make_url

        url = make_url(self.sqlalchemy_url)
        auth = quote(url.username or "", safe="")
        if url.password:
            auth += ":" + quote(str(url.password), safe="")
        host = url.host or "127.0.0.1"
        port = f":{url.port}" if url.port else ""
        return f"postgresql://{auth}@{host}{port}/{url.database or ''}"
