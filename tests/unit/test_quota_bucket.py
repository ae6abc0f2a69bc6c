"""The per-member token bucket behind `requests_per_second` and `burst`, and the quota book
that follows the registry version."""

from __future__ import annotations

import pytest

from broker import policydoc
from broker.services.quota import QuotaBook, RateLimiter, rate_limited, retry_after_s


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert [limiter.take("NZL", 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("NZL", 2.0, 3) == pytest.approx(0.5)  # one token every 0.5 s
    clock.now += 0.25
    assert limiter.take("NZL", 2.0, 3) == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.take("NZL", 2.0, 3) == 0.0
    assert limiter.take("NZL", 2.0, 3) > 0


def test_a_refused_request_takes_no_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limiter.take("NZL", 1.0, 1)
    for _ in range(100):  # a flood while empty does not push the next token further away
        assert limiter.take("NZL", 1.0, 1) == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.take("NZL", 1.0, 1) == 0.0


def test_the_bucket_refills_only_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limiter.take("NZL", 10.0, 5)
    clock.now += 3600
    granted = 0
    while limiter.take("NZL", 10.0, 5) == 0.0:
        granted += 1
    assert granted == 5


def test_members_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(FakeClock())
    while limiter.take("NZL", 1.0, 2) == 0.0:
        pass
    assert limiter.take("KOR", 1.0, 2) == 0.0
    assert limiter.take("KOR", 1.0, 2) == 0.0


def test_a_lower_burst_applies_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limiter.take("NZL", 1.0, 100)  # 99 left
    assert limiter.take("NZL", 1.0, 1) == 0.0  # clamped to the new burst of 1: this one, no more
    assert limiter.take("NZL", 1.0, 1) > 0


@pytest.mark.parametrize(
    ("wait", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.01, 2), (3.5, 4), (10.0, 10)]
)
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: int) -> None:
    assert retry_after_s(wait) == header


def test_the_refusal_says_the_quota_and_when() -> None:
    book = QuotaBook()
    doc = policydoc.QuotasDoc(requests_per_second=0.25, burst=2)
    problem = rate_limited("NZL", book.at(1, lambda: doc).of("NZL"), 3.2)
    assert (problem.status, problem.code, problem.retry_after) == (429, "rate-limited", 4)
    assert problem.headers() == {"Retry-After": "4"}
    assert "0.25 requests per second" in problem.detail and "bursts of 2" in problem.detail


def test_the_book_reloads_only_when_the_version_moves() -> None:
    loads: list[int] = []

    def load(burst: int) -> policydoc.QuotasDoc:
        loads.append(burst)
        return policydoc.QuotasDoc(burst=burst)

    book = QuotaBook()
    assert book.latest().of("NZL").burst == 200  # the defaults before anything was loaded
    assert book.at(5, lambda: load(7)).of("NZL").burst == 7
    assert book.at(5, lambda: load(9)).of("NZL").burst == 7
    assert book.at(6, lambda: load(9)).of("NZL").burst == 9
    assert loads == [7, 9] and book.latest().of("NZL").burst == 9
