"""Settings of the worker process."""

from __future__ import annotations

from pydantic import SecretStr

from brokerx_core.settings import BrokerXSettings


class WorkerSettings(BrokerXSettings):
    service_name: str = "worker"
    ops_host: str = "127.0.0.1"
    ops_port: int = 8002
    db_pool_size: int = 10

    # E-mail
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_timeout_seconds: float = 10.0
    mail_from: str = "BrokerX <no-reply@brokerx.local>"
    public_url: str = "http://localhost:3000"
    # Failed sends are retried with exponential back-off, this many tries in all.
    email_max_attempts: int = 6
    email_retry_base_seconds: float = 5.0

    # Outbox relay and order expiry
    outbox_relay_interval_seconds: float = 1.0
    outbox_republish_after_seconds: float = 2.0

    # Backups (seed: daily at 02:00)
    backup_dir: str = ".devdata/backups"
    backup_cron: str = "0 2 * * *"
    backup_keep_daily: int = 7
    backup_keep_weekly: int = 4

    # Demo liquidity (on for `make run`, off by default in production)
    market_maker_enabled: bool = False
    market_maker_interval_seconds: float = 1.0
    market_maker_levels: int = 5
    market_maker_spread_pct: str = "0.1"
