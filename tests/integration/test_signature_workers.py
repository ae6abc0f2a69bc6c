"""Envelope signatures verified in the signature worker processes (broker/services/signatures.py).

The `world` fixture verifies in the request's thread (two processes per test would cost the suite
minutes); these tests run a broker whose checks go through its workers, on both stores, and show
that what the workers decide is what the broker answers: a forged signature or payload is refused
in its place in a batch, a worker that dies is replaced and its envelopes are checked all the
same, and a worker's wrong answer is never taken. The end-to-end tests (tests/e2e) run real
`msmt-broker serve` processes, which use the workers by default on a machine of two cores or more.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.api.deps import BrokerState
from broker.problems import Problem
from broker.services import signatures
from broker.services.signatures import SignaturePool, check_here
from broker.services.submit import Prepared, Unsigned, check_signatures, join_batch
from msmt.core import parse
from tests.integration.conftest import _KEYS, World
from tests.integration.test_inbox_batch import broker

BATCH = "application/vnd.msmt.envelope-batch"


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def forged_signature(data: bytes) -> bytes:
    return flip(data, 9 + len(parse(data).header_bytes) + 100)  # inside the ML-DSA signature


def forged_payload(data: bytes) -> bytes:
    return flip(data, len(data) - 1)  # the ciphertext's last byte: its SHA-256 no longer matches


def jobs_of(envelopes: list[bytes], key: bytes) -> list[signatures.Job]:
    """What the broker sends its workers for these envelopes, each to be checked against `key`."""
    headers = [parse(envelope).header for envelope in envelopes]
    return [
        (e, key, h.originator, h.originator_key_id, h.payload_size, h.payload_sha256)
        for e, h in zip(envelopes, headers, strict=True)
    ]


def pooled(world: World, tmp_path: Path, workers: int = 2) -> Any:
    """A broker on the world's database whose signatures are verified by `workers` processes."""
    return broker(world, tmp_path, signature_workers=workers)


def pool_of(test_client: TestClient) -> SignaturePool:
    state: BrokerState = test_client.app.state.broker  # type: ignore[attr-defined]
    assert state.signatures is not None
    return state.signatures


def post_batch(world: World, test_client: TestClient, envelopes: list[bytes]) -> list[dict[str, Any]]:
    r = test_client.post(
        "/v1/items/batch",
        content=join_batch(envelopes),
        headers={**world.auth("KOR"), "Content-Type": BATCH},
    )
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


