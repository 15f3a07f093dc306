"""Settings: secrets from <NAME>_FILE, placeholder secrets refused in production, TOTP
encryption keys checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from brokerx_api.settings import ApiSettings
from brokerx_core.auth.secretbox import DEV_TOTP_ENCRYPTION_KEY, SecretBox
from brokerx_core.settings import BrokerXSettings

REAL_JWT_SECRET = "a-real-long-random-secret-0f9a8b7c"


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


@pytest.fixture
def no_totp_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("TOTP_ENCRYPTION_KEYS", "TOTP_ENCRYPTION_KEYS_FILE", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_totp_keys_default_to_the_development_key(no_totp_env: pytest.MonkeyPatch) -> None:
    settings = ApiSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.totp_encryption_keys.get_secret_value() == DEV_TOTP_ENCRYPTION_KEY
    box = settings.totp_box()
    assert SecretBox([DEV_TOTP_ENCRYPTION_KEY]).decrypt(box.encrypt("JBSWY3DPEHPK3PXP")) == (
        "JBSWY3DPEHPK3PXP"
    )


@pytest.mark.parametrize(
    "value", ["", "not-a-fernet-key", f"{Fernet.generate_key().decode()},short", "x" * 44]
)
def test_an_invalid_totp_key_fails_at_start_up_without_echoing_it(
    no_totp_env: pytest.MonkeyPatch, value: str
) -> None:
    no_totp_env.setenv("TOTP_ENCRYPTION_KEYS", value)
    with pytest.raises(ValidationError, match="totp_encryption_keys") as refused:
        ApiSettings()
    message = str(refused.value)
    assert "Fernet key" in message or "no key given" in message
    if value:
        assert value not in message


def test_production_refuses_the_development_totp_key_anywhere_in_the_list(
    no_totp_env: pytest.MonkeyPatch,
) -> None:
    no_totp_env.setenv("ENVIRONMENT", "production")
    no_totp_env.setenv("JWT_SECRET", REAL_JWT_SECRET)
    real = Fernet.generate_key().decode()
    for keys in (DEV_TOTP_ENCRYPTION_KEY, f"{real},{DEV_TOTP_ENCRYPTION_KEY}"):
        no_totp_env.setenv("TOTP_ENCRYPTION_KEYS", keys)
        with pytest.raises(ValidationError, match="totp_encryption_keys holds a placeholder"):
            ApiSettings()
    no_totp_env.delenv("TOTP_ENCRYPTION_KEYS")
    with pytest.raises(ValidationError, match="placeholder"):
        ApiSettings()  # the default is the development key
    no_totp_env.setenv("TOTP_ENCRYPTION_KEYS", real)
    assert ApiSettings().environment == "production"


def test_totp_keys_are_read_from_a_file_first_key_first(
    tmp_path: Path, no_totp_env: pytest.MonkeyPatch
) -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    keys = tmp_path / "totp_keys"
    keys.write_text(f"{new}\n{old}\n")  # make-secrets.sh --rotate writes one per line
    no_totp_env.setenv("TOTP_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    no_totp_env.setenv("TOTP_ENCRYPTION_KEYS_FILE", str(keys))
    box = ApiSettings().totp_box()
    token = box.encrypt("JBSWY3DPEHPK3PXP")
    assert SecretBox([new]).decrypt(token) == "JBSWY3DPEHPK3PXP"
    assert box.decrypt(SecretBox([old]).encrypt("KRSXG5CTMVRXEZLU")) == "KRSXG5CTMVRXEZLU"
    keys.write_text("broken")
    with pytest.raises(ValidationError, match="not a Fernet key"):
        ApiSettings()
