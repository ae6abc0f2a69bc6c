"""The frozen transparency-log vectors: every later version must accept and reject them.

The files are only verified here, never regenerated (the log's ML-DSA-65 line and the ML-DSA-44
cosignature are randomised, so a new run of `tests/vectors/generate_log.py` would give other
notes). See docs/protocol.md, section 14.12.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from msmt.core import canonical, errors, logleaf, parse
from msmt.core.merkle import EMPTY_ROOT, MemoryTree, leaf_hash, verify_consistency, verify_inclusion
from msmt.core.note import (
    Checkpoint,
    Ed25519Cosigner,
    MLDSA44Cosigner,
    cosignature_v1_message,
    format_note,
    open_checkpoint,
    parse_note,
    subtree_v1_message,
    verifier_from_vkey,
    verify_cosignatures,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
LOG = VECTORS / "log-v1"


def _load(name: str) -> Any:
    return json.loads((LOG / name).read_text(encoding="utf-8"))


KEYS: dict[str, Any] = _load("keys.json")
ROOT_EXTRA: dict[str, Any] = _load("root-extra.json")
LEAVES: list[dict[str, Any]] = _load("leaves.json")["leaves"]
TREE: dict[str, Any] = _load("tree.json")
CHECKPOINTS: dict[str, Any] = _load("checkpoints.json")
BY_NAME = {c["name"]: c for c in CHECKPOINTS["checkpoints"]}
NEGATIVES: list[dict[str, Any]] = [
    json.loads(p.read_text(encoding="utf-8")) for p in sorted((LOG / "negative").glob("*.json"))
]
ORIGIN = KEYS["log"]["origin"]
DATA = [leaf["leaf"].encode("utf-8") for leaf in LEAVES]
LOG_CODES = {
    cls.code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.LogError)
}
REQUIRED_NEGATIVES = {
    "note-without-mldsa-line": "unverified-note",
    "wrong-origin": "malformed-checkpoint",
    "one-cosignature-threshold-2": "not-witnessed",
    "leaf-other-inbox-number": "log-leaf-mismatch",
    "leaf-recipient-dropped": "log-leaf-mismatch",
    "rollback-smaller": "log-rollback",
    "split-view-same-size": "log-rollback",
    "bad-inclusion-proof": "invalid-inclusion-proof",
    "bad-consistency-proof": "invalid-consistency-proof",
    "note-ed25519-line-flipped": "bad-note-signature",
}


def identity() -> logleaf.LogIdentity:
    pinned = logleaf.LogIdentity.from_root_extra(ROOT_EXTRA)
    assert pinned is not None
    return pinned


def hashes(hex_list: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hex_list]


# --- keys and the pinned log -------------------------------------------------------------------


def test_log_keys_derive_from_their_seeds() -> None:
    log = KEYS["log"]
    assert (
        hashlib.shake_256(KEYS["label"].format(what=log["seed_label"]).encode()).hexdigest(64) == log["seed"]
    )
    signer = logleaf.LogSigner.from_seed(ORIGIN, bytes.fromhex(log["seed"]))
    assert signer.origin == ORIGIN
    assert list(signer.identity().vkeys) == log["vkeys"]
    # the first key is Ed25519 (type 0x01), the second the ML-DSA-65 note type, both named by the origin
    ed, pq = (verifier_from_vkey(v) for v in log["vkeys"])
    assert (ed.name, pq.name) == (ORIGIN, ORIGIN)
    assert type(ed).__name__ == "Ed25519NoteVerifier" and type(pq).__name__ == "MLDSA65NoteVerifier"


def test_witness_keys_derive_from_their_seeds() -> None:
    for witness in KEYS["witnesses"]:
        label = KEYS["label"].format(what=witness["seed_label"])
        assert hashlib.shake_256(label.encode()).hexdigest(32) == witness["seed"]
        maker = Ed25519Cosigner if witness["algorithm"] == "ed25519" else MLDSA44Cosigner
        cosigner = maker.from_seed(witness["name"], bytes.fromhex(witness["seed"]))
        assert cosigner.verifier.vkey == witness["vkey"]


def test_the_root_pins_the_log_and_its_witnesses() -> None:
    log = ROOT_EXTRA["log"]
    assert set(ROOT_EXTRA) == {"log"}
    assert set(log) == {"origin", "vkeys", "witnesses", "threshold"}
    pinned = identity()
    assert pinned.origin == ORIGIN and list(pinned.vkeys) == KEYS["log"]["vkeys"]
    in_root = [w for w in KEYS["witnesses"] if w["in_root"]]
    assert [{"country": c, "vkey": v} for c, v in pinned.witnesses] == [
        {"country": w["country"], "vkey": w["vkey"]} for w in in_root
    ]
    assert pinned.threshold == 2
    assert pinned.to_root_extra() == log
    assert canonical.decode(canonical.encode(ROOT_EXTRA)) == ROOT_EXTRA  # fits the JSON profile
    assert {country for country, _ in pinned.cosigners().values()} == {"JPN", "KOR", "USA"}


# --- leaves ------------------------------------------------------------------------------------

ENCODERS: dict[str, Callable[[Mapping[str, Any]], bytes]] = {
    "item": lambda f: logleaf.item_leaf(
        f["item_id"],
        f["envelope_sha256"],
        f["originator"],
        {d["recipient"]: d["seq"] for d in f["deliveries"]},
    ),
    "directory": lambda f: logleaf.directory_leaf(f["seq"], f["entry_sha256"]),
    "policy": lambda f: logleaf.policy_leaf(f["version"], f["document_sha256"]),
}


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda leaf: f"{leaf['index']}-{leaf['type']}")
def test_leaf_encoding_is_canonical_and_hashes_as_listed(leaf: dict[str, Any]) -> None:
    data = leaf["leaf"].encode("utf-8")
    assert ENCODERS[leaf["type"]](leaf["fields"]) == data  # re-encodes to the identical bytes
    value = canonical.decode(data)
    assert canonical.encode(value) == data
    assert value == {"type": leaf["type"], **leaf["fields"]}  # exactly these members
    assert logleaf.hash_of(data).hex() == leaf["leaf_hash"]
    assert hashlib.sha256(b"\x00" + data).hexdigest() == leaf["leaf_hash"]


@pytest.mark.parametrize("leaf", [v for v in LEAVES if v["type"] == "item"], ids=lambda v: v["envelope"])
def test_item_leaf_describes_its_envelope(leaf: dict[str, Any]) -> None:
    envelope = (VECTORS / leaf["envelope"]).read_bytes()
    header = parse(envelope).header
    fields = leaf["fields"]
    assert fields["envelope_sha256"] == hashlib.sha256(envelope).hexdigest()
    assert (fields["item_id"], fields["originator"]) == (header.item_id, header.originator)
    recipients = [d["recipient"] for d in fields["deliveries"]]
    assert recipients == sorted(header.recipient_countries)
    data = leaf["leaf"].encode("utf-8")
    seqs = {d["recipient"]: d["seq"] for d in fields["deliveries"]}
    assert logleaf.parse_item_leaf(data) == (
        header.item_id,
        fields["envelope_sha256"],
        header.originator,
        seqs,
    )
    check = {
        "item_id": header.item_id,
        "envelope": envelope,
        "originator": header.originator,
        "recipients": header.recipient_countries,
    }
    logleaf.check_item_leaf(data, own=None, **check)  # as the originator
    for recipient, seq in seqs.items():
        logleaf.check_item_leaf(data, own=(recipient, seq), **check)  # as each recipient
    # a caller that hashed the envelope already passes the digest instead: the same answer
    hashed = {**check, "envelope": None, "envelope_sha256": logleaf.envelope_digest(envelope)}
    logleaf.check_item_leaf(data, own=None, **hashed)
    with pytest.raises(errors.LogError, match="other envelope bytes"):
        logleaf.check_item_leaf(data, own=None, **{**hashed, "envelope_sha256": "0" * 64})
    with pytest.raises(TypeError):
        logleaf.check_item_leaf(data, own=None, **{**check, "envelope_sha256": hashed["envelope_sha256"]})


def test_directory_and_policy_leaves_name_their_documents() -> None:
    for leaf in LEAVES:
        if leaf["type"] == "directory":
            entry = (VECTORS / leaf["entry"]).read_bytes()
            assert hashlib.sha256(entry).hexdigest() == leaf["fields"]["entry_sha256"]
        elif leaf["type"] == "policy":
            digest = hashlib.sha256(leaf["document"].encode("utf-8")).hexdigest()
            assert digest == leaf["fields"]["document_sha256"]


# --- tree and proofs ---------------------------------------------------------------------------


def memory_tree() -> MemoryTree:
    tree = MemoryTree()
    tree.extend(DATA)
    return tree


def test_roots_of_every_size() -> None:
    tree = memory_tree()
    assert TREE["size"] == len(DATA) == tree.size
    assert [r["size"] for r in TREE["roots"]] == list(range(len(DATA) + 1))
    assert TREE["roots"][0]["root"] == EMPTY_ROOT.hex()
    assert TREE["roots"][1]["root"] == leaf_hash(DATA[0]).hex()
    for entry in TREE["roots"]:
        assert tree.root(entry["size"]).hex() == entry["root"]


def test_inclusion_proofs_of_every_leaf_in_every_tree() -> None:
    tree = memory_tree()
    roots = {r["size"]: bytes.fromhex(r["root"]) for r in TREE["roots"]}
    n = len(DATA)
    assert len(TREE["inclusion"]) == n * (n + 1) // 2
    for case in TREE["inclusion"]:
        index, size, proof = case["index"], case["size"], hashes(case["proof"])
        verify_inclusion(leaf_hash(DATA[index]), index, size, proof, roots[size])
        assert tree.inclusion_proof(index, size) == proof


def test_consistency_proofs_between_every_pair_of_sizes() -> None:
    tree = memory_tree()
    roots = {r["size"]: bytes.fromhex(r["root"]) for r in TREE["roots"]}
    n = len(DATA)
    assert len(TREE["consistency"]) == n * (n + 1) // 2
    for case in TREE["consistency"]:
        first, second, proof = case["first"], case["second"], hashes(case["proof"])
        verify_consistency(first, second, proof, roots[first], roots[second])
        assert tree.consistency_proof(first, second) == proof
        assert (first == second) == (proof == [])
    with pytest.raises(errors.InvalidConsistencyProof):  # from the empty tree: refused (14.3)
        verify_consistency(0, n, [], EMPTY_ROOT, roots[n])


# --- checkpoints and cosignatures ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_checkpoint_note_and_its_signatures(name: str) -> None:
    doc = BY_NAME[name]
    checkpoint = Checkpoint.parse(doc["text"])
    roots = {r["size"]: r["root"] for r in TREE["roots"]}
    assert (checkpoint.origin, checkpoint.size, checkpoint.root_hash.hex()) == (
        ORIGIN,
        doc["size"],
        doc["root_hash"],
    )
    assert checkpoint.root_hash.hex() == roots[doc["size"]] and checkpoint.extensions == ()
    assert checkpoint.to_text() == doc["text"]

    # the log's Ed25519 line is deterministic: re-made from the seed, byte for byte
    signer = logleaf.LogSigner.from_seed(ORIGIN, bytes.fromhex(KEYS["log"]["seed"]))
    assert signer.ed25519.sign(doc["text"]).to_line() == doc["ed25519_line"]
    assert doc["note"].startswith(doc["text"] + "\n" + doc["ed25519_line"])
    note = doc["note"].encode("utf-8")
    text, lines = parse_note(note)
    assert text == doc["text"] and len(lines) == 2
    opened, _ = open_checkpoint(note, identity().verifiers(), origin=ORIGIN)
    assert opened == checkpoint
    # without witnesses in the pin the log's two lines suffice; with them they do not
    log_only = logleaf.LogIdentity(ORIGIN, identity().vkeys)
    assert logleaf.accept_checkpoint(log_only, note, None, None) == checkpoint
    with pytest.raises(errors.NotWitnessed):
        logleaf.accept_checkpoint(identity(), note, None, None)

    # cosignatures: the Ed25519 ones are deterministic at their fixed timestamps
    assert doc["cosigned_note"] == doc["note"] + "".join(c["line"] for c in doc["cosignatures"])
    keys = {w["country"]: w for w in KEYS["witnesses"]}
    for cosignature in doc["cosignatures"]:
        witness = keys[cosignature["country"]]
        assert cosignature["timestamp"] == witness["timestamp"]
        if cosignature["algorithm"] == "ed25519":
            message = cosignature_v1_message(doc["text"], cosignature["timestamp"])
            cosigner = Ed25519Cosigner.from_seed(witness["name"], bytes.fromhex(witness["seed"]))
            assert cosigner.cosign(checkpoint, cosignature["timestamp"]).to_line() == cosignature["line"]
        else:
            message = subtree_v1_message(
                witness["name"], cosignature["timestamp"], ORIGIN, 0, checkpoint.size, checkpoint.root_hash
            )
        assert message.hex() == cosignature["signed_message_hex"]
    cosigned = doc["cosigned_note"].encode("utf-8")
    _, all_lines = parse_note(cosigned)
    valid = verify_cosignatures(checkpoint, all_lines, [v for _, v in identity().cosigners().values()])
    assert valid == {c["name"]: c["timestamp"] for c in doc["cosignatures"]}
    assert logleaf.witnessed_by(identity(), checkpoint, all_lines) == {"JPN", "KOR", "USA"}
    assert logleaf.accept_checkpoint(identity(), cosigned, None, None) == checkpoint


def test_a_client_follows_the_log_from_size_4_to_size_7() -> None:
    sequence = CHECKPOINTS["sequence"]
    first = BY_NAME[sequence["first"]]["cosigned_note"].encode("utf-8")
    second = BY_NAME[sequence["second"]]["cosigned_note"].encode("utf-8")
    proof = hashes(sequence["consistency"])
    assert proof == hashes(
        next(c for c in TREE["consistency"] if (c["first"], c["second"]) == (4, 7))["proof"]
    )
    cp4 = logleaf.accept_checkpoint(identity(), first, None, None)
    cp7 = logleaf.accept_checkpoint(identity(), second, cp4, proof)
    assert logleaf.accept_checkpoint(identity(), second, cp7, None) == cp7  # the same again
    assert logleaf.accept_checkpoint(identity(), second, cp7, []) == cp7
    inclusion = {(c["index"], c["size"]): hashes(c["proof"]) for c in TREE["inclusion"]}
    for index, data in enumerate(DATA):
        logleaf.check_inclusion(data, index, cp7, inclusion[(index, 7)])
        if index < 4:
            logleaf.check_inclusion(data, index, cp4, inclusion[(index, 4)])


# --- negative vectors --------------------------------------------------------------------------


def run_checkpoint(vector: Mapping[str, Any]) -> None:
    pinned = logleaf.LogIdentity.from_root_extra(vector["extra"])
    assert pinned is not None
    previous = None
    if vector["previous"] is not None:  # what the client had accepted: itself valid
        previous = logleaf.accept_checkpoint(pinned, vector["previous"].encode("utf-8"), None, None)
    proof = None if vector["consistency"] is None else hashes(vector["consistency"])
    logleaf.accept_checkpoint(pinned, vector["note"].encode("utf-8"), previous, proof)


def run_item_leaf(vector: Mapping[str, Any]) -> None:
    envelope = (VECTORS / vector["envelope"]).read_bytes()
    header = parse(envelope).header
    own = None if vector["own"] is None else (str(vector["own"][0]), int(vector["own"][1]))
    leaf = vector["leaf"].encode("utf-8")
    assert canonical.encode(canonical.decode(leaf)) == leaf  # well formed: only its content is wrong
    check = {
        "item_id": header.item_id,
        "originator": header.originator,
        "recipients": header.recipient_countries,
        "own": own,
    }
    # refused alike whether the caller passes the envelope or its digest (as Client.receive does)
    with pytest.raises(errors.LogError) as by_digest:
        logleaf.check_item_leaf(leaf, envelope_sha256=logleaf.envelope_digest(envelope), **check)
    try:
        logleaf.check_item_leaf(leaf, envelope=envelope, **check)
    except errors.LogError as by_bytes:
        assert (by_bytes.code, by_bytes.detail) == (by_digest.value.code, by_digest.value.detail)
        raise
    raise AssertionError(f"refused by digest ({by_digest.value.code}) but not by the envelope's bytes")


def run_inclusion(vector: Mapping[str, Any]) -> None:
    pinned = logleaf.LogIdentity.from_root_extra(vector["extra"])
    assert pinned is not None
    checkpoint = logleaf.accept_checkpoint(pinned, vector["note"].encode("utf-8"), None, None)
    logleaf.check_inclusion(
        vector["leaf"].encode("utf-8"), vector["index"], checkpoint, hashes(vector["proof"])
    )


RUNNERS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "checkpoint": run_checkpoint,
    "item-leaf": run_item_leaf,
    "inclusion": run_inclusion,
}


def test_the_required_negative_vectors_exist() -> None:
    present = {v["name"]: v["error"] for v in NEGATIVES}
    assert {name: present.get(name) for name in REQUIRED_NEGATIVES} == REQUIRED_NEGATIVES
    assert all(v["error"] in LOG_CODES for v in NEGATIVES)
    assert all(v["check"] in RUNNERS for v in NEGATIVES)


@pytest.mark.parametrize("vector", NEGATIVES, ids=lambda v: v["name"])
def test_negative_vector_fails_with_its_code(vector: dict[str, Any]) -> None:
    with pytest.raises(errors.LogError) as caught:
        RUNNERS[vector["check"]](vector)
    assert caught.value.code == vector["error"], caught.value.detail


def test_a_note_needs_both_log_lines_in_any_order() -> None:
    """Line order does not matter; each of the two log keys must have a verified line."""
    doc = BY_NAME["size-7"]
    text, lines = parse_note(doc["note"].encode("utf-8"))
    swapped = format_note(text, list(reversed(lines)))
    assert logleaf.accept_checkpoint(logleaf.LogIdentity(ORIGIN, identity().vkeys), swapped, None, None)
