"""Per-member quotas from the policy document (issue 10, finding 4): requests per second,
waiting long-polls, the largest envelope and bytes stored. Each refusal is an RFC 9457
problem (429 with Retry-After, or 413 for an envelope no retry can fix), stores nothing, and
leaves every other member alone."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from broker import policydoc
from broker.problems import Problem
from broker.services import maintenance
from broker.services import submit as submit_service
from broker.services.health import schema_head
from broker.services.quota import QuotaBook
from broker.services.registry import RegistryCache
from broker.store.db import make_engine, make_sessionmaker, transaction
from msmt.core import parse

from .conftest import World

ADMIN = "admin:alice"
DAY_MS = 24 * 3600 * 1000


def set_quotas(world: World, countries: dict[str, dict[str, Any]] | None = None, **defaults: Any) -> Any:
    """Apply the current policy with these quotas through the admin API; the plan's changes."""
    r = world.client.get("/v1/admin/policy", headers=world.auth(ADMIN))
    assert r.status_code == 200, r.text
    data = policydoc.parse(r.text).model_dump()
    data["quotas"] = {**defaults, "countries": countries or {}}
    body = policydoc.render(policydoc.from_dict(data))
    r = world.client.put(
        "/v1/admin/policy", content=body, headers={**world.auth(ADMIN), "Content-Type": "application/toml"}
    )
    assert r.status_code == 200, r.text
    return r.json()["changes"]


def assert_problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["type"] == f"urn:msmt:problem:{code}" and body["status"] == status
    return body


def inbox(world: World, who: str, wait: float = 0) -> Any:
    return world.client.get(f"/v1/inbox?wait={wait}", headers=world.auth(who))


def items_of(world: World, originator: str) -> int:
    engine = make_engine(world.url)
    try:
        with engine.connect() as conn:
            query = text("SELECT count(*) FROM items WHERE originator = :o")
            return int(conn.execute(query, {"o": originator}).scalar_one())
    finally:
        engine.dispose()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- requests per second ---------------------------------------------------------------------


def test_a_member_over_its_request_rate_gets_429_with_retry_after(world: World) -> None:
    changes = set_quotas(world, {"NZL": {"requests_per_second": 0.25, "burst": 3}})
    assert changes == ["quotas of NZL: requests_per_second 100 (default) -> 0.25; burst 200 (default) -> 3"]
    clock = FakeClock()
    world.client.app.state.broker.limiter.clock = clock  # type: ignore[attr-defined]

    assert [inbox(world, "NZL").status_code for _ in range(3)] == [200, 200, 200]
    r = inbox(world, "NZL")
    body = assert_problem(r, 429, "rate-limited")
    assert r.headers["retry-after"] == "4"  # one token every 4 s, none left
    assert "0.25 requests per second" in body["detail"] and "bursts of 3" in body["detail"]

    # a refused submission stores nothing; the flood does not push the next token further away
    assert_problem(world.submit("NZL", world.seal("NZL", ["KOR"])), 429, "rate-limited")
    assert items_of(world, "NZL") == 0
    # every other member, and the admins, are untouched
    assert all(inbox(world, "KOR").status_code == 200 for _ in range(20))
    assert world.submit("KOR", world.seal("KOR", ["NZL"])).status_code in (201, 202)
    assert world.client.get("/v1/admin/policy", headers=world.auth(ADMIN)).status_code == 200

    clock.now += 2
    assert inbox(world, "NZL").headers["retry-after"] == "2"
    clock.now += 2
    assert inbox(world, "NZL").status_code == 200
    assert inbox(world, "NZL").status_code == 429


# --- largest envelope ------------------------------------------------------------------------


def test_an_envelope_over_the_members_largest_envelope_is_413(world: World) -> None:
    set_quotas(world, {"NZL": {"largest_envelope": "8 KiB"}})
    small = world.seal("NZL", ["KOR"], payload=b"short")
    large = world.seal("NZL", ["KOR"], payload=b"x" * 8192)
    assert len(small) <= 8192 < len(large)

    body = assert_problem(world.submit("NZL", large), 413, "envelope-too-large")
    assert "largest_envelope = 8 KiB (8192 bytes)" in body["detail"] and body["largest_envelope"] == 8192
    # with a token bound to the body, which the broker reads only after the token: the same
    r = world.client.post(
        "/v1/items",
        content=large,
        headers={
            **world.auth("NZL", method="POST", target="/v1/items", body=large),
            "Content-Type": "application/vnd.msmt.envelope",
        },
    )
    assert_problem(r, 413, "envelope-too-large")
    assert items_of(world, "NZL") == 0

    assert world.submit("NZL", small).status_code in (201, 202)
    assert world.submit("KOR", world.seal("KOR", ["NZL"], payload=b"x" * 8192)).status_code in (201, 202)


