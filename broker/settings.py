"""One settings object, read from MSMT_* environment variables."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MSMT_", frozen=True)

    database_url: str = "sqlite:///var/msmt-broker.db"
    # JWT audience: the identity of this broker. Tokens for another broker are refused.
    audience: str = "msmt-broker"
    token_max_lifetime_s: int = 300
    token_leeway_s: int = 30
    max_envelope_bytes: int = 64 * 1024 * 1024 + 2 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    # An envelope must be submitted within this long of its creation time.
    max_envelope_age_s: int = 7 * 24 * 3600
    max_clock_skew_s: int = 300
    inbox_max_limit: int = 1000
    inbox_max_wait_s: float = 30.0
    inbox_poll_interval_s: float = 0.2
