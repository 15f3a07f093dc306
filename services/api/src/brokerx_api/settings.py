"""Settings of the api process."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from brokerx_core.settings import BrokerXSettings


class ApiSettings(BrokerXSettings):
    service_name: str = "api"
    api_host: str = "127.0.0.1"
    api_port: int = 3000
    api_workers: int = 1

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

    # Lockouts and throttling (per API.md: ≥ 60 sign-ups and ≥ 120 logins per minute per IP)
    login_max_failures: int = 5
    mfa_max_failures: int = 3
    lockout_seconds: int = 900
    rate_limit_signup_per_minute: int = 120
    rate_limit_login_ip_per_minute: int = 240
    rate_limit_login_account_per_minute: int = 30
    rate_limit_verify_per_minute: int = 30
    rate_limit_resend_per_minute: int = 5

    # Live stream
    ws_queue_size: int = 1000
    stream_lag_degraded_seconds: float = 5.0
