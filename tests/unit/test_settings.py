"""Settings: secrets from <NAME>_FILE, placeholder secrets refused in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from brokerx_core.settings import BrokerXSettings


def test_secret_is_read_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "jwt_secret"
    secret.write_text("s3cr3t-from-a-docker-secret\n")
    monkeypatch.setenv("JWT_SECRET", "from-the-plain-variable")
    monkeypatch.setenv("JWT_SECRET_FILE", str(secret))
    settings = BrokerXSettings()
    assert settings.jwt_secret.get_secret_value() == "s3cr3t-from-a-docker-secret"


def test_database_password_file_is_merged_into_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "db").write_text("p@ss word")
    monkeypatch.setenv("DATABASE_URL", "postgresql://brokerx@db:5432/brokerx")
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(tmp_path / "db"))
    settings = BrokerXSettings()
    url = make_url(settings.sqlalchemy_url)
    assert (url.drivername, url.username, url.password, url.host) == (
        "postgresql+asyncpg",
        "brokerx",
        "p@ss word",
        "db",
    )
    assert settings.libpq_url == "postgresql://brokerx:p%40ss%20word@db:5432/brokerx"


def test_production_refuses_placeholder_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.delenv("JWT_SECRET", raising=False)
    with pytest.raises(ValidationError, match="placeholder"):
        BrokerXSettings()
    monkeypatch.setenv("JWT_SECRET", "a-real-long-random-secret-0f9a8b7c")
    assert BrokerXSettings().environment == "production"


def test_defaults_run_locally_without_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "ENVIRONMENT", "JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = BrokerXSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.environment == "development"
    assert settings.database_url.startswith("postgresql")
    assert settings.matching_shards == 4
