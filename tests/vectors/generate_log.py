"""Generate the frozen transparency-log vectors in tests/vectors/log-v1/.

Run once (`python tests/vectors/generate_log.py --force`); the output is committed and every
later version of the code must accept the valid leaves, proofs, checkpoints and cosignatures
and reject each negative vector with the error code it names (docs/protocol.md, section 14.12).

Every key comes from a seed derived by SHAKE-256 from a fixed label. Ed25519 signatures (the
log's 0x01 line and the witnesses' cosignature/v1 lines, at fixed timestamps) are
deterministic, so the tests re-make them and compare bytes; ML-DSA-65 (the log's second line)
and ML-DSA-44 (one witness's subtree/v1 cosignature) are randomised, so a new run gives
different, equally valid notes: do not regenerate casually. The tests only ever verify these
files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from msmt.core import logleaf, parse
from msmt.core.errors import LogError
from msmt.core.merkle import MemoryTree
from msmt.core.note import (
    Checkpoint,
    Ed25519Cosigner,
    MLDSA44Cosigner,
    NoteSignature,
    cosignature_v1_message,
    format_note,
    parse_note,
    subtree_v1_message,
)

VECTORS = Path(__file__).parent
OUT = VECTORS / "log-v1"
ORIGIN = "msmt-vector.example/log"
LABEL = "MSMT-v1 log vector {what}"
T_S = 1_796_000_000  # 2026-11-30T00:53:20Z, the directory and envelope vectors' T0, in seconds
THRESHOLD = 2
# (country, key name, algorithm); ZZZ's witness is named in no root
WITNESSES = (
    ("JPN", "witness.jpn.example", "mldsa44"),
    ("KOR", "witness.kor.example", "ed25519"),
    ("USA", "witness.usa.example", "ed25519"),
)
STRANGER = ("ZZZ", "witness.zzz.example", "ed25519")


def seed(what: str, size: int) -> bytes:
    return hashlib.shake_256(LABEL.format(what=what).encode()).digest(size)


LOG_SEED_LABEL = "log key"
SIGNER = logleaf.LogSigner.from_seed(ORIGIN, seed(LOG_SEED_LABEL, 64))
OTHER_SIGNER = logleaf.LogSigner.from_seed(ORIGIN, seed("another log key", 64))


def witness_label(country: str, algorithm: str) -> str:
    return f"witness {country} {algorithm}"


def cosigner(country: str, name: str, algorithm: str) -> Ed25519Cosigner | MLDSA44Cosigner:
    raw = seed(witness_label(country, algorithm), 32)
    return (
        Ed25519Cosigner.from_seed(name, raw)
        if algorithm == "ed25519"
        else MLDSA44Cosigner.from_seed(name, raw)
    )


COSIGNERS = {country: cosigner(country, name, alg) for country, name, alg in WITNESSES}
STRANGER_COSIGNER = cosigner(*STRANGER)
# the fixed timestamp (POSIX seconds) of each witness's cosignatures
TIMESTAMPS = {"JPN": T_S + 62, "KOR": T_S + 60, "USA": T_S + 61, "ZZZ": T_S + 63}
IDENTITY = SIGNER.identity().with_witnesses(
    [(country, COSIGNERS[country].verifier.vkey) for country, _, _ in WITNESSES], THRESHOLD
)


# --- leaves --------------------------------------------------------------------------------


def envelope(name: str) -> tuple[str, bytes]:
    path = f"envelope-v1/valid/{name}.msmt"
    return path, (VECTORS / path).read_bytes()


def item(name: str, seqs: Mapping[str, int]) -> dict[str, Any]:
    path, data = envelope(name)
    header = parse(data).header
    assert set(seqs) == set(header.recipient_countries)
    leaf = logleaf.item_leaf(header.item_id, logleaf.envelope_digest(data), header.originator, seqs)
    return {
        "type": "item",
        "fields": {
            "item_id": header.item_id,
            "envelope_sha256": logleaf.envelope_digest(data),
            "originator": header.originator,
            "deliveries": [{"recipient": r, "seq": seqs[r]} for r in sorted(seqs)],
        },
        "envelope": path,
        "leaf": leaf.decode("utf-8"),
        "leaf_hash": logleaf.hash_of(leaf).hex(),
    }


def directory(seq: int, path: str) -> dict[str, Any]:
    digest = hashlib.sha256((VECTORS / path).read_bytes()).hexdigest()
    leaf = logleaf.directory_leaf(seq, digest)
    return {
        "type": "directory",
        "fields": {"seq": seq, "entry_sha256": digest},
        "entry": path,
        "leaf": leaf.decode("utf-8"),
        "leaf_hash": logleaf.hash_of(leaf).hex(),
    }


def policy(version: int, document: str) -> dict[str, Any]:
    digest = hashlib.sha256(document.encode("utf-8")).hexdigest()
    leaf = logleaf.policy_leaf(version, digest)
    return {
        "type": "policy",
        "fields": {"version": version, "document_sha256": digest},
        "document": document,
        "leaf": leaf.decode("utf-8"),
        "leaf_hash": logleaf.hash_of(leaf).hex(),
    }


POLICY_1 = '# msmt log vector: policy document, version 1\ndefault_agreement = "none"\n'
POLICY_2 = '# msmt log vector: policy document, version 4\ndefault_agreement = "SECRET"\n'


def leaves() -> list[dict[str, Any]]:
    made = [
        directory(0, "directory-v1/root.json"),
        policy(1, POLICY_1),
        item("basic", {"GBR": 1, "JPN": 1, "USA": 1}),
        item("empty-payload", {"USA": 2}),
        directory(1, "directory-v1/chain/001.json"),
        item("optional-fields", {"NZL": 1}),
        policy(4, POLICY_2),  # policy versions are registry versions: not consecutive
    ]
    for index, leaf in enumerate(made):
        leaf["index"] = index
    return made


# --- tree ----------------------------------------------------------------------------------


def tree_of(data: Sequence[bytes]) -> MemoryTree:
    tree = MemoryTree()
    tree.extend(data)
    return tree


def tree_doc(tree: MemoryTree) -> dict[str, Any]:
    n = tree.size
    return {
        "size": n,
        "roots": [{"size": s, "root": tree.root(s).hex()} for s in range(n + 1)],
        "inclusion": [
            {"index": i, "size": s, "proof": [h.hex() for h in tree.inclusion_proof(i, s)]}
            for s in range(1, n + 1)
            for i in range(s)
        ],
        "consistency": [
            {"first": m, "second": s, "proof": [h.hex() for h in tree.consistency_proof(m, s)]}
            for s in range(1, n + 1)
            for m in range(1, s + 1)
        ],
    }


# --- checkpoints ---------------------------------------------------------------------------


def log_lines(text: str, signer: logleaf.LogSigner = SIGNER) -> list[NoteSignature]:
    return list(signer.sign(text))


def cosign(checkpoint: Checkpoint, country: str) -> NoteSignature:
    signer = STRANGER_COSIGNER if country == STRANGER[0] else COSIGNERS[country]
    return signer.cosign(checkpoint, TIMESTAMPS[country])


def note(checkpoint: Checkpoint, countries: Sequence[str] = ("JPN", "KOR", "USA")) -> str:
    text = checkpoint.to_text()
    lines = [*log_lines(text), *(cosign(checkpoint, c) for c in countries)]
    return format_note(text, lines).decode("utf-8")


def checkpoint_doc(name: str, checkpoint: Checkpoint, what: str) -> dict[str, Any]:
    text = checkpoint.to_text()
    ed_line, mldsa_line = log_lines(text)
    cosignatures: list[dict[str, Any]] = []
    for country, key_name, algorithm in WITNESSES:
        line = cosign(checkpoint, country)
        if algorithm == "ed25519":
            message = cosignature_v1_message(text, TIMESTAMPS[country])
        else:
            message = subtree_v1_message(
                key_name, TIMESTAMPS[country], checkpoint.origin, 0, checkpoint.size, checkpoint.root_hash
            )
        cosignatures.append(
            {
                "country": country,
                "name": key_name,
                "algorithm": algorithm,
                "timestamp": TIMESTAMPS[country],
                "signed_message_hex": message.hex(),
                "line": line.to_line(),
            }
        )
    signed = format_note(text, [ed_line, mldsa_line]).decode("utf-8")
    return {
        "name": name,
        "what": what,
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root_hash": checkpoint.root_hash.hex(),
        "text": text,
        "ed25519_line": ed_line.to_line(),
        "note": signed,
        "cosignatures": cosignatures,
        "cosigned_note": signed + "".join(c["line"] for c in cosignatures),
    }


# --- negative vectors ----------------------------------------------------------------------


NEGATIVES: dict[str, dict[str, Any]] = {}
PINNED = {"log": IDENTITY.to_root_extra()}


def negative(name: str, check: str, error: str, description: str, **inputs: Any) -> None:
    assert name not in NEGATIVES
    NEGATIVES[name] = {"name": name, "check": check, "error": error, "description": description, **inputs}


def run_checkpoint(vector: Mapping[str, Any]) -> None:
    identity = logleaf.LogIdentity.from_root_extra(vector["extra"])
    assert identity is not None
    previous = None
    if vector["previous"] is not None:
        previous = logleaf.accept_checkpoint(identity, vector["previous"].encode(), None, None)
    proof = None if vector["consistency"] is None else [bytes.fromhex(h) for h in vector["consistency"]]
    logleaf.accept_checkpoint(identity, vector["note"].encode(), previous, proof)


def run_item_leaf(vector: Mapping[str, Any]) -> None:
    data = (VECTORS / vector["envelope"]).read_bytes()
    header = parse(data).header
    own = None if vector["own"] is None else (vector["own"][0], int(vector["own"][1]))
    logleaf.check_item_leaf(
        vector["leaf"].encode(),
        item_id=header.item_id,
        envelope=data,
        originator=header.originator,
        recipients=header.recipient_countries,
        own=own,
    )


def run_inclusion(vector: Mapping[str, Any]) -> None:
    identity = logleaf.LogIdentity.from_root_extra(vector["extra"])
    assert identity is not None
    checkpoint = logleaf.accept_checkpoint(identity, vector["note"].encode(), None, None)
    proof = [bytes.fromhex(h) for h in vector["proof"]]
    logleaf.check_inclusion(vector["leaf"].encode(), vector["index"], checkpoint, proof)


RUNNERS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "checkpoint": run_checkpoint,
    "item-leaf": run_item_leaf,
    "inclusion": run_inclusion,
}


def outcome(vector: Mapping[str, Any]) -> str:
    try:
        RUNNERS[vector["check"]](vector)
    except LogError as exc:
        return exc.code
    return "accepted"


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


def flip_line(line: NoteSignature) -> NoteSignature:
    return NoteSignature(line.name, line.key_id, flip(line.signature, len(line.signature) // 2))


def with_leaf(data: list[bytes], index: int, leaf: bytes) -> list[bytes]:
    changed = list(data)
    changed[index] = leaf
    return changed


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="overwrite the committed vectors")
    if OUT.exists() and not parser.parse_args().force:
        print(f"{OUT} exists; vectors are frozen. Pass --force to regenerate.", file=sys.stderr)
        return 1

    made = leaves()
    data = [leaf["leaf"].encode() for leaf in made]
    tree = tree_of(data)
    cp4 = Checkpoint(ORIGIN, 4, tree.root(4))
    cp7 = Checkpoint(ORIGIN, 7, tree.root(7))
    doc4 = checkpoint_doc("size-4", cp4, "the tree of leaves 0-3")
    doc7 = checkpoint_doc("size-7", cp7, "the tree of leaves 0-6")
    note4, note7 = doc4["cosigned_note"], doc7["cosigned_note"]

    # --- checkpoint negatives ----------------------------------------------------------------
    text7 = cp7.to_text()
    ed7, mldsa7 = log_lines(text7)
    cos7 = [cosign(cp7, c) for c in ("JPN", "KOR", "USA")]

    def signed(lines: Sequence[NoteSignature]) -> str:
        return format_note(text7, lines).decode("utf-8")

    common: dict[str, Any] = {"extra": PINNED, "previous": None, "consistency": None}
    negative(
        "note-without-mldsa-line",
        "checkpoint",
        "unverified-note",
        "the log's ML-DSA-65 line is removed; the Ed25519 line and all cosignatures are valid",
        note=signed([ed7, *cos7]),
        **common,
    )
    negative(
        "note-without-ed25519-line",
        "checkpoint",
        "unverified-note",
        "the log's Ed25519 line is removed; the ML-DSA-65 line and all cosignatures are valid",
        note=signed([mldsa7, *cos7]),
        **common,
    )
    negative(
        "note-ed25519-line-flipped",
        "checkpoint",
        "bad-note-signature",
        "one bit of the log's Ed25519 signature is flipped",
        note=signed([flip_line(ed7), mldsa7, *cos7]),
        **common,
    )
    negative(
        "note-mldsa-line-flipped",
        "checkpoint",
        "bad-note-signature",
        "one bit of the log's ML-DSA-65 signature is flipped",
        note=signed([ed7, flip_line(mldsa7), *cos7]),
        **common,
    )
    other = Checkpoint("msmt-vector.example/other-log", 7, cp7.root_hash)
    negative(
        "wrong-origin",
        "checkpoint",
        "malformed-checkpoint",
        "signed by the pinned log keys, but its origin line is not the pinned origin",
        note=format_note(other.to_text(), log_lines(other.to_text())).decode("utf-8"),
        **common,
    )
    negative(
        "other-log-key",
        "checkpoint",
        "unverified-note",
        "the right origin and tree, signed by another log key pair of the same name (unknown key IDs)",
        note=format_note(text7, log_lines(text7, OTHER_SIGNER)).decode("utf-8"),
        **common,
    )
    padded = f"{ORIGIN}\n07\n{doc7['text'].split(chr(10))[2]}\n"
    negative(
        "size-leading-zero",
        "checkpoint",
        "malformed-checkpoint",
        "validly signed by both log keys, but the size line is '07'",
        note=format_note(padded, log_lines(padded)).decode("utf-8"),
        **common,
    )
    negative(
        "one-cosignature-threshold-2",
        "checkpoint",
        "not-witnessed",
        "validly signed by the log and cosigned by KOR's witness only; the root requires 2 countries",
        note=signed([ed7, mldsa7, cosign(cp7, "KOR")]),
        **common,
    )
    negative(
        "unknown-witness-does-not-count",
        "checkpoint",
        "not-witnessed",
        "cosigned by KOR's witness and by a valid witness the root does not name (ZZZ): one country counts",
        note=signed([ed7, mldsa7, cosign(cp7, "KOR"), cosign(cp7, "ZZZ")]),
        **common,
    )
    negative(
        "cosignature-flipped",
        "checkpoint",
        "bad-cosignature",
        "JPN and USA cosign validly; one bit of KOR's known cosignature is flipped",
        note=signed([ed7, mldsa7, cos7[0], flip_line(cos7[1]), cos7[2]]),
        **common,
    )
    negative(
        "cosignature-of-other-checkpoint",
        "checkpoint",
        "bad-cosignature",
        "KOR's line is its cosignature of the size-4 checkpoint, attached to the size-7 one",
        note=signed([ed7, mldsa7, cos7[0], cosign(cp4, "KOR"), cos7[2]]),
        **common,
    )
    negative(
        "rollback-smaller",
        "checkpoint",
        "log-rollback",
        "the client holds the size-7 checkpoint; the log serves the (valid, cosigned) size-4 one",
        extra=PINNED,
        previous=note7,
        note=note4,
        consistency=None,
    )
    split_leaf = logleaf.item_leaf(*logleaf.parse_item_leaf(data[5])[:3], {"NZL": 2})
    split = tree_of(with_leaf(data, 5, split_leaf))
    split7 = Checkpoint(ORIGIN, 7, split.root(7))
    negative(
        "split-view-same-size",
        "checkpoint",
        "log-rollback",
        "the client holds the size-7 checkpoint; the log serves another size-7 tree (leaf 5 says NZL's "
        "inbox entry 2), signed and cosigned, so only the history check fails",
        extra=PINNED,
        previous=note7,
        note=note(split7),
        consistency=None,
    )
    negative(
        "larger-without-proof",
        "checkpoint",
        "log-rollback",
        "the client holds the size-4 checkpoint; the size-7 one comes without a consistency proof",
        extra=PINNED,
        previous=note4,
        note=note7,
        consistency=None,
    )
    good_proof = tree.consistency_proof(4, 7)
    negative(
        "bad-consistency-proof",
        "checkpoint",
        "invalid-consistency-proof",
        "the client holds size 4; the proof from 4 to 7 has one bit of its last hash flipped",
        extra=PINNED,
        previous=note4,
        note=note7,
        consistency=[h.hex() for h in [*good_proof[:-1], flip(good_proof[-1], 0)]],
    )
    fork_leaf = logleaf.item_leaf(*logleaf.parse_item_leaf(data[3])[:3], {"USA": 3})
    fork = tree_of(with_leaf(data[:4], 3, fork_leaf))
    fork4 = Checkpoint(ORIGIN, 4, fork.root(4))
    negative(
        "consistency-from-a-fork",
        "checkpoint",
        "invalid-consistency-proof",
        "the client was shown a forked size-4 tree (leaf 3 says USA's inbox entry 3); the genuine size-7 "
        "checkpoint and its genuine proof from 4 do not extend it",
        extra=PINNED,
        previous=note(fork4),
        note=note7,
        consistency=[h.hex() for h in good_proof],
    )

    # --- item-leaf negatives -----------------------------------------------------------------
    basic = made[2]
    basic_path = basic["envelope"]
    item_id, digest, originator, seqs = logleaf.parse_item_leaf(data[2])

    def item_negative(name: str, leaf: bytes, own: tuple[str, int] | None, description: str) -> None:
        negative(
            name,
            "item-leaf",
            "log-leaf-mismatch",
            description,
            leaf=leaf.decode(),
            envelope=basic_path,
            own=None if own is None else list(own),
        )

    item_negative(
        "leaf-recipient-dropped",
        logleaf.item_leaf(item_id, digest, originator, {"GBR": 1, "USA": 1}),
        None,
        "the item was sealed for GBR, JPN and USA; the leaf has no delivery to JPN (checked by the originator)",
    )
    item_negative(
        "leaf-recipient-added",
        logleaf.item_leaf(item_id, digest, originator, {**seqs, "NZL": 1}),
        None,
        "the leaf names a delivery to NZL, which is not a recipient of the envelope",
    )
    item_negative(
        "leaf-other-inbox-number",
        logleaf.item_leaf(item_id, digest, originator, {**seqs, "USA": 2}),
        ("USA", 1),
        "USA received the item as its inbox entry 1; the leaf says USA's entry 2",
    )
    item_negative(
        "leaf-other-envelope",
        logleaf.item_leaf(item_id, logleaf.envelope_digest(envelope("empty-payload")[1]), originator, seqs),
        ("USA", 1),
        "the leaf's envelope_sha256 is that of another envelope",
    )
    item_negative(
        "leaf-other-originator",
        logleaf.item_leaf(item_id, digest, "FRA", seqs),
        ("JPN", 1),
        "the leaf names FRA as the originator of KOR's item",
    )

    # --- inclusion negatives -----------------------------------------------------------------
    proof = tree.inclusion_proof(3, 7)

    def inclusion_negative(name: str, leaf: bytes, index: int, hashes: Sequence[bytes], what: str) -> None:
        negative(
            name,
            "inclusion",
            "invalid-inclusion-proof",
            what,
            extra=PINNED,
            note=note7,
            leaf=leaf.decode(),
            index=index,
            proof=[h.hex() for h in hashes],
        )

    inclusion_negative(
        "bad-inclusion-proof",
        data[3],
        3,
        [*proof[:1], flip(proof[1], 31), *proof[2:]],
        "leaf 3 under the size-7 checkpoint; one bit of the second proof hash is flipped",
    )
    inclusion_negative(
        "inclusion-wrong-index",
        data[3],
        2,
        proof,
        "leaf 3's genuine proof, claimed for index 2",
    )
    inclusion_negative(
        "inclusion-proof-too-short",
        data[3],
        3,
        proof[:-1],
        "leaf 3's genuine proof without its last hash",
    )
    inclusion_negative(
        "inclusion-of-rewritten-leaf",
        fork_leaf,
        3,
        proof,
        "a leaf that says USA's inbox entry 3 instead of 2, with the genuine proof for index 3",
    )

    # --- check every vector does what it says, then write ------------------------------------
    for vector in NEGATIVES.values():
        got = outcome(vector)
        assert got == vector["error"], (vector["name"], got)
    identity = logleaf.LogIdentity.from_root_extra(PINNED)
    assert identity == IDENTITY
    accepted4 = logleaf.accept_checkpoint(IDENTITY, note4.encode(), None, None)
    logleaf.accept_checkpoint(IDENTITY, note7.encode(), accepted4, good_proof)
    assert logleaf.witnessed_by(IDENTITY, cp7, parse_note(note7.encode())[1]) == {"JPN", "KOR", "USA"}

    write_json(
        OUT / "keys.json",
        {
            "label": LABEL,
            "log": {
                "origin": ORIGIN,
                "seed_label": LOG_SEED_LABEL,
                "seed": seed(LOG_SEED_LABEL, 64).hex(),
                "vkeys": list(SIGNER.identity().vkeys),
            },
            "witnesses": [
                {
                    "country": country,
                    "name": name,
                    "algorithm": algorithm,
                    "seed_label": witness_label(country, algorithm),
                    "seed": seed(witness_label(country, algorithm), 32).hex(),
                    "vkey": cosigner(country, name, algorithm).verifier.vkey,
                    "timestamp": TIMESTAMPS[country],
                    "in_root": country != STRANGER[0],
                }
                for country, name, algorithm in (*WITNESSES, STRANGER)
            ],
        },
    )
    write_json(OUT / "root-extra.json", PINNED)
    write_json(OUT / "leaves.json", {"leaves": made})
    write_json(OUT / "tree.json", tree_doc(tree))
    write_json(
        OUT / "checkpoints.json",
        {
            "checkpoints": [doc4, doc7],
            "sequence": {
                "description": "accept size-4 with no previous checkpoint, then size-7 with the proof from 4",
                "first": "size-4",
                "second": "size-7",
                "consistency": [h.hex() for h in good_proof],
            },
        },
    )
    for name, vector in NEGATIVES.items():
        write_json(OUT / "negative" / f"{name}.json", vector)
    print(f"wrote {len(made)} leaves, 2 checkpoints and {len(NEGATIVES)} negative vectors to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