@pytest.fixture
def no_checks_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process cannot verify: whatever is verified, the workers verified."""

    def refuse(jobs: Any) -> Any:
        raise AssertionError("verified in the broker's own process")

    monkeypatch.setattr(signatures, "check_here", refuse)


def test_the_workers_verify_and_refuse_forgeries_in_their_place(
    world: World, tmp_path: Path, no_checks_here: None
) -> None:
    envelopes = [world.seal("KOR", ["GBR", "USA"], f"pooled {i}".encode()) for i in range(40)]
    forged = {3: forged_signature, 17: forged_payload, 31: forged_signature, 39: forged_payload}
    for i, forge in forged.items():
        envelopes[i] = forge(envelopes[i])
    with pooled(world, tmp_path) as broker:
        assert len(pool_of(broker).pids()) == 2
        results = post_batch(world, broker, envelopes)
        one = broker.post(
            "/v1/items",
            content=forged_signature(world.seal("KOR", ["GBR"], b"alone")),
            headers={**world.auth("KOR"), "Content-Type": "application/vnd.msmt.envelope"},
        )
        assert one.status_code == 422 and one.json()["type"].endswith(":bad-signature"), one.text
        good = world.seal("KOR", ["GBR"], b"alone, intact")
        r = broker.post(
            "/v1/items",
            content=good,
            headers={**world.auth("KOR"), "Content-Type": "application/vnd.msmt.envelope"},
        )
        assert r.status_code == 201, r.text
    expected = {3: "bad-signature", 17: "payload-mismatch", 31: "bad-signature", 39: "payload-mismatch"}
    assert {
        i: x["problem"]["type"].rsplit(":", 1)[1] for i, x in enumerate(results) if x["status"] != 201
    } == expected
    for i, (envelope, result) in enumerate(zip(envelopes, results, strict=True)):
        if i not in forged:
            assert result["receipt"]["item_id"] == parse(envelope).header.item_id
    assert world.count("items") == 40 - len(forged) + 1


def test_a_worker_that_dies_is_replaced_and_its_envelopes_are_checked_all_the_same(
    world: World, tmp_path: Path
) -> None:
    with pooled(world, tmp_path) as broker:
        pool = pool_of(broker)
        first = pool.pids()
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        for pid in first:  # both gone before anything is sent to them
            deadline = time.monotonic() + 10
            while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
                time.sleep(0.01)
        envelopes = [world.seal("KOR", ["GBR"], f"after a crash {i}".encode()) for i in range(12)]
        envelopes[5] = forged_signature(envelopes[5])
        results = post_batch(world, broker, envelopes)
        assert [x["status"] for x in results] == [422 if i == 5 else 201 for i in range(12)]
        assert results[5]["problem"]["type"].endswith(":bad-signature")
        assert pool.replaced >= 1
        now = pool.pids()
        assert len(now) == 2 and not set(now) & set(first)
        # and the new workers do the work
        envelopes = [world.seal("KOR", ["GBR"], f"later {i}".encode()) for i in range(8)]
        envelopes[2] = forged_payload(envelopes[2])
        results = post_batch(world, broker, envelopes)
        assert [x["status"] for x in results] == [422 if i == 2 else 201 for i in range(8)]


def test_a_wrong_answer_from_a_worker_is_never_taken(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that answers for fewer envelopes than it was sent (or garbage) is replaced, and
    the envelopes are verified here instead: a forged one is still refused."""
    envelopes = [world.seal("KOR", ["GBR"], f"wrong answer {i}".encode()) for i in range(6)]
    envelopes[4] = forged_signature(envelopes[4])
    jobs = jobs_of(envelopes, _KEYS["KOR"].signing.public_key.raw)
    pool = SignaturePool(1)
    try:
        real_send = signatures._Worker.send

        def send_one_fewer(self: Any, sent: Any) -> None:
            real_send(self, sent[:-1])

        monkeypatch.setattr(signatures._Worker, "send", send_one_fewer)
        answers = pool.check(jobs)
        monkeypatch.setattr(signatures._Worker, "send", real_send)
        assert pool.replaced == 1
        assert [type(error).__name__ if error else None for error, _ in answers] == [
            None,
            None,
            None,
            None,
            "BadSignature",
            None,
        ]
        assert [d for _, d in answers] == [d for _, d in check_here(jobs)]
        # the pool goes on with the worker that replaced it
        assert [e is None for e, _ in pool.check(jobs)] == [True, True, True, True, False, True]
        assert pool.replaced == 1
    finally:
        pool.close()
    assert pool.check(jobs[:1])[0][0] is None  # closed: verified here


def test_a_caller_waiting_for_a_worker_is_answered_when_the_pool_closes(world: World) -> None:
    envelope = forged_signature(world.seal("KOR", ["GBR"], b"waiting"))
    pool = SignaturePool(1)
    taken = pool._idle.get()  # the only worker is busy
    answers: list[Any] = []
    waiter = threading.Thread(
        target=lambda: answers.extend(pool.check(jobs_of([envelope], _KEYS["KOR"].signing.public_key.raw)))
    )
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # waiting for a worker
    pool.close()
    waiter.join(10)
    assert not waiter.is_alive()
    assert type(answers[0][0]).__name__ == "BadSignature"  # verified here, not skipped
    assert taken is not None
    taken.close()


