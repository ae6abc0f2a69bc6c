"""The tlog-witness (c2sp.org/tlog-witness): `Witness.add_checkpoint` on a real SQLite state."""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from msmt.core import errors
from msmt.core.merkle import EMPTY_ROOT, MemoryTree
from msmt.core.note import (
    Checkpoint,
    Ed25519CosignatureVerifier,
    Ed25519Cosigner,
    Ed25519NoteSigner,
    MLDSA44CosignatureVerifier,
    MLDSA44Cosigner,
    MLDSA65NoteSigner,
    NoteSignature,
    format_note,
    open_checkpoint,
    open_note,
    parse_signature_lines,
    verifier_from_vkey,
)
from msmt.witness import (
    CONTENT_TYPE_SIZE,
    Witness,
    WitnessConfigError,
    WitnessResponse,
    WitnessState,
    add_checkpoint_body,
    add_witness_parser,
    generate_witness_key,
    load_config,
    load_cosigner,
    open_witness,
)

ORIGIN = "broker.example/log"
NAME = "witness.kor.example"
NOW = 1_760_000_000
TEXT = "text/plain; charset=utf-8"

LogSigner = Ed25519NoteSigner | MLDSA65NoteSigner


def seed(label: str) -> bytes:
    return hashlib.shake_256(f"msmt witness test {label}".encode()).digest(32)


LOG_ED = Ed25519NoteSigner.from_seed(ORIGIN, seed("log ed25519"))
LOG_PQ = MLDSA65NoteSigner.from_seed(ORIGIN, seed("log mldsa65"))
LOG = (LOG_ED, LOG_PQ)
LOG_VERIFIERS = [LOG_ED.verifier, LOG_PQ.verifier]
ED = Ed25519Cosigner.from_seed(NAME, seed("witness ed25519"))
PQ = MLDSA44Cosigner.from_seed(NAME, seed("witness mldsa44"))


def tree_of(size: int, label: str = "leaf") -> MemoryTree:
    tree = MemoryTree()
    tree.extend(f"{label} {i}".encode() for i in range(size))
    return tree


def checkpoint_of(tree: MemoryTree, size: int | None = None, origin: str = ORIGIN) -> Checkpoint:
    size = tree.size if size is None else size
    return Checkpoint(origin, size, tree.root(size))


def sign(checkpoint: Checkpoint, *signers: LogSigner) -> bytes:
    text = checkpoint.to_text()
    return format_note(text, [s.sign(text) for s in signers or LOG])


def body(old: int, proof: list[bytes], note: bytes) -> bytes:
    return add_checkpoint_body(old, proof, note)


def grow(tree: MemoryTree, old: int, size: int | None = None) -> bytes:
    """A well-formed request from `old` to `size` (default: the whole tree)."""
    size = tree.size if size is None else size
    proof = tree.consistency_proof(old, size) if old else []
    return body(old, proof, sign(checkpoint_of(tree, size)))


@pytest.fixture
def state(tmp_path: Path) -> Iterator[WitnessState]:
    with WitnessState(tmp_path / "witness.sqlite") as opened:
        yield opened


@pytest.fixture
def witness(state: WitnessState) -> Witness:
    return Witness(NAME, [ED, PQ], {ORIGIN: [LOG_ED.verifier, LOG_PQ.verifier]}, state)


def assert_text(response: WitnessResponse, status: int) -> None:
    assert response.status == status, response
    assert response.content_type == TEXT
    assert response.body.endswith(b"\n") and response.body.count(b"\n") == 1


def assert_conflict(response: WitnessResponse, size: int) -> None:
    assert response == WitnessResponse(409, CONTENT_TYPE_SIZE, f"{size}\n".encode())


def cosignatures(response: WitnessResponse) -> list[NoteSignature]:
    assert response.status == 200, response
    assert response.content_type == TEXT
    return parse_signature_lines(response.body.decode())


# --- cosigning -------------------------------------------------------------------------------


