"""Settings: every knob is an `ALLOT_*` environment variable (or a line in `.env`).

The table in README.md lists them; keep it in step with this class.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALLOT_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default=Path("./var"), description="Where the SQLite file and keys live")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means an SQLite file in data_dir",
    )
    secret_key: SecretStr = Field(
        default=SecretStr(""),
        description="Signs sessions and CSRF tokens; generated into data_dir on first run if empty",
    )
    database_pool_size: int = 10
    sqlite_read_pool_size: int = 4
    log_level: str = "INFO"
    log_json: bool = True
    max_request_body_bytes: int = 1_048_576
    max_upload_bytes: int = Field(
        default=100 * 1_048_576,
        description="Body limit of the endpoints that take files (registered with allow_upload)",
    )
    session_cookie_secure: bool | None = Field(
        default=None,
        description="Secure cookie flag; None: set when the request came over HTTPS",
    )
    session_max_age_seconds: int = 14 * 24 * 3600
    default_locale: Literal["ru", "en"] = "ru"
    business_timezone: str = "Europe/Moscow"
    login_attempts_per_window: int = 5
    login_window_seconds: int = 300
    idempotency_ttl_seconds: int = 24 * 3600
    presence_grace_seconds: int = Field(
        default=180, description="An agent with no heartbeat for this long goes offline"
    )
    broker_url: str = Field(default="", description="AMQP URL; empty means in-process events")
    # Broker mode (docs/event-bus.md): every exchange and queue name starts with the namespace.
    broker_namespace: str = Field(default="allot", description="Prefix of exchanges and queues")
    broker_quorum_queues: bool = Field(
        default=True, description="Quorum queues (replicated); False: classic queues"
    )
    broker_prefetch: int = Field(default=256, description="Unacked messages per worker queue")
    broker_batch_size: int = Field(default=128, description="Messages a worker applies at once")
    broker_concurrency: int = Field(
        default=2, description="Batches a worker applies at once per unordered queue"
    )
    broker_relay_batch_size: int = Field(
        default=500, description="Outbox rows the relay publishes per round (one confirm wait)"
    )
    broker_relay_poll_seconds: float = Field(
        default=0.05,
        description="How often the relay looks for events committed by other processes",
    )
    broker_relay_standby_seconds: float = Field(
        default=3.0,
        description="How often a standby relay replica tries to take over (PostgreSQL lock)",
    )
    broker_max_attempts: int = Field(
        default=5, description="Tries of a message per consumer before it is dead-lettered"
    )
    broker_retry_base_seconds: float = Field(
        default=1.0, description="First retry waits up to this long; doubles each attempt"
    )
    broker_partitions: int = Field(
        default=8, description="Partition queues of each ordered consumer group"
    )
    broker_ordered_groups: str = Field(
        default="leads,customers",
        description="Consumer groups handled in order per key (comma-separated)",
    )
    redis_url: str = Field(default="", description="Redis URL; empty means in-memory equivalents")
    redis_namespace: str = Field(
        default="allot", description="Prefix of every Redis key and channel (docs/redis.md)"
    )
    redis_timeout_seconds: float = Field(
        default=0.25, description="Socket timeout of Redis calls on a request's path"
    )
    api_rate_limit: str = Field(
        default="6000/minute",
        description="Per user (token or session) on /api/v1; e.g. 100/second; empty or 0: off",
    )
    api_anonymous_rate_limit: str = Field(
        default="600/minute", description="Per client IP for /api/v1 calls without credentials"
    )
    # External deliveries (docs/deliveries.md): email and Telegram, at least once, with a log.
    delivery_batch_size: int = Field(
        default=20, description="Deliveries a process claims and sends at once"
    )
    delivery_max_attempts: int = Field(
        default=10, description="Tries of a delivery before it is marked dead"
    )
    delivery_retry_base_seconds: float = Field(
        default=30.0, description="First retry of a delivery within this; doubles, up to 1 h"
    )
    delivery_lease_seconds: float = Field(
        default=120.0,
        description="A claimed delivery is re-sent after this if its sender died; must exceed "
        "the channels' timeouts",
    )
    smtp_host: str = Field(default="", description="SMTP server; empty: no email channel")
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_from: str = Field(default="", description="From address of Allot's email")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="starttls (port 587), tls (implicit, port 465) or none (trusted relay)",
    )
    smtp_timeout_seconds: float = 30.0
    telegram_bot_token: SecretStr = Field(
        default=SecretStr(""), description="Bot API token; empty: no Telegram channel"
    )
    telegram_api_url: str = "https://api.telegram.org"
    telegram_timeout_seconds: float = 30.0
    run_background_workers: bool = Field(
        default=True, description="Run the event dispatcher and timers inside the web process"
    )
    heartbeat_file: str = Field(
        default="",
        description="worker, relay and timers touch this file every few seconds while running "
        "(a liveness probe checks its age); empty: none",
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'allot.sqlite3').resolve()}"

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated once and kept in data_dir (mode 0600)."""
        if self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value()
        key_file = self.data_dir / "secret_key"
        if key_file.exists():
            return key_file.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        key_file.touch(mode=0o600)
        key_file.write_text(key)
        return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