def test_the_pool_answers_as_this_process_would(world: World) -> None:
    """Same answers (problem type and detail, or the envelope's digest) from the submit path's
    checks with the workers as with check_here, for envelopes spread over both workers: forged
    signatures, a forged payload (its ciphertext against the header's size and digest, checked in
    the workers too) and a key that is not the one the header names."""
    envelopes = [world.seal("KOR", ["GBR", "JPN"], f"same {i}".encode()) for i in range(20)]
    for i in (0, 7, 19):
        envelopes[i] = forged_signature(envelopes[i])
    envelopes[11] = forged_payload(envelopes[11])
    key = _KEYS["KOR"].signing.public_key.raw
    other = _KEYS["USA"].signing.public_key.raw
    unsigned = [Unsigned(parse(e), e, key) for e in envelopes] + [
        Unsigned(parse(envelopes[1]), envelopes[1], other)
    ]
    now_ms = int(time.time() * 1000)
    pool = SignaturePool(2)
    try:
        pooled_answers = check_signatures(unsigned, now_ms, "api-key", pool.check)
    finally:
        pool.close()
    here = check_signatures(unsigned, now_ms, "api-key", check_here)

    def shape(answers: list[Prepared | Problem]) -> list[tuple[str, str]]:
        return [(a.code, a.detail) if isinstance(a, Problem) else ("stored", a.digest) for a in answers]

    assert shape(pooled_answers) == shape(here)
    refused = {i: a.code for i, a in enumerate(here) if isinstance(a, Problem)}
    assert refused == {
        0: "bad-signature",
        7: "bad-signature",
        11: "payload-mismatch",
        19: "bad-signature",
        20: "unknown-signing-key",
    }


def test_the_workers_check_the_ciphertext_against_the_size_and_digest_they_are_sent(world: World) -> None:
    """The payload check is the workers' (the request's thread no longer hashes the ciphertext,
    which for payloads over 2 KiB would hand back the GIL): an intact envelope sent with another
    digest or size than its ciphertext's is refused as payload-mismatch, a forged signature is
    refused as bad-signature before its payload is looked at, and a payload larger than 2 KiB
    is checked as a small one is."""
    envelopes = [world.seal("KOR", ["GBR"], b"x" * 5000), world.seal("KOR", ["GBR"], b"small")]
    key = _KEYS["KOR"].signing.public_key.raw
    jobs = jobs_of(envelopes, key)
    (data, _, originator, key_id, size, digest) = jobs[0]
    wrong_digest = bytes([digest[0] ^ 1]) + digest[1:]
    (forged_both, *_, forged_size, _) = jobs_of([forged_signature(envelopes[1])], key)[0]
    cases = [
        *jobs,
        (data, key, originator, key_id, size, wrong_digest),
        (data, key, originator, key_id, size + 1, digest),
        (forged_both, key, originator, key_id, forged_size, wrong_digest),
    ]
    pool = SignaturePool(2)
    try:
        answers = pool.check(cases * 3)  # spread over both workers
    finally:
        pool.close()
    names = [type(error).__name__ if error else None for error, _ in answers]
    assert names == [None, None, "PayloadMismatch", "PayloadMismatch", "BadSignature"] * 3
    assert [d for _, d in answers[:2]] == [hashlib.sha256(e).hexdigest() for e in envelopes]
    assert [(type(e).__name__ if e else None, d) for e, d in answers] == [
        (type(e).__name__ if e else None, d) for e, d in check_here(cases * 3)
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="pipe sizes are Linux's (F_SETPIPE_SZ)")
def test_a_workers_share_of_a_part_is_sent_without_waiting_for_the_worker_to_read_it() -> None:
    """Five envelopes of ~23 KB are more than a pipe's default 64 KiB: unwidened, the request's
    thread would wait for one worker to read before it could send the next worker its share."""
    import fcntl

    pool = SignaturePool(1)
    try:
        worker = pool._idle.get()
        assert worker is not None
        assert fcntl.fcntl(worker.stdin.fileno(), fcntl.F_GETPIPE_SZ) >= signatures.PIPE_BYTES
        worker.process.send_signal(signal.SIGSTOP)  # reads nothing until continued
        try:
            share = [(os.urandom(23_000), b"k", "KOR", "k", 1, b"\0" * 32)] * 5
            sent = threading.Thread(target=worker.send, args=(share,), daemon=True)
            sent.start()
            sent.join(5)
            assert not sent.is_alive()  # written whole into the pipe, the worker stopped
        finally:
            worker.process.send_signal(signal.SIGCONT)
        answers = worker.receive(5)
        assert [type(error).__name__ for error, _ in answers] == ["MalformedEnvelope"] * 5
        pool._idle.put(worker)
    finally:
        pool.close()
