"""One settings object, read from MSMT_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from msmt.auth import audience_of


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MSMT_", frozen=True)

    database_url: str = "sqlite:///var/msmt-broker.db"
    # Or the URL from a file (a container secret, a systemd credential): it then never appears
    # in the environment or on a command line. Wins over `database_url`.
    database_url_file: str | None = None
    # JWT audience: the identity of this broker, its base URL as members reach it (e.g.
    # https://broker.msmt.example), normalised by msmt.auth.audience_of: tokens made for any other
    # deployment are refused. `serve` sets it from --host/--port when it listens on one address
    # and it is not given; behind a proxy (TLS, another name) set it to the proxy's URL.
    audience: str = ""
    token_max_lifetime_s: int = 300
    token_leeway_s: int = 30
    max_envelope_bytes: int = 64 * 1024 * 1024 + 2 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    # A request body that stops arriving for this long is refused (408) and its connection
    # closed: half-sent bodies do not hold memory and a connection forever.
    body_timeout_s: float = 30.0
    # An envelope must be submitted within this long of its creation time.
    max_envelope_age_s: int = 7 * 24 * 3600
    max_clock_skew_s: int = 300
    inbox_max_limit: int = 1000
    inbox_max_wait_s: float = 30.0
    # A long-poll wakes when the integrator publishes its recipient (services/notify.py); it
    # also re-checks the database this often, so a missed notification never hides an item.
    inbox_poll_interval_s: float = 2.0
    # GET /v1/inbox/stream: a stream ends (event `end`) after this long, so that its caller
    # authenticates again with a fresh token; a comment line every keep-alive interval.
    inbox_stream_max_s: float = 300.0
    inbox_stream_keepalive_s: float = 15.0
    # Waiting long-polls each hold a connection: at most this many per member (429 past it)
    # and in all per process (503 past it; keep it well below the file-descriptor limit).
    inbox_max_waiting_per_member: int = 20
    inbox_max_waiting: int = 800
    # Open connections per process (uvicorn's limit_concurrency): past it a request is answered
    # `503 busy` at once and its connection closed. `serve` raises the soft file-descriptor limit
    # to fit it (plus RESERVED_FDS for the database, logs and listeners) and, where the hard limit
    # does not allow that, serves fewer. Keep `inbox_max_waiting` below it.
    max_connections: int = 1000
    # On SIGTERM waiting long-polls are answered at once (503 shutting-down); other requests get
    # this long to finish before they are cancelled. Keep it below the supervisor's stop timeout.
    shutdown_timeout_s: float = 20.0
    # With `include=envelope`, a page stops before its envelopes exceed this many bytes (a
    # single larger envelope still comes alone).
    inbox_max_page_bytes: int = 16 * 1024 * 1024
    # The transparency log. The key file holds 64 bytes (Ed25519 key, ML-DSA-65 seed) in
    # base64 (mode 0600); its verifier keys go into the members' root (`extra.log`).
    log_origin: str = "msmt-broker/log"
    log_key_file: str | None = None
    # How long a submission waits for the integrator before answering 202 (still durable). Below
    # the PostgreSQL lock timeout (MSMT_DB_LOCK_TIMEOUT_S, 5 s): a broker hung while holding the
    # integration lock must not stall the others' answers longer than that (tests/chaos).
    log_settle_timeout_s: float = 4.0
    log_sweep_interval_s: float = 0.5
    # `serve` sets this: freeze the start-up heap out of the garbage collector (broker/app.py).
    gc_freeze: bool = False
    # ... and collect the young generation once this many more objects were allocated than
    # freed, not CPython's 700: a broker's garbage is almost never cyclic (reference counting
    # frees it), so each collection is pure cost: ~7% of a submission's CPU at the default, the
    # older generations' passes scanning every envelope held in memory (bench/README.md, "The
    # garbage collector"). Larger is fewer, longer pauses (at 50,000 the longest young pass under
    # bench/throughput.py took 11.5 ms). Only where gc_freeze is on (a server process).
    gc_young_threshold: int = Field(default=50_000, ge=700)
    # Group commit: at most this many queued submissions share one transaction.
    submit_max_batch: int = 512
    # POST /v1/items/batch: at most this many envelopes per request
    submit_batch_max_items: int = 1000
    # Envelope checks (parsing, both signatures) run on at most this many threads at once;
    # 0: on SQLite one fewer than the cores (at least one), on PostgreSQL no limit of their own
    # (see `prepare_threads`).
    submit_prepare_threads: int = 0
    # Envelopes' signatures are verified in this many worker processes (services/signatures.py),
    # so that they do not take the GIL from the event loop and the writer thread; 0: in the
    # request's thread; -1: as many as the cores this process may run on, when more than one.
    signature_workers: int = Field(default=-1, ge=-1)
    # Where to reach the member witnesses the root names: "name=https://url;name=https://url".
    # Which witnesses count, and how many, is the members' root's decision, not this setting's.
    witness_urls: str = ""
    witness_timeout_s: float = 5.0
    # Retention: purge the envelopes of items every recipient acknowledged more than this many
    # days ago (0: keep them forever); items, digests and log entries always stay. Each broker
    # process runs the purge every `retention_interval_s` (it is idempotent).
    retention_days: float = 0.0
    retention_interval_s: float = 3600.0
    # /readyz answers 503 when the database has not answered within this long.
    readiness_timeout_s: float = 1.0
    # Prometheus metrics (broker/metrics.py): `serve` answers GET /metrics on a listener of
    # their own, never on the API's port; 0 is off (and then nothing is counted).
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # Label the inbox gauges by recipient country: metadata, so off unless the operator wants it.
    metrics_country_labels: bool = False
    # The inbox gauges are read from the database at most this often, however often scraped.
    metrics_cache_s: float = 10.0

    def prepare_threads(self) -> int | None:
        """How many envelopes' checks run at once (`submit_prepare_threads`); None: no limit of
        their own (the request thread pool's). By default, on SQLite one fewer than the cores
        this process may run on: the checks are CPU work, and more of them at once than there
        are cores to spare beside the event loop and the writer thread only makes them take the
        GIL from each other and from the writer. On PostgreSQL no limit: there the writer's
        batches are what it costs, and checks finishing together make larger ones (bench/
        README.md, "Envelope checks on the cores there are to spare")."""
        if self.submit_prepare_threads > 0:
            return self.submit_prepare_threads
        if not self.database_url.startswith("sqlite"):
            return None
        if self.signature_pool_size() > 0:  # a check thread mostly waits for its worker
            return 2 * self.signature_pool_size()
        return max(1, _cores() - 1)

    def signature_pool_size(self) -> int:
        """How many signature worker processes (`signature_workers`, -1 resolved)."""
        if self.signature_workers >= 0:
            return self.signature_workers
        cores = _cores()
        return cores if cores > 1 else 0

    @model_validator(mode="before")
    @classmethod
    def _audience_normalised(cls, data: Any) -> Any:
        if isinstance(data, dict) and str(data.get("audience", "")).lower().startswith(
            ("http://", "https://")
        ):
            data = {**data, "audience": audience_of(str(data["audience"]))}
        return data

    @model_validator(mode="before")
    @classmethod
    def _database_url_from_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("database_url_file"):
            path = Path(str(data["database_url_file"]))
            try:
                url = path.read_text().strip()
            except OSError as exc:
                raise ValueError(f"MSMT_DATABASE_URL_FILE {path} cannot be read: {exc.strerror}") from None
            if not url:
                raise ValueError(f"MSMT_DATABASE_URL_FILE {path} is empty")
            data = {**data, "database_url": url}
        return data

    def witness_map(self) -> dict[str, str]:
        pairs = (part.split("=", 1) for part in self.witness_urls.split(";") if "=" in part)
        return {name.strip(): url.strip() for name, url in pairs}


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
