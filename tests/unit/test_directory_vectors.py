"""The frozen member-governed directory vectors: every later version must accept and reject them.

The files are only verified here, never regenerated (ML-DSA signatures are randomised, so a
new run of `tests/vectors/generate_directory.py` would give different bytes and hashes).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from msmt.core import ApiPrivateKey, EncryptionPrivateKey, KeyKind, SigningPrivateKey, canonical, errors
from msmt.core import governance as gov
from msmt.trust import TrustStore, root_fingerprint

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "directory-v1"
ROOT = (VECTORS / "root.json").read_bytes()
CHAIN_FILES = sorted((VECTORS / "chain").glob("*.json"))
CHAIN = [ROOT] + [p.read_bytes() for p in CHAIN_FILES]
EXPECTED: dict[str, Any] = json.loads((VECTORS / "expected.json").read_text(encoding="utf-8"))
KEYS: dict[str, Any] = json.loads((VECTORS / "keys.json").read_text(encoding="utf-8"))
NEGATIVE_FILES = sorted((VECTORS / "negative").glob("*.json"))
NEGATIVES: list[dict[str, Any]] = [json.loads(p.read_text(encoding="utf-8")) for p in NEGATIVE_FILES]
GOVERNANCE_CODES = {
    cls.code
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.GovernanceError)
}
REQUIRED_NEGATIVES = {
    "signature-mldsa-bit-flipped",
    "signed-by-unknown-key",
    "quorum-not-met",
    "missing-proof-of-possession",
    "wrong-prev",
    "wrong-seq",
    "backdated",
    "non-canonical",
    "unsorted-signatures",
    "duplicate-signature",
    "unknown-type",
    "extra-field",
    "key-used-by-another-member",
    "retire-not-current",
    "revoke-unknown-key",
    "suspended-member-self-statement",
    "root-rotation-lacks-new-quorum",
}
PRIVATE: dict[KeyKind, type[SigningPrivateKey] | type[EncryptionPrivateKey] | type[ApiPrivateKey]] = {
    KeyKind.SIGNING: SigningPrivateKey,
    KeyKind.ENCRYPTION: EncryptionPrivateKey,
    KeyKind.API: ApiPrivateKey,
}


NOW = 1_900_000_000_000  # after every vector's date: the client refuses entries from the future


def prefix_states() -> list[gov.DirectoryState]:
    states = [gov.genesis(CHAIN[0])]
    for data in CHAIN[1:]:
        states.append(gov.apply(states[-1], data))
    return states


STATES = prefix_states()


def key_view(key: gov.KeyEntry) -> dict[str, Any]:
    return {
        "kind": key.kind.value,
        "key_id": key.key_id,
        "valid_from_ms": key.valid_from_ms,
        "valid_until_ms": key.valid_until_ms,
        "revoked_ms": key.revoked_ms,
        "introduced_seq": key.introduced_seq,
    }


def summary(state: gov.DirectoryState) -> dict[str, Any]:
    """The state as `expected.json` writes it (current keys at the last entry's created_ms)."""
    at_ms = EXPECTED["current_at_ms"]
    members = {}
    for code, member in sorted(state.members.items()):
        current = {}
        for kind in KeyKind:
            entry = member.current(kind, at_ms)
            current[kind.value] = None if entry is None else entry.key_id
        members[code] = {
            "name": member.name,
            "status": member.status,
            "accreditation": member.accreditation,
            "groups": list(member.groups),
            "current": current,
            "keys": [
                key_view(k)
                for k in sorted(member.keys, key=lambda k: (k.introduced_seq, k.kind.value, k.key_id))
            ],
        }
    return {
        "seq": state.seq,
        "head": state.head,
        "root_version": state.root_version,
        "quorum": state.quorum.to_dict(),
        "updated_ms": state.updated_ms,
        "active_members": state.active_members(),
        "members": members,
    }


def test_key_seeds_derive_the_listed_key_ids() -> None:
    label = KEYS["label"]
    for country, generations in KEYS["countries"].items():
        for generation, kinds in generations.items():
            for kind_name, entry in kinds.items():
                kind = KeyKind(kind_name)
                text = label.format(country=country, kind=kind.value, generation=generation)
                size = 64 if kind is KeyKind.SIGNING else 32
                assert hashlib.shake_256(text.encode()).digest(size).hex() == entry["seed"]
                key = PRIVATE[kind].from_seed(bytes.fromhex(entry["seed"]))
                assert key.key_id == entry["key_id"], (country, generation, kind_name)


def test_files_are_complete() -> None:
    assert [p.name for p in CHAIN_FILES] == [f"{i:03d}.json" for i in range(1, len(CHAIN_FILES) + 1)]
    assert [c["file"] for c in EXPECTED["chain"]] == ["root.json"] + [f"chain/{p.name}" for p in CHAIN_FILES]
    assert {v["name"] for v in NEGATIVES} >= REQUIRED_NEGATIVES
    assert [f"{v['name']}.json" for v in NEGATIVES] == [p.name for p in NEGATIVE_FILES]
    types = {gov.parse_entry(data).type for data in CHAIN}
    assert types == {"root", *gov.STATEMENT_TYPES}  # every entry type appears in the valid chain


def test_root_fingerprint() -> None:
    vector = json.loads((VECTORS / "fingerprint.json").read_text(encoding="utf-8"))
    root = (VECTORS / vector["file"]).read_bytes()
    assert hashlib.sha256(root).hexdigest() == vector["sha256"]
    assert root_fingerprint(root) == vector["fingerprint"]
    assert vector["fingerprint"] == "-".join(vector["sha256"][i : i + 4].upper() for i in range(0, 32, 4))


def test_valid_chain_verifies_to_expected_state() -> None:
    state = gov.verify_chain(CHAIN)
    assert summary(state) == {k: v for k, v in EXPECTED.items() if k not in ("chain", "current_at_ms")}
    assert EXPECTED["current_at_ms"] == state.updated_ms


@pytest.mark.parametrize("seq", range(len(CHAIN)))
def test_each_entry_follows_its_predecessor(seq: int) -> None:
    data, listed = CHAIN[seq], EXPECTED["chain"][seq]
    entry = gov.parse_entry(data)
    assert (entry.seq, entry.type, gov.entry_hash(data)) == (seq, listed["type"], listed["hash"])
    assert STATES[seq].seq == seq and STATES[seq].head == listed["hash"]
    if seq > 0:
        assert entry.signed["prev"] == EXPECTED["chain"][seq - 1]["hash"]
        assert gov.missing(STATES[seq - 1], entry) == []


@pytest.mark.parametrize("data", CHAIN, ids=["root", *(p.stem for p in CHAIN_FILES)])
def test_entry_files_are_exact_canonical_bytes(data: bytes) -> None:
    assert canonical.encode(canonical.decode(data)) == data
    assert gov.parse_entry(data).to_bytes() == data


@pytest.mark.parametrize("vector", NEGATIVES, ids=lambda v: v["name"])
def test_negative_vector_fails_with_its_code(vector: dict[str, Any]) -> None:
    assert vector["error"] in GOVERNANCE_CODES
    assert -1 <= vector["after"] < len(CHAIN)
    data = canonical.b64decode(vector["entry"], "entry")
    with pytest.raises(errors.GovernanceError) as info:
        if vector["after"] < 0:
            gov.genesis(data)
        else:
            gov.apply(STATES[vector["after"]], data)
    assert info.value.code == vector["error"], info.value.detail


@pytest.mark.parametrize("path", [VECTORS / "expected.json", VECTORS / "keys.json", *NEGATIVE_FILES])
def test_json_files_reencode_identically(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    value = json.loads(text)
    assert json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text
    if "entry" in value:
        assert canonical.b64encode(canonical.b64decode(value["entry"])) == value["entry"]


def test_client_refuses_rollback_and_fork() -> None:
    served = list(enumerate(CHAIN))
    store = TrustStore.pin(ROOT)
    state = store.update(len(CHAIN) - 1, EXPECTED["head"], served, now_ms=NOW)
    assert state.head == EXPECTED["head"]
    assert (
        store.update(state.seq, state.head, served[state.seq :], now_ms=NOW).head == state.head
    )  # nothing new
    with pytest.raises(errors.DirectoryRollback):
        store.update(3, EXPECTED["chain"][3]["hash"], served[:4], now_ms=NOW)

    fork = (VECTORS / "fork" / "002.json").read_bytes()
    gov.apply(STATES[1], fork)  # a valid entry 2 in itself, but not the one the chain holds
    at_two = TrustStore(CHAIN[:3])
    with pytest.raises(errors.DirectoryFork):
        at_two.update(2, gov.entry_hash(fork), [(2, fork)], now_ms=NOW)
    at_one = TrustStore(CHAIN[:2])
    forked = at_one.update(2, gov.entry_hash(fork), [(1, CHAIN[1]), (2, fork)], now_ms=NOW)
    assert forked.head != STATES[2].head  # a client that never saw entry 2 cannot tell alone
    with pytest.raises(errors.DirectoryFork):
        TrustStore(CHAIN[:3]).update(3, EXPECTED["chain"][3]["hash"], [(2, fork), *served[3:4]], now_ms=NOW)
    with pytest.raises(errors.DirectoryFork):  # the served entries must end at the announced head
        TrustStore(CHAIN[:2]).update(3, EXPECTED["chain"][3]["hash"], served[1:3], now_ms=NOW)
