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
    redis_url: str = Field(default="", description="Redis URL; empty means in-memory equivalents")
    run_background_workers: bool = Field(
        default=True, description="Run the event dispatcher and timers inside the web process"
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
