"""Settings of the api process."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from brokerx_core.auth.passwords import (
    OWASP_MIN_MEMORY_KIB,
    OWASP_MIN_TIME_COST,
    HashParameters,
)
from brokerx_core.auth.secretbox import DEV_TOTP_ENCRYPTION_KEY, SecretBox, split_keys
from brokerx_core.settings import BrokerXSettings


class ApiSettings(BrokerXSettings):
    # A refused value must not reach the start-up log: pydantic would echo the input
    # (a mistyped TOTP key is still most of a key).
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    service_name: str = "api"
    api_host: str = "127.0.0.1"
    api_port: int = 3000
    api_workers: int = Field(default=1, ge=1)  # > 1: a master and N worker processes

    # Tokens
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_private_key: SecretStr | None = None  # PEM, for RS256
    jwt_public_key: str | None = None  # PEM, for RS256
    jwt_issuer: str = "brokerx"
    jwt_audience: str = "brokerx-api"
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    mfa_token_ttl_seconds: int = 300
    session_cache_seconds: int = 5
    # In-process memo of live sessions (auth/session_cache.py); 0 turns it off.
    session_local_cache_seconds: float = Field(default=2.0, ge=0, le=60)

    # Lockouts and throttling (per API.md: ≥ 60 sign-ups and ≥ 120 logins per minute per IP,
    # also when they are all for one account: the per-account limit is the per-IP one,
    # and guessing is stopped by the lockouts, which count consecutive failures).
    login_max_failures: int = 5
    mfa_max_failures: int = 3
    lockout_seconds: int = 900
    rate_limit_signup_per_minute: int = 120
    rate_limit_login_ip_per_minute: int = 240
    rate_limit_login_account_per_minute: int = 240  # also MFA verify, per client
    rate_limit_verify_per_minute: int = 30
    rate_limit_resend_per_minute: int = 5
    rate_limit_verify_ip_per_minute: int = 240

    # Passwords: argon2id, defaults at OWASP's minimum (19 MiB, t=2, p=1); tests lower
    # them, production refuses anything below.
    password_hash_memory_kib: int = OWASP_MIN_MEMORY_KIB
    password_hash_time_cost: int = OWASP_MIN_TIME_COST
    password_hash_parallelism: int = 1

    # TOTP secrets at rest (brokerx_core.auth.secretbox): Fernet keys separated by commas
    # or whitespace; the first encrypts, all decrypt. Only the api holds them.
    totp_encryption_keys: SecretStr = SecretStr(DEV_TOTP_ENCRYPTION_KEY)

    # E-mailed one-time codes
    verification_code_ttl_seconds: int = 24 * 3600
    # Guesses checked against one sign-up code; it is spent after that many wrong ones.
    verification_code_max_attempts: int = Field(default=5, ge=1)
    # Codes one pending client may be sent in 24 h (sign-up and resends): with the attempts
    # above, at most 5 × 10 guesses a day at a 6-digit code. Resends beyond it send nothing.
    verification_codes_per_day: int = Field(default=10, ge=1)
    mfa_email_code_ttl_seconds: int = 600

    # Live stream
    ws_queue_size: int = 1000
    stream_lag_degraded_seconds: float = 5.0
    # Per api process: open connections of one client (more are closed 4429), and per
    # connection a token bucket of subscribe/unsubscribe actions (each reads snapshots).
    ws_max_connections_per_client: int = Field(default=20, ge=1)
    ws_subscription_burst: int = Field(default=20, ge=1)
    ws_subscription_rate_per_second: float = Field(default=5.0, gt=0)

    # Order intake by group commit (brokerx_core.intake.batcher): connections (= batches
    # in flight at once) and the most orders one batch carries.
    intake_connections: int = Field(default=2, ge=1, le=32)
    intake_batch_max: int = Field(default=256, ge=1, le=4096)

    @field_validator("totp_encryption_keys")
    @classmethod
    def _totp_keys_are_fernet_keys(cls, value: SecretStr) -> SecretStr:
        # At start-up, not at the first login.
        split_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _refuse_dev_totp_key(self) -> ApiSettings:
        # Anywhere in the list: the development key is public, in the repository.
        keys = split_keys(self.totp_encryption_keys.get_secret_value())
        if self.environment == "production" and DEV_TOTP_ENCRYPTION_KEY in keys:
            raise ValueError("totp_encryption_keys holds a placeholder secret in production")
        return self

    @model_validator(mode="after")
    def _refuse_weak_password_hashing(self) -> ApiSettings:
        if (
            self.environment == "production"
            and not self.password_hash_parameters.meets_owasp_minimum
        ):
            raise ValueError("password hashing below OWASP's argon2id minimum in production")
        return self

    def totp_box(self) -> SecretBox:
        """The box that encrypts and decrypts the stored TOTP secrets."""
        return SecretBox.from_setting(self.totp_encryption_keys.get_secret_value())

    @property
    def password_hash_parameters(self) -> HashParameters:
        """The argon2id parameters new password hashes are made with."""
        return HashParameters(
            memory_kib=self.password_hash_memory_kib,
            time_cost=self.password_hash_time_cost,
            parallelism=self.password_hash_parallelism,
        )