def test_first_checkpoint_from_old_zero_is_cosigned_by_both_keys(witness: Witness) -> None:
    tree = tree_of(5)
    note = sign(checkpoint_of(tree))
    response = witness.add_checkpoint(body(0, [], note), NOW)
    lines = cosignatures(response)
    assert [(s.name, s.key_id) for s in lines] == [(NAME, ED.verifier.key_id), (NAME, PQ.verifier.key_id)]
    checkpoint = checkpoint_of(tree)
    assert ED.verifier.verify_cosignature(checkpoint, lines[0].signature) == NOW
    assert PQ.verifier.verify_cosignature(checkpoint, lines[1].signature) == NOW

    # The spec's client: append the answer to the checkpoint and open it with the witness keys.
    ed_verifier = verifier_from_vkey(ED.verifier.vkey)
    pq_verifier = verifier_from_vkey(PQ.verifier.vkey)
    assert isinstance(ed_verifier, Ed25519CosignatureVerifier)
    assert isinstance(pq_verifier, MLDSA44CosignatureVerifier)
    _, verified = open_note(note + response.body, [ed_verifier, pq_verifier], require_all=True)
    assert len(verified) == 2

    latest = witness.state.latest(ORIGIN)
    assert latest is not None
    assert (latest.size, latest.root_hash, latest.updated_s) == (5, tree.root(), NOW)
    # The stored checkpoint carries the log's signatures and the witness's cosignatures.
    opened, _ = open_checkpoint(latest.note, LOG_VERIFIERS)
    assert opened == checkpoint
    open_note(latest.note, [ed_verifier, pq_verifier], require_all=True)


def test_an_ed25519_only_witness_answers_one_line(state: WitnessState) -> None:
    witness = Witness(NAME, ED, {ORIGIN: [LOG_ED.verifier, LOG_PQ.verifier]}, state)
    lines = cosignatures(witness.add_checkpoint(grow(tree_of(3), 0), NOW))
    assert len(lines) == 1
    assert ED.verifier.verify_cosignature(checkpoint_of(tree_of(3)), lines[0].signature) == NOW


def test_growing_with_valid_consistency_proofs(witness: Witness) -> None:
    tree = tree_of(40)
    sizes = [1, 2, 3, 4, 7, 8, 9, 16, 17, 31, 32, 40]
    old = 0
    for step, size in enumerate(sizes, 1):
        response = witness.add_checkpoint(grow(tree, old, size), NOW + step)
        lines = cosignatures(response)
        assert ED.verifier.verify_cosignature(checkpoint_of(tree, size), lines[0].signature) == NOW + step
        latest = witness.state.latest(ORIGIN)
        assert latest is not None and (latest.size, latest.root_hash) == (size, tree.root(size))
        old = size
    assert witness.state.evidence() == []


def test_the_same_checkpoint_again_is_cosigned_again(witness: Witness) -> None:
    tree = tree_of(6)
    assert witness.add_checkpoint(grow(tree, 0), NOW).status == 200
    again = cosignatures(witness.add_checkpoint(grow(tree, 6), NOW + 60))
    assert ED.verifier.verify_cosignature(checkpoint_of(tree), again[0].signature) == NOW + 60


def test_size_zero_with_the_empty_root_is_cosigned(witness: Witness) -> None:
    empty = Checkpoint(ORIGIN, 0, EMPTY_ROOT)
    assert witness.add_checkpoint(body(0, [], sign(empty)), NOW).status == 200
    assert witness.add_checkpoint(grow(tree_of(3), 0), NOW).status == 200


def test_signatures_from_unknown_keys_are_ignored(witness: Witness) -> None:
    tree = tree_of(4)
    text = checkpoint_of(tree).to_text()
    stranger = Ed25519NoteSigner.from_seed("stranger.example", seed("stranger"))
    other_witness = Ed25519Cosigner.from_seed("other.witness", seed("other witness"))
    note = format_note(
        text,
        [
            stranger.sign(text),
            LOG_ED.sign(text),
            other_witness.cosign(checkpoint_of(tree), NOW),
            LOG_PQ.sign(text),
        ],
    )
    assert witness.add_checkpoint(body(0, [], note), NOW).status == 200
    latest = witness.state.latest(ORIGIN)
    assert latest is not None
    names = [line.split(" ")[1] for line in latest.note.decode().split("\n\n")[1].splitlines()]
    assert names == [ORIGIN, ORIGIN, NAME, NAME]  # only the log's verified lines and ours are kept


