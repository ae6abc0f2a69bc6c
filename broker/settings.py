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
    # A long-poll wakes when the integrator publishes its recipient (services/notify.py); it
    # also re-checks the database this often, so a missed notification never hides an item.
    inbox_poll_interval_s: float = 2.0
    # With `include=envelope`, a page stops before its envelopes exceed this many bytes (a
    # single larger envelope still comes alone).
    inbox_max_page_bytes: int = 16 * 1024 * 1024
    # The transparency log. The key file holds 64 bytes (Ed25519 key, ML-DSA-65 seed) in
    # base64 (mode 0600); its verifier keys go into the members' root (`extra.log`).
    log_origin: str = "msmt-broker/log"
    log_key_file: str | None = None
    # How long a submission waits for the integrator before answering 202 (still durable).
    log_settle_timeout_s: float = 10.0
    log_sweep_interval_s: float = 0.5
    # `serve` sets this: freeze the start-up heap out of the garbage collector (broker/app.py).
    gc_freeze: bool = False
    # Group commit: at most this many queued submissions share one transaction.
    submit_max_batch: int = 512
    # POST /v1/items/batch: at most this many envelopes per request
    submit_batch_max_items: int = 1000
    # Where to reach the member witnesses the root names: "name=https://url;name=https://url".
    # Which witnesses count, and how many, is the members' root's decision, not this setting's.
    witness_urls: str = ""
    witness_timeout_s: float = 5.0

    def witness_map(self) -> dict[str, str]:
        pairs = (part.split("=", 1) for part in self.witness_urls.split(";") if "=" in part)
        return {name.strip(): url.strip() for name, url in pairs}