def test_a_batch_refuses_only_the_envelopes_over_the_quota(world: World) -> None:
    set_quotas(world, {"NZL": {"largest_envelope": 8192}})
    small = world.seal("NZL", ["KOR"], payload=b"short")
    large = world.seal("NZL", ["KOR"], payload=b"x" * 8192)
    body = submit_service.join_batch([small, large])
    r = world.client.post(
        "/v1/items/batch",
        content=body,
        headers={
            **world.auth("NZL", method="POST", target="/v1/items/batch", body=body),
            "Content-Type": "application/vnd.msmt.envelope-batch",
        },
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [result["status"] for result in results][1] == 413
    assert results[0]["status"] in (201, 202)
    assert results[1]["problem"]["type"] == "urn:msmt:problem:envelope-too-large"
    assert items_of(world, "NZL") == 1


# --- bytes stored ----------------------------------------------------------------------------


def test_a_member_over_its_stored_bytes_gets_429_and_nothing_is_stored(world: World) -> None:
    first, second, third = (world.seal("NZL", ["KOR"], payload=f"report {i}".encode()) for i in range(3))
    size = len(first)
    assert len(second) == len(third) == size
    set_quotas(world, {"NZL": {"stored_bytes": 2 * size + size // 2}})

    assert world.submit("NZL", first).status_code in (201, 202)
    assert world.submit("NZL", second).status_code in (201, 202)
    r = world.submit("NZL", third)
    body = assert_problem(r, 429, "storage-quota-exceeded")
    assert r.headers["retry-after"] == "3600"
    assert body["stored_bytes"] == 2 * size and body["quota_bytes"] == 2 * size + size // 2
    assert f"NZL stores {2 * size} bytes" in body["detail"] and f"envelope of {size} bytes" in body["detail"]
    assert items_of(world, "NZL") == 2
    assert world.submit("NZL", first).status_code == 200  # a re-submission stores nothing more
    # in a batch: refused on its own
    batch = submit_service.join_batch([third])
    r = world.client.post(
        "/v1/items/batch",
        content=batch,
        headers={
            **world.auth("NZL", method="POST", target="/v1/items/batch", body=batch),
            "Content-Type": "application/vnd.msmt.envelope-batch",
        },
    )
    assert [result["status"] for result in r.json()["results"]] == [429]
    assert items_of(world, "NZL") == 2
    # another member is unaffected
    assert world.submit("KOR", world.seal("KOR", ["NZL"])).status_code in (201, 202)

    # retention frees the space: once KOR acknowledged them and they are old enough
    world.settle()
    page = inbox(world, "KOR").json()
    r = world.client.post(
        "/v1/inbox/ack", json={"seqs": [d["seq"] for d in page["deliveries"]]}, headers=world.auth("KOR")
    )
    assert r.status_code == 200, r.text
    factory = make_sessionmaker(make_engine(world.url))
    with transaction(factory) as session:
        assert maintenance.purge(session, DAY_MS, world.clock.ms + 2 * DAY_MS, "test") == 2
    with factory() as session:
        assert maintenance.check(session, schema_head()).ok
    assert world.submit("NZL", third).status_code in (201, 202)


def test_check_finds_a_stored_bytes_counter_that_disagrees(world: World) -> None:
    assert world.submit("NZL", world.seal("NZL", ["KOR"])).status_code in (201, 202)
    world.settle()
    factory = make_sessionmaker(make_engine(world.url))
    with factory() as session:
        report = maintenance.check(session, schema_head())
    assert report.ok and "stored-bytes" in report.checks
    with transaction(factory) as session:
        session.execute(text("UPDATE member_usage SET stored_bytes = 7 WHERE country = 'NZL'"))
    with factory() as session:
        findings = maintenance.check(session, schema_head()).findings
    assert [(f.check, f.detail.split(",")[0]) for f in findings] == [
        ("stored-bytes", "NZL's stored-bytes counter says 7")
    ]


@pytest.mark.parametrize("earlier", [0, 1], ids=["first-row", "existing-row"])
def test_the_stored_bytes_quota_holds_between_concurrent_transactions(world: World, earlier: int) -> None:
    """Two transactions storing for the same member (two broker processes, on PostgreSQL):
    the second waits for the first's commit on the member's row and counts its bytes, whether
    the row exists already (it is locked) or the first creates it (the second retries)."""
    envelopes = [world.seal("NZL", ["KOR"], payload=f"r{i}".encode()) for i in range(3)]
    size = len(envelopes[0])
    set_quotas(world, {"NZL": {"stored_bytes": earlier * size + size * 3 // 2}})
    if earlier:
        assert world.submit("NZL", envelopes.pop()).status_code in (201, 202)
    factory = make_sessionmaker(make_engine(world.url))
    prepared = [
        submit_service.Prepared(parse(e), e, hashlib.sha256(e).hexdigest(), world.clock.ms, "k" * 32)
        for e in envelopes
    ]
    second: list[Any] = []

    def store_second() -> None:
        for _ in range(3):  # as the sequencer does: the member's first row may race (PostgreSQL)
            try:
                with transaction(factory) as session:
                    answers = submit_service.accept_batch(
                        session, RegistryCache(), prepared[1:2], QuotaBook()
                    )
            except IntegrityError:
                continue
            second.extend(answers)
            return

    with transaction(factory) as session:
        (first,) = submit_service.accept_batch(session, RegistryCache(), prepared[:1], QuotaBook())
        thread = threading.Thread(target=store_second)
        thread.start()
        time.sleep(0.5)  # the second transaction waits for this one
        assert not second
    thread.join(timeout=30)
    assert isinstance(first, submit_service.Receipt) and first.created
    (answer,) = second
    assert isinstance(answer, Problem) and answer.code == "storage-quota-exceeded"
    assert items_of(world, "NZL") == 1 + earlier


# --- long-polls ------------------------------------------------------------------------------


def test_a_members_long_polls_are_capped_by_its_quota(world: World) -> None:
    set_quotas(world, {"NZL": {"long_polls": 1}})
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(inbox(world, "NZL", wait=3)))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        long_polls = world.client.app.state.broker.long_polls  # type: ignore[attr-defined]
        while long_polls.by_member.get("NZL", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = inbox(world, "NZL", wait=1)
        body = assert_problem(r, 429, "too-many-long-polls")
        assert r.headers["retry-after"] == "1"
        assert "1 long-polls waiting (its long_polls quota)" in body["detail"]
        assert inbox(world, "NZL").status_code == 200  # a poll that does not wait is not capped
        assert [inbox(world, "KOR", wait=0.2).status_code for _ in range(2)] == [200, 200]
    finally:
        thread.join(timeout=30)
    assert [a.status_code for a in answers] == [200]
    assert inbox(world, "NZL", wait=0.2).status_code == 200  # its slot is free again


# --- the document through the admin API --------------------------------------------------------


def test_the_admin_api_shows_validates_and_plans_quotas(world: World) -> None:
    exported = world.client.get("/v1/admin/policy", headers=world.auth(ADMIN)).text
    assert (
        '[quotas]\nrequests_per_second = 100\nburst = 200\nlong_polls = 20\nstored_bytes = "20 GiB"\nlargest_envelope = "16 MiB"\n'
        in exported
    )

    bad = exported.replace(
        'largest_envelope = "16 MiB"', 'largest_envelope = "80 MiB"\n[quotas.countries.NZL]\nburst = -1'
    )
    r = world.client.post(
        "/v1/admin/policy/plan",
        content=bad,
        headers={**world.auth(ADMIN), "Content-Type": "application/toml"},
    )
    body = assert_problem(r, 422, "invalid-policy")
    assert body["errors"] == ["quotas.countries.NZL.burst: Input should be greater than or equal to 1"]
    bad = exported.replace('largest_envelope = "16 MiB"', 'largest_envelope = "80 MiB"')
    r = world.client.put(
        "/v1/admin/policy", content=bad, headers={**world.auth(ADMIN), "Content-Type": "application/toml"}
    )
    (error,) = assert_problem(r, 422, "invalid-policy")["errors"]
    assert error.startswith("quotas.largest_envelope: 80 MiB is outside 1 B .. 66 MiB")

    good = (
        exported.replace("long_polls = 20", "long_polls = 5") + "\n[quotas.countries.NZL]\nlong_polls = 1\n"
    )
    r = world.client.post(
        "/v1/admin/policy/plan",
        content=good,
        headers={**world.auth(ADMIN), "Content-Type": "application/toml"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["changes"] == [
        "quotas: long_polls 20 -> 5",
        "quotas of NZL: long_polls 20 (default) -> 1",
    ]
    r = world.client.put(
        "/v1/admin/policy", content=good, headers={**world.auth(ADMIN), "Content-Type": "application/toml"}
    )
    assert r.status_code == 200 and r.json()["version"] is not None
    again = world.client.get("/v1/admin/policy", headers=world.auth(ADMIN)).text
    assert "[quotas.countries.NZL]\nlong_polls = 1\n" in again and "long_polls = 5\n" in again