def test_a_checkpoint_with_extension_lines_gets_no_mldsa44_cosignature(witness: Witness) -> None:
    tree = tree_of(3)
    checkpoint = Checkpoint(ORIGIN, 3, tree.root(), ("extension line",))
    lines = cosignatures(witness.add_checkpoint(body(0, [], sign(checkpoint)), NOW))
    assert [s.key_id for s in lines] == [ED.verifier.key_id]
    assert ED.verifier.verify_cosignature(checkpoint, lines[0].signature) == NOW


# --- every refusal of the spec ------------------------------------------------------------------


def _note() -> bytes:
    return sign(checkpoint_of(tree_of(5)))


HASH = base64.b64encode(bytes(32))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"old 0\n" + _note().replace(b"\n\n", b"\n"), id="no-blank-line-before-checkpoint"),
        pytest.param(b"old 0" + _note(), id="no-newline-after-old"),
        pytest.param(b"\n\n" + _note(), id="no-old-line"),
        pytest.param(b"new 0\n\n" + _note(), id="not-old"),
        pytest.param(b"old  0\n\n" + _note(), id="two-spaces"),
        pytest.param(b"old 00\n\n" + _note(), id="leading-zero"),
        pytest.param(b"old -1\n\n" + _note(), id="negative"),
        pytest.param(b"old +1\n\n" + _note(), id="plus"),
        pytest.param(b"old 1.0\n\n" + _note(), id="not-an-integer"),
        pytest.param(b"old 99999999999999999999\n\n" + _note(), id="old-too-large"),
        pytest.param(b"old 9223372036854775808\n\n" + _note(), id="old-2-63"),
        pytest.param(b"old \xd9\xa3\n\n" + _note(), id="non-ascii-digit"),
        pytest.param(b"old 3\n" + HASH[:-1] + b"\n\n" + _note(), id="proof-not-base64"),
        pytest.param(b"old 3\n" + base64.b64encode(bytes(31)) + b"\n\n" + _note(), id="proof-31-bytes"),
        pytest.param(b"old 3\n" + HASH + b" \n\n" + _note(), id="proof-trailing-space"),
        pytest.param(b"old 3\n" + b"\n".join([HASH] * 64) + b"\n\n" + _note(), id="64-proof-lines"),
        pytest.param(b"old 0\n\nnot a note", id="not-a-note"),
        pytest.param(b"old 0\n\n" + _note().replace(b"\xe2\x80\x94 ", b"- "), id="no-em-dash"),
        pytest.param(b"old 0\n\n\xff" + _note(), id="not-utf8"),
    ],
)
def test_malformed_requests_are_400(witness: Witness, raw: bytes) -> None:
    assert_text(witness.add_checkpoint(raw, NOW), 400)
    assert witness.state.latest(ORIGIN) is None


def test_63_proof_lines_are_allowed_by_the_parser(witness: Witness) -> None:
    # 63 lines pass the format check and then fail as a proof from the (wrong) old size: 409.
    raw = b"old 3\n" + b"\n".join([HASH] * 63) + b"\n\n" + _note()
    assert_conflict(witness.add_checkpoint(raw, NOW), 0)


def test_a_signed_but_malformed_checkpoint_is_400(witness: Witness) -> None:
    text = f"{ORIGIN}\n007\n{base64.b64encode(tree_of(7).root()).decode()}\n"
    note = format_note(text, [LOG_ED.sign(text), LOG_PQ.sign(text)])
    assert_text(witness.add_checkpoint(body(0, [], note), NOW), 400)


def test_old_size_above_the_checkpoint_size_is_400(witness: Witness) -> None:
    tree = tree_of(5)
    assert_text(witness.add_checkpoint(body(6, [], sign(checkpoint_of(tree))), NOW), 400)


def test_unknown_origin_is_404(witness: Witness) -> None:
    other = Ed25519NoteSigner.from_seed("other.example/log", seed("other log"))
    note = sign(checkpoint_of(tree_of(3), origin="other.example/log"), other)
    assert_text(witness.add_checkpoint(body(0, [], note), NOW), 404)
    # The origin decides, not the key name: our log's keys on another origin are still unknown.
    note = sign(checkpoint_of(tree_of(3), origin=ORIGIN + "2"))
    assert_text(witness.add_checkpoint(body(0, [], note), NOW), 404)


