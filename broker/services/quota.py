"""Per-member quotas: what the policy document's `[quotas]` allows each member, and the
per-process token buckets that enforce its request rate.

Pure apart from the clock: the quotas come from the policy document (`policydoc.QuotasDoc`,
stored by `services/policy.py`), and each is enforced where its resource is spent:

| quota | enforced | answer |
|---|---|---|
| `requests_per_second`, `burst` | every authenticated member request (`api/deps.py`) | `429 rate-limited` + `Retry-After` from the bucket |
| `long_polls` | waiting inbox long-polls (`api/deps.py` `LongPolls`) | `429 too-many-long-polls` + `Retry-After` |
| `largest_envelope` | submissions, before the body is read past it (`api/items.py`) | `413 envelope-too-large` |
| `stored_bytes` | the transaction that stores the item (`services/submit.py`) | `429 storage-quota-exceeded` + `Retry-After` |

The rate and the long-polls are counted in each broker process's memory: with N processes a
member may reach up to N times them. Stored bytes are counted in the database
(`member_usage`), in the same transaction as the items, so they hold across processes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..policydoc import QuotasDoc, size_text
from ..problems import Problem

# A storage quota frees up only when retention purges envelopes (hourly by default,
# MSMT_RETENTION_INTERVAL_S) or an admin raises it: ask again no sooner than that.
STORAGE_RETRY_AFTER_S = 3600


@dataclass(frozen=True)
class Quota:
    """One member's quotas."""

    requests_per_second: float
    burst: int
    long_polls: int
    stored_bytes: int
    largest_envelope: int


class Quotas:
    """Every member's quotas, as one policy document sets them."""

    def __init__(self, document: QuotasDoc | None = None) -> None:
        self.document = document or QuotasDoc()
        self._members: dict[str, Quota] = {}

    def of(self, member: str) -> Quota:
        quota = self._members.get(member)
        if quota is None:
            quota = self._members[member] = Quota(**self.document.for_member(member))
        return quota


class QuotaBook:
    """This process's copy of the quotas, reloaded when the registry version moves (every
    policy change moves it, in every process: services/registry.py)."""

    def __init__(self) -> None:
        self._current: tuple[int, Quotas] | None = None

    def at(self, version: int, load: Callable[[], QuotasDoc]) -> Quotas:
        current = self._current
        if current is None or current[0] != version:
            current = (version, Quotas(load()))
            self._current = current
        return current[1]

    def loaded_at(self, version: int) -> bool:
        """Whether the quotas as of registry `version` are loaded (`at` then reads nothing)."""
        current = self._current
        return current is not None and current[0] == version

    def latest(self) -> Quotas:
        """The quotas last loaded (the defaults before any): what a request's own checks use
        after authentication brought them up to date."""
        current = self._current
        return Quotas() if current is None else current[1]


class RateLimiter:
    """A token bucket per member: `burst` requests at once, refilled at `rate` per second.

    A refused request takes no token, so a flood does not push the member's next success
    further away than the rate itself. `clock` is monotonic seconds (never the wall clock,
    which may jump)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # member -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, member: str, rate: float, burst: int) -> float:
        """Take one token: 0 when granted, else the seconds until one is there."""
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(member, (float(burst), now))
            tokens = min(float(burst), tokens + max(0.0, now - at) * rate)
            if tokens >= 1.0:
                self._buckets[member] = (tokens - 1.0, now)
                return 0.0
            self._buckets[member] = (tokens, now)
            return (1.0 - tokens) / rate


def retry_after_s(wait_s: float) -> int:
    """Retry-After in whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait_s - 1e-9))


def rate_limited(member: str, quota: Quota, wait_s: float) -> Problem:
    return Problem(
        429,
        "rate-limited",
        "Too many requests",
        f"{member} may make {quota.requests_per_second:g} requests per second (bursts of {quota.burst}); "
        f"retry in {retry_after_s(wait_s)} s",
        retry_after=retry_after_s(wait_s),
    )


def envelope_too_large(member: str, quota: Quota, size: int | None = None) -> Problem:
    told = "" if size is None else f" ({size} bytes)"
    return Problem(
        413,
        "envelope-too-large",
        "Envelope too large",
        f"the envelope{told} is larger than {member}'s quota for one envelope, "
        f"largest_envelope = {size_text(quota.largest_envelope)} ({quota.largest_envelope} bytes)",
        largest_envelope=quota.largest_envelope,
    )


def storage_quota_exceeded(member: str, quota: Quota, used: int, size: int) -> Problem:
    return Problem(
        429,
        "storage-quota-exceeded",
        "Storage quota exceeded",
        f"{member} stores {used} bytes ({_about(used)}) of its stored_bytes quota of {quota.stored_bytes} "
        f"({_about(quota.stored_bytes)}); this envelope of {size} bytes does not fit (space frees when "
        "retention purges envelopes every recipient acknowledged, or when an admin raises the quota)",
        retry_after=STORAGE_RETRY_AFTER_S,
        stored_bytes=used,
        quota_bytes=quota.stored_bytes,
    )


def _about(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