def test_no_valid_signature_from_the_trusted_keys_is_403(witness: Witness) -> None:
    checkpoint = checkpoint_of(tree_of(5))
    text = checkpoint.to_text()
    impostor_ed = Ed25519NoteSigner.from_seed(ORIGIN, seed("impostor"))
    cases = {
        "unknown key with the log's name": sign(checkpoint, impostor_ed),
        "only the Ed25519 key": sign(checkpoint, LOG_ED),
        "only the ML-DSA-65 key": sign(checkpoint, LOG_PQ),
    }
    for signer in LOG:
        line = signer.sign(text)
        broken = NoteSignature(line.name, line.key_id, bytes([line.signature[0] ^ 1]) + line.signature[1:])
        others = [s.sign(text) for s in LOG if s is not signer]
        cases[f"a failing signature of {type(signer).__name__}"] = format_note(text, [broken, *others])
    other_text = checkpoint_of(tree_of(6)).to_text()
    cases["signatures over another checkpoint"] = format_note(
        text, [LOG_ED.sign(other_text), LOG_PQ.sign(other_text)]
    )
    for name, note in cases.items():
        response = witness.add_checkpoint(body(0, [], note), NOW)
        assert response.status == 403, name
        assert_text(response, 403)
    assert witness.state.latest(ORIGIN) is None


def test_old_size_other_than_the_last_cosigned_is_409_with_that_size(witness: Witness) -> None:
    tree = tree_of(20)
    assert_conflict(witness.add_checkpoint(grow(tree, 5, 8), NOW), 0)  # nothing cosigned yet
    assert witness.add_checkpoint(grow(tree, 0, 8), NOW).status == 200
    assert_conflict(witness.add_checkpoint(grow(tree, 0, 12), NOW), 8)  # a client without state
    assert_conflict(witness.add_checkpoint(grow(tree, 5, 12), NOW), 8)  # a stale client
    assert_conflict(witness.add_checkpoint(grow(tree, 9, 12), NOW), 8)
    assert witness.add_checkpoint(grow(tree, 8, 12), NOW).status == 200
    assert_conflict(witness.add_checkpoint(grow(tree, 8, 20), NOW), 12)
    assert witness.state.evidence() == []


def test_a_proof_for_old_size_zero_is_422(witness: Witness) -> None:
    tree = tree_of(5)
    note = sign(checkpoint_of(tree))
    assert_text(witness.add_checkpoint(body(0, [tree.root(5)], note), NOW), 422)
    assert witness.state.latest(ORIGIN) is None
    assert witness.state.evidence() == []  # a client's mistake, not the log's


def test_size_zero_with_another_root_is_422(witness: Witness) -> None:
    note = sign(Checkpoint(ORIGIN, 0, tree_of(1).root()))
    assert_text(witness.add_checkpoint(body(0, [], note), NOW), 422)
    assert witness.state.latest(ORIGIN) is None
    assert [e.reason for e in witness.state.evidence()] == [
        "a checkpoint of size 0 must have the root hash of the empty tree"
    ]


def test_a_proof_that_does_not_verify_is_422_and_kept_as_evidence(witness: Witness) -> None:
    tree = tree_of(13)
    assert witness.add_checkpoint(grow(tree, 0, 6), NOW).status == 200
    proof = tree.consistency_proof(6, 13)
    note = sign(checkpoint_of(tree))
    bad_proofs = {
        "flipped byte": [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]],
        "missing hash": proof[:-1],
        "extra hash": [*proof, proof[0]],
        "empty": [],
        "proof for other sizes": tree.consistency_proof(5, 13),
    }
    for name, bad in bad_proofs.items():
        response = witness.add_checkpoint(body(6, bad, note), NOW)
        assert response.status == 422, name
        assert_text(response, 422)
    latest = witness.state.latest(ORIGIN)
    assert latest is not None and latest.size == 6
    evidence = witness.state.evidence(ORIGIN)
    # One row per signed checkpoint, however often it is sent.
    assert len(evidence) == 1
    assert evidence[0].origin == ORIGIN and evidence[0].received_s == NOW
    assert evidence[0].body == body(6, bad_proofs["flipped byte"], note)
    assert evidence[0].reason.startswith("the consistency proof does not verify")
    assert witness.add_checkpoint(body(6, proof, note), NOW).status == 200


def test_a_non_empty_proof_between_equal_sizes_is_422(witness: Witness) -> None:
    tree = tree_of(6)
    assert witness.add_checkpoint(grow(tree, 0), NOW).status == 200
    note = sign(checkpoint_of(tree))
    assert_text(witness.add_checkpoint(body(6, [tree.root()], note), NOW), 422)
    assert witness.state.evidence() == []


def test_a_split_view_is_refused_and_kept_as_evidence(witness: Witness) -> None:
    honest, fork = tree_of(8), tree_of(8, "fork")
    assert witness.add_checkpoint(grow(honest, 0), NOW).status == 200
    forked_note = sign(checkpoint_of(fork))
    # Same size, other root, from the right old size: 422.
    response = witness.add_checkpoint(body(8, [], forked_note), NOW + 1)
    assert_text(response, 422)
    assert b"second root for size 8" in response.body
    evidence = witness.state.evidence(ORIGIN)
    assert [(e.received_s, e.reason) for e in evidence] == [(NOW + 1, "a second root for size 8")]
    # The kept request is the log's own signature on the fork: proof for anyone.
    kept = evidence[0].body.split(b"\n\n", 1)[1]
    assert open_checkpoint(kept, LOG_VERIFIERS)[0] == checkpoint_of(fork)
    latest = witness.state.latest(ORIGIN)
    assert latest is not None and latest.root_hash == honest.root()


def test_a_split_view_from_another_old_size_is_409_and_kept_as_evidence(witness: Witness) -> None:
    honest, fork = tree_of(8), tree_of(8, "fork")
    assert witness.add_checkpoint(grow(honest, 0), NOW).status == 200
    assert_conflict(witness.add_checkpoint(grow(fork, 0), NOW + 2), 8)
    assert_conflict(witness.add_checkpoint(grow(fork, 4), NOW + 3), 8)
    evidence = witness.state.evidence()
    assert [(e.received_s, e.reason) for e in evidence] == [(NOW + 2, "a second root for size 8")]
    # A 409 for a checkpoint of another size is no evidence of anything.
    assert_conflict(witness.add_checkpoint(grow(fork, 0, 5), NOW), 8)
    assert len(witness.state.evidence()) == 1


def test_a_rebuilt_log_that_dropped_a_leaf_is_refused(witness: Witness) -> None:
    original = tree_of(10)
    assert witness.add_checkpoint(grow(original, 0), NOW).status == 200
    # The log is rebuilt without leaf 3 and grows on: its proofs come from the new tree.
    rebuilt = MemoryTree()
    rebuilt.extend(f"leaf {i}".encode() for i in range(13) if i != 3)
    assert rebuilt.size == 12
    response = witness.add_checkpoint(grow(rebuilt, 10), NOW + 5)
    assert_text(response, 422)
    # Nor can it present its own size-10 tree as the same one.
    assert_text(witness.add_checkpoint(body(10, [], sign(checkpoint_of(rebuilt, 10))), NOW + 6), 422)
    latest = witness.state.latest(ORIGIN)
    assert latest is not None and (latest.size, latest.root_hash) == (10, original.root())
    assert [e.reason.split(":")[0] for e in witness.state.evidence()] == [
        "the consistency proof does not verify",
        "a second root for size 10",
    ]
    # The honest log still gets its cosignature.
    original.extend([b"leaf 10", b"leaf 11"])
    assert witness.add_checkpoint(grow(original, 10), NOW + 7).status == 200


# --- durability and atomicity ---------------------------------------------------------------------


def test_state_survives_reopening_and_never_goes_backwards(tmp_path: Path) -> None:
    path = tmp_path / "witness.sqlite"
    tree = tree_of(30)
    logs = {ORIGIN: [LOG_ED.verifier, LOG_PQ.verifier]}
    with WitnessState(path) as state:
        witness = Witness(NAME, [ED], logs, state)
        assert witness.add_checkpoint(grow(tree, 0, 10), NOW).status == 200
        assert witness.add_checkpoint(grow(tree, 10, 20), NOW).status == 200
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    with WitnessState(path) as state:
        witness = Witness(NAME, [ED, PQ], logs, state)
        assert_conflict(witness.add_checkpoint(grow(tree, 0, 25), NOW), 20)
        assert_conflict(witness.add_checkpoint(grow(tree, 10, 15), NOW), 20)
        assert_text(witness.add_checkpoint(body(20, [], sign(checkpoint_of(tree, 15))), NOW), 400)
        latest = state.latest(ORIGIN)
        assert latest is not None and latest.size == 20
        assert witness.add_checkpoint(grow(tree, 20, 30), NOW).status == 200
    with WitnessState(path) as state:
        latest = state.latest(ORIGIN)
        assert latest is not None and (latest.size, latest.root_hash) == (30, tree.root())


def test_a_failed_transaction_changes_nothing(state: WitnessState) -> None:
    tree = tree_of(4)
    with pytest.raises(RuntimeError), state.transaction() as tx:
        tx.store(checkpoint_of(tree), b"note", NOW)
        raise RuntimeError("crash before commit")
    assert state.latest(ORIGIN) is None


def test_concurrent_conflicting_checkpoints_from_the_same_old_size(tmp_path: Path) -> None:
    path = tmp_path / "witness.sqlite"
    logs = {ORIGIN: [LOG_ED.verifier, LOG_PQ.verifier]}
    leaves = [f"leaf {i}".encode() for i in range(5)]
    with WitnessState(path) as state:
        first = MemoryTree()
        first.extend(leaves)
        assert Witness(NAME, [ED], logs, state).add_checkpoint(grow(first, 0), NOW).status == 200

    # Each thread has its own connection: the check-and-write must hold across connections.
    states = [WitnessState(path) for _ in range(4)]
    try:
        witnesses = [Witness(NAME, [ED], logs, s) for s in states]
        for round_number in range(5):
            branches = [
                [*leaves, *(f"round {round_number} branch {b} leaf {i}".encode() for i in range(b + 1))]
                for b in range(len(witnesses))
            ]
            requests = []
            for branch in branches:
                tree = MemoryTree()
                tree.extend(branch)
                requests.append(grow(tree, len(leaves)))
            barrier = threading.Barrier(len(witnesses))
            results: dict[int, WitnessResponse] = {}

            def submit(
                index: int,
                request: bytes,
                barrier: threading.Barrier = barrier,
                results: dict[int, WitnessResponse] = results,
            ) -> None:
                barrier.wait()
                results[index] = witnesses[index].add_checkpoint(request, NOW + index)

            threads = [
                threading.Thread(target=submit, args=(i, request)) for i, request in enumerate(requests)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            statuses = [results[i].status for i in range(len(witnesses))]
            assert statuses.count(200) == 1, statuses
            assert statuses.count(409) == len(witnesses) - 1, statuses
            leaves = branches[statuses.index(200)]
            for index, response in results.items():
                if response.status == 409:
                    assert response.body == f"{len(leaves)}\n".encode(), index
            latest = states[0].latest(ORIGIN)
            assert latest is not None and latest.size == len(leaves)
    finally:
        for opened in states:
            opened.close()


def test_threads_sharing_one_state_also_get_exactly_one_200(witness: Witness) -> None:
    base = tree_of(7)
    assert witness.add_checkpoint(grow(base, 0), NOW).status == 200
    requests = []
    for branch in range(6):
        tree = tree_of(7)
        tree.extend(f"branch {branch} leaf {i}".encode() for i in range(3))
        requests.append(grow(tree, 7))
    barrier = threading.Barrier(len(requests))
    statuses: list[int] = []
    lock = threading.Lock()

    def submit(request: bytes) -> None:
        barrier.wait()
        status = witness.add_checkpoint(request, NOW).status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=submit, args=(r,)) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [200] + [409] * 5
    # The losers showed other roots for the size the winner set: each is evidence of a fork.
    assert len(witness.state.evidence()) == 5


# --- construction ------------------------------------------------------------------------------


def test_witness_construction_is_checked(state: WitnessState) -> None:
    logs = {ORIGIN: [LOG_ED.verifier]}
    with pytest.raises(ValueError, match="named"):
        Witness("another.name", [ED], logs, state)
    with pytest.raises(ValueError, match="cosigner"):
        Witness(NAME, [], logs, state)
    with pytest.raises(ValueError, match="log"):
        Witness(NAME, [ED], {}, state)
    with pytest.raises(ValueError, match="no verifier"):
        Witness(NAME, [ED], {ORIGIN: []}, state)
    with pytest.raises(ValueError, match="timestamp"):
        Witness(NAME, [ED], logs, state).add_checkpoint(grow(tree_of(1), 0), 0)


# --- keys and configuration ----------------------------------------------------------------------


def test_generate_witness_key_writes_a_private_seed_file(tmp_path: Path) -> None:
    path = tmp_path / "w.key"
    vkey = generate_witness_key(NAME, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    verifier = verifier_from_vkey(vkey)
    assert isinstance(verifier, Ed25519CosignatureVerifier)
    assert vkey.startswith(NAME + "+")
    cosigner = load_cosigner(NAME, path, "ed25519")
    assert cosigner.verifier.vkey == vkey
    with pytest.raises(errors.KeyFileExists):
        generate_witness_key(NAME, path)
    assert load_cosigner(NAME, path, "ed25519").verifier.vkey == vkey  # untouched

    pq_path = tmp_path / "w-pq.key"
    pq_vkey = generate_witness_key(NAME, pq_path, "mldsa44")
    assert isinstance(verifier_from_vkey(pq_vkey), MLDSA44CosignatureVerifier)
    assert load_cosigner(NAME, pq_path, "mldsa44").verifier.vkey == pq_vkey
    with pytest.raises(WitnessConfigError, match="not an ed25519 key"):
        load_cosigner(NAME, pq_path, "ed25519")

    with pytest.raises(errors.MalformedVerifierKey):
        generate_witness_key("bad name", tmp_path / "bad.key")
    assert not (tmp_path / "bad.key").exists()


def test_key_files_readable_by_others_or_damaged_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.key"
    generate_witness_key(NAME, path)
    path.chmod(0o644)
    with pytest.raises(WitnessConfigError, match="chmod 600"):
        load_cosigner(NAME, path, "ed25519")
    path.chmod(0o600)
    path.write_text("msmt-witness-key ed25519 c2hvcnQ=\n")
    with pytest.raises(WitnessConfigError, match="not a witness key file"):
        load_cosigner(NAME, path, "ed25519")
    with pytest.raises(WitnessConfigError, match="cannot read"):
        load_cosigner(NAME, tmp_path / "missing.key", "ed25519")


def write_config(folder: Path, extra: str = "", logs: str | None = None) -> Path:
    generate_witness_key(NAME, folder / "w.key")
    if logs is None:
        logs = (
            f'[[logs]]\norigin = "{ORIGIN}"\nvkeys = ["{LOG_ED.verifier.vkey}", "{LOG_PQ.verifier.vkey}"]\n'
        )
    path = folder / "witness.toml"
    path.write_text(f'name = "{NAME}"\ned25519_key = "w.key"\nstate = "state.sqlite"\n{extra}\n{logs}')
    return path


def test_load_config_and_open_witness(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, 'port = 9999\nprefix = "/w"'))
    assert config.name == NAME
    assert config.ed25519_key == tmp_path / "w.key" and config.mldsa44_key is None
    assert config.state == tmp_path / "state.sqlite"
    assert (config.host, config.port, config.prefix, config.max_body_bytes) == (
        "127.0.0.1",
        9999,
        "/w",
        65536,
    )
    assert config.logs == {ORIGIN: (LOG_ED.verifier.vkey, LOG_PQ.verifier.vkey)}
    witness = open_witness(config)
    try:
        assert witness.vkeys == [load_cosigner(NAME, tmp_path / "w.key", "ed25519").verifier.vkey]
        assert witness.add_checkpoint(grow(tree_of(2), 0), NOW).status == 200
    finally:
        witness.state.close()


@pytest.mark.parametrize(
    ("extra", "logs", "message"),
    [
        ("", "", "no log is configured"),
        ("colour = 1", None, "unknown setting"),
        ("port = 70000", None, "'port'"),
        ('prefix = "w"', None, "'prefix'"),
        ('prefix = "/w/"', None, "'prefix'"),
        ("max_body_bytes = 10", None, "max_body_bytes"),
        ("", '[[logs]]\norigin = "x"\nvkeys = []\n', "non-empty list"),
        ("", '[[logs]]\norigin = "x"\nvkeys = ["x+00000000+AAAA"]\n', "is invalid"),
        ("", '[[logs]]\norigin = "x"\n', "exactly 'origin' and 'vkeys'"),
        ("", f'[[logs]]\norigin = "{ORIGIN}"\nvkeys = ["{LOG_ED.verifier.vkey}"]\n' * 2, "configured twice"),
        ("name = 2", None, "not valid TOML"),  # a repeated key
    ],
)
def test_invalid_configs_are_refused_with_a_sentence(
    tmp_path: Path, extra: str, logs: str | None, message: str
) -> None:
    with pytest.raises(WitnessConfigError, match=message):
        load_config(write_config(tmp_path, extra, logs))


def test_missing_config_and_bad_name(tmp_path: Path) -> None:
    with pytest.raises(WitnessConfigError, match="cannot read the witness configuration"):
        load_config(tmp_path / "absent.toml")
    path = tmp_path / "bad.toml"
    path.write_text('name = "has space"\ned25519_key = "k"\nstate = "s"\n')
    with pytest.raises(WitnessConfigError, match="not a valid key name"):
        load_config(path)


# --- command line ---------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="msmt")
    add_witness_parser(root.add_subparsers(dest="command", required=True))
    return root


def run(*argv: str) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


def test_every_witness_option_has_help() -> None:
    witness_parser = parser()._subparsers._group_actions[0].choices["witness"]
    actions = witness_parser._subparsers._group_actions[0]
    assert {a.dest: bool(a.help) for a in actions._choices_actions} == {"init": True, "serve": True}
    for sub in actions.choices.values():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, action.dest


def test_init_writes_key_and_config_and_prints_the_vkey(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "w" / "witness.toml"
    vkeys = [LOG_ED.verifier.vkey, LOG_PQ.verifier.vkey]
    argv = ["witness", "init", NAME, "--config", str(config), "--mldsa44", "--origin", ORIGIN]
    assert run(*argv, *(x for v in vkeys for x in ("--log-vkey", v))) == 0
    out, err = capsys.readouterr()
    printed = out.split()
    assert len(printed) == 2
    assert isinstance(verifier_from_vkey(printed[0]), Ed25519CosignatureVerifier)
    assert isinstance(verifier_from_vkey(printed[1]), MLDSA44CosignatureVerifier)
    assert "Give the verifier key(s) above to the members." in err
    for key in ("witness-ed25519.key", "witness-mldsa44.key"):
        assert stat.S_IMODE(os.stat(config.parent / key).st_mode) == 0o600
    loaded = load_config(config)
    assert loaded.logs == {ORIGIN: tuple(vkeys)}
    witness = open_witness(loaded)
    try:
        assert witness.vkeys == printed
        lines = cosignatures(witness.add_checkpoint(grow(tree_of(3), 0), NOW))
        assert len(lines) == 2
    finally:
        witness.state.close()
    # Never overwrites.
    assert run("witness", "init", NAME, "--config", str(config)) == 1
    assert "already exists" in capsys.readouterr().err


def test_init_without_a_log_writes_a_skeleton_that_serve_refuses_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "witness.toml"
    assert run("witness", "init", NAME, "--config", str(config)) == 0
    capsys.readouterr()
    assert run("witness", "serve", "--config", str(config)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no log is configured" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_serve_with_a_missing_or_broken_config_says_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("witness", "serve", "--config", str(tmp_path / "absent.toml")) == 1
    err = capsys.readouterr().err
    assert "cannot read the witness configuration" in err and err.count("\n") == 1
    (tmp_path / "broken.toml").write_text("name = [")
    assert run("witness", "serve", "--config", str(tmp_path / "broken.toml")) == 1
    err = capsys.readouterr().err
    assert "not valid TOML" in err and "Traceback" not in err


def test_init_refuses_bad_names_and_vkeys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("witness", "init", "bad name", "--config", str(tmp_path / "a.toml")) == 1
    assert "not a valid key name" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    argv = ("witness", "init", NAME, "--config", str(tmp_path / "b.toml"), "--origin", ORIGIN)
    assert run(*argv, "--log-vkey", "nonsense") == 1
    assert "invalid" in capsys.readouterr().err
    assert run("witness", "init", NAME, "--log-vkey", LOG_ED.verifier.vkey) == 1
    assert "--origin" in capsys.readouterr().err
