"""Generate the frozen member-governed directory vectors in tests/vectors/directory-v1/.

Run once (`python tests/vectors/generate_directory.py --force`); the output is committed and
every later version of the code must verify the valid chain to exactly `expected.json` and
reject each negative vector with the error code it names. Every key comes from a seed derived
by SHAKE-256 from a fixed label, but ML-DSA-65 signing is randomised, so a new run gives
different (equally valid) entry bytes and hashes: do not regenerate casually. The tests only
ever verify these files (docs/protocol.md, section 13.11).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from msmt.core import ApiPrivateKey, EncryptionPrivateKey, KeyKind, SigningPrivateKey, canonical
from msmt.core import governance as gov
from msmt.core.errors import GovernanceError
from msmt.core.keys import PublicKey
from msmt.trust import root_fingerprint

OUT = Path(__file__).parent / "directory-v1"
T0 = 1_796_000_000_000  # 2026-11-30T00:53:20Z, as the envelope vectors
HOUR = 3_600_000
DAY = 24 * HOUR
NAMES = {
    "CAN": "Canada",
    "JPN": "Japan",
    "KOR": "Republic of Korea",
    "NZL": "New Zealand",
    "USA": "United States",
    "ZZZ": "Not a member (stands for the broker operator)",
}


def seed(country: str, generation: int, kind: KeyKind) -> bytes:
    """SHAKE-256 of the label `MSMT-v1 directory vector <country> <kind> <generation>`."""
    size = {KeyKind.SIGNING: 64, KeyKind.ENCRYPTION: 32, KeyKind.API: 32}[kind]
    label = f"MSMT-v1 directory vector {country} {kind.value} {generation}"
    return hashlib.shake_256(label.encode()).digest(size)


@dataclass(frozen=True)
class Agency:
    """One generation of a country's three keys."""

    country: str
    generation: int
    signing: SigningPrivateKey
    encryption: EncryptionPrivateKey
    api: ApiPrivateKey

    def public(self) -> dict[KeyKind, PublicKey]:
        return {
            KeyKind.SIGNING: self.signing.public_key,
            KeyKind.ENCRYPTION: self.encryption.public_key,
            KeyKind.API: self.api.public_key,
        }


USED: dict[tuple[str, int], Agency] = {}


@cache
def agency(country: str, generation: int = 0) -> Agency:
    made = Agency(
        country,
        generation,
        SigningPrivateKey.from_seed(seed(country, generation, KeyKind.SIGNING)),
        EncryptionPrivateKey.from_seed(seed(country, generation, KeyKind.ENCRYPTION)),
        ApiPrivateKey.from_seed(seed(country, generation, KeyKind.API)),
    )
    USED[(country, generation)] = made
    return made


def key_doc() -> dict[str, Any]:
    countries: dict[str, Any] = {}
    for (country, generation), a in sorted(USED.items()):
        countries.setdefault(country, {})[str(generation)] = {
            kind.value: {"seed": seed(country, generation, kind).hex(), "key_id": key.key_id}
            for kind, key in (
                (KeyKind.SIGNING, a.signing),
                (KeyKind.ENCRYPTION, a.encryption),
                (KeyKind.API, a.api),
            )
        }
    return {
        "label": "MSMT-v1 directory vector {country} {kind} {generation}",
        "countries": countries,
    }


def body(
    country: str,
    keys: Mapping[KeyKind, PublicKey],
    groups: Iterable[str] = (),
    accreditation: str = "SECRET",
    status: str = "active",
) -> dict[str, Any]:
    return gov.member_body(NAMES[country], accreditation, groups, keys, status)


def sign(signed: Mapping[str, Any], signers: Iterable[Agency]) -> bytes:
    return gov.signed_entry(signed, [(a.country, a.signing) for a in signers])


def reencode(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """Decode an entry, edit the decoded object (signatures included) and encode it again."""
    value = canonical.decode(data)
    change(value)
    return canonical.encode(value)


def flip_signature_bit(data: bytes, index: int, byte: int) -> bytes:
    def change(value: dict[str, Any]) -> None:
        sig = bytearray(canonical.b64decode(value["signatures"][index]["sig"]))
        sig[byte] ^= 0x01
        value["signatures"][index]["sig"] = canonical.b64encode(bytes(sig))

    return reencode(data, change)


def outcome(states: list[gov.DirectoryState], after: int, data: bytes) -> str:
    """The error code the entry gets on top of the valid chain up to `after` (-1: as genesis)."""
    try:
        if after < 0:
            gov.genesis(data)
        else:
            gov.apply(states[after], data)
    except GovernanceError as exc:
        return exc.code
    return "applied"


def summary(state: gov.DirectoryState, heads: list[dict[str, Any]]) -> dict[str, Any]:
    """What `expected.json` states about the final directory."""
    members: dict[str, Any] = {}
    for code, member in sorted(state.members.items()):
        current = {}
        for kind in KeyKind:
            entry = member.current(kind, state.updated_ms)
            current[kind.value] = None if entry is None else entry.key_id
        members[code] = {
            "name": member.name,
            "status": member.status,
            "accreditation": member.accreditation,
            "groups": list(member.groups),
            "current": current,
            "keys": [
                {
                    "kind": k.kind.value,
                    "key_id": k.key_id,
                    "valid_from_ms": k.valid_from_ms,
                    "valid_until_ms": k.valid_until_ms,
                    "revoked_ms": k.revoked_ms,
                    "introduced_seq": k.introduced_seq,
                }
                for k in sorted(member.keys, key=lambda k: (k.introduced_seq, k.kind.value, k.key_id))
            ],
        }
    return {
        "seq": state.seq,
        "head": state.head,
        "root_version": state.root_version,
        "quorum": state.quorum.to_dict(),
        "updated_ms": state.updated_ms,
        "current_at_ms": state.updated_ms,
        "active_members": state.active_members(),
        "members": members,
        "chain": heads,
    }


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="overwrite the committed vectors")
    if OUT.exists() and not parser.parse_args().force:
        print(f"{OUT} exists; vectors are frozen. Pass --force to regenerate.", file=sys.stderr)
        return 1

    jpn, kor, usa, nzl = agency("JPN"), agency("KOR"), agency("USA"), agency("NZL")
    jpn1, kor1, usa1, nzl1 = agency("JPN", 1), agency("KOR", 1), agency("USA", 1), agency("NZL", 1)
    operator = agency("ZZZ")  # a key that is in no directory: what the broker operator holds

    # --- the valid chain ----------------------------------------------------------------------
    founders = {
        "JPN": body("JPN", jpn.public(), ["G20", "G7"]),
        "KOR": body("KOR", kor.public(), ["G20"]),
        "USA": body("USA", usa.public(), ["FIVE_EYES", "G20", "G7"]),
    }
    root_signed = gov.root_statement(founders, T0, quorum=gov.Quorum(2, 3))
    root = sign(root_signed, [jpn, kor, usa])
    entries: list[tuple[str, bytes, str]] = [("root.json", root, "genesis root: JPN, KOR, USA, quorum 2/3")]
    states = [gov.genesis(root)]

    def append(signed: Mapping[str, Any], signers: Iterable[Agency], what: str) -> bytes:
        data = sign(signed, signers)
        states.append(gov.apply(states[-1], data))
        entries.append((f"chain/{len(entries):03d}.json", data, what))
        return data

    def at(seq: int) -> gov.DirectoryState:
        return states[seq]

    # 1: KOR replaces its encryption key alone; the old one stays valid 7 days
    append(
        gov.rotate_key(at(0), "KOR", kor1.encryption.public_key, T0 + 1 * HOUR, overlap_ms=7 * DAY),
        [kor],
        "KOR rotates its encryption key (self-statement, 7-day overlap)",
    )
    # 2: a quorum (2 of 3) enrols NZL; NZL's new signing key proves possession
    enrol_nzl = gov.statement(
        at(1), "enrol-member", T0 + 2 * HOUR, country="NZL", member=body("NZL", nzl.public(), ["FIVE_EYES"])
    )
    chain2 = append(enrol_nzl, [kor, usa, nzl], "quorum 2 of 3 (KOR, USA) enrols NZL; NZL proves possession")
    # 3: 3 of the 4 active members suspend JPN
    append(
        gov.statement(at(2), "update-member", T0 + 3 * HOUR, country="JPN", changes={"status": "suspended"}),
        [kor, nzl, usa],
        "quorum 3 of 4 (KOR, NZL, USA) suspends JPN",
    )
    # 4: USA replaces its signing key: its current key signs, the new key proves possession
    append(
        gov.rotate_key(at(3), "USA", usa1.signing.public_key, T0 + 4 * HOUR, overlap_ms=DAY),
        [usa, usa1],
        "USA rotates its signing key (old key signs, new key proves possession, 1-day overlap)",
    )
    # 5: KOR revokes its retired encryption key before the overlap ends
    append(
        gov.statement(
            at(4), "revoke-key", T0 + 5 * HOUR, country="KOR", key_id=kor.encryption.public_key.key_id
        ),
        [kor],
        "KOR revokes its retired encryption key (self-statement)",
    )
    # 6: JPN (suspended) lost its keys: a quorum of the active members recovers it
    append(
        gov.statement(
            at(5),
            "recover-member",
            T0 + 6 * HOUR,
            country="JPN",
            keys={kind.value: canonical.b64encode(key.raw) for kind, key in jpn1.public().items()},
        ),
        [kor, usa1, jpn1],
        "quorum 2 of 3 active (KOR, USA) recovers suspended JPN with new keys; JPN proves possession",
    )
    # 7: JPN reinstated, with a new accreditation
    append(
        gov.statement(
            at(6),
            "update-member",
            T0 + 7 * HOUR,
            country="JPN",
            changes={"status": "active", "accreditation": "TOP_SECRET"},
        ),
        [nzl, usa1],
        "quorum 2 of 3 active (NZL, USA) reinstates JPN with accreditation TOP_SECRET",
    )
    # 8: a quorum forces the revocation of NZL's API key
    append(
        gov.statement(
            at(7), "force-revoke-key", T0 + 8 * HOUR, country="NZL", key_id=nzl.api.public_key.key_id
        ),
        [jpn1, kor, usa1],
        "quorum 3 of 4 (JPN, KOR, USA) force-revokes NZL's API key",
    )
    # 9: root rotation to version 2, quorum 3/4; NZL gets a new API key in it
    root2 = gov.root_statement(
        {
            "JPN": body("JPN", jpn1.public(), ["G20", "G7"], "TOP_SECRET"),
            "KOR": body(
                "KOR",
                {
                    KeyKind.SIGNING: kor.signing.public_key,
                    KeyKind.ENCRYPTION: kor1.encryption.public_key,
                    KeyKind.API: kor.api.public_key,
                },
                ["G20"],
            ),
            "NZL": body(
                "NZL",
                {
                    KeyKind.SIGNING: nzl.signing.public_key,
                    KeyKind.ENCRYPTION: nzl.encryption.public_key,
                    KeyKind.API: nzl1.api.public_key,
                },
                ["FIVE_EYES"],
            ),
            "USA": body(
                "USA",
                {
                    KeyKind.SIGNING: usa1.signing.public_key,
                    KeyKind.ENCRYPTION: usa.encryption.public_key,
                    KeyKind.API: usa.api.public_key,
                },
                ["FIVE_EYES", "G20", "G7"],
            ),
        },
        T0 + 9 * HOUR,
        quorum=gov.Quorum(3, 4),
        version=2,
        after=at(8),
    )
    append(root2, [jpn1, kor, nzl, usa1], "root rotation to version 2, quorum 3/4, signed by all four")
    final = states[-1]
    assert gov.verify_chain(data for _, data, _ in entries) == final

    # --- negative vectors ---------------------------------------------------------------------
    negatives: dict[str, dict[str, Any]] = {}

    def negative(name: str, after: int, data: bytes, error: str, description: str) -> None:
        got = outcome(states, after, data)
        assert got == error, f"{name}: expected {error}, got {got}"
        assert name not in negatives
        negatives[name] = {
            "name": name,
            "after": after,
            "entry": canonical.b64encode(data),
            "error": error,
            "description": description,
        }

    kor_enc_rotation = gov.rotate_key(at(0), "KOR", kor1.encryption.public_key, T0 + HOUR, overlap_ms=0)

    # genesis
    negative(
        "genesis-missing-founder",
        -1,
        sign(root_signed, [jpn, kor]),
        "quorum-not-met",
        "the genesis root lacks USA's signature: every founder must sign with the key it founds with",
    )
    # signatures
    negative(
        "signature-mldsa-bit-flipped",
        1,
        flip_signature_bit(chain2, 0, 100),
        "bad-statement-signature",
        "chain/002 with one bit of the ML-DSA-65 half of KOR's signature flipped",
    )
    negative(
        "signature-ed25519-bit-flipped",
        1,
        flip_signature_bit(chain2, 1, 3340),
        "bad-statement-signature",
        "chain/002 with one bit of the Ed25519 half of NZL's signature flipped",
    )
    negative(
        "signed-by-unknown-key",
        0,
        gov.signed_entry(kor_enc_rotation, [("KOR", operator.signing)]),
        "bad-statement-signature",
        "KOR's encryption-key rotation signed in KOR's name by a key that is not in the directory",
    )
    negative(
        "signed-by-revoked-key",
        6,
        sign(
            gov.statement(at(6), "update-member", T0 + 7 * HOUR, country="JPN", changes={"status": "active"}),
            [jpn, nzl, usa1],
        ),
        "bad-statement-signature",
        "a signature by JPN's signing key revoked by the recovery at entry 6 (the others would suffice)",
    )
    # who must sign
    negative(
        "quorum-not-met",
        1,
        sign(enrol_nzl, [kor, nzl]),
        "quorum-not-met",
        "enrolment of NZL signed by KOR only (and NZL's own new key, which does not vote): 2 of 3 needed",
    )
    negative(
        "missing-proof-of-possession",
        1,
        sign(enrol_nzl, [kor, usa]),
        "quorum-not-met",
        "enrolment of NZL by a quorum, but NZL's new signing key did not sign",
    )
    negative(
        "self-statement-by-other-member",
        0,
        sign(kor_enc_rotation, [usa]),
        "quorum-not-met",
        "KOR's encryption-key rotation signed by USA instead of KOR",
    )
    negative(
        "self-statement-by-retired-key",
        4,
        sign(gov.rotate_key(at(4), "USA", usa1.encryption.public_key, T0 + 5 * HOUR), [usa]),
        "quorum-not-met",
        "USA rotates its encryption key signed by its retired signing key (valid in its overlap, but not current)",
    )
    negative(
        "signing-rotation-without-new-key",
        3,
        sign(gov.rotate_key(at(3), "USA", usa1.signing.public_key, T0 + 4 * HOUR, overlap_ms=DAY), [usa]),
        "quorum-not-met",
        "USA's signing-key rotation signed by the old key only: the new key must prove possession",
    )
    negative(
        "suspended-member-does-not-vote",
        3,
        sign(
            gov.statement(
                at(3), "update-member", T0 + 4 * HOUR, country="KOR", changes={"groups": ["G20", "G7"]}
            ),
            [jpn, kor],
        ),
        "quorum-not-met",
        "update signed by JPN (suspended: its signature verifies but does not count) and KOR: "
        "2 of the 3 active members KOR, NZL, USA needed",
    )
    new_keys_root = gov.root_statement(
        {
            "JPN": body("JPN", jpn1.public(), ["G20", "G7"]),
            "KOR": body("KOR", kor.public(), ["G20"]),
            "NZL": body("NZL", nzl.public(), ["FIVE_EYES"]),
            "USA": body("USA", usa1.public(), ["FIVE_EYES", "G20", "G7"]),
        },
        T0 + 3 * HOUR,
        version=2,
        after=at(2),
    )
    negative(
        "root-rotation-lacks-new-quorum",
        2,
        sign(new_keys_root, [jpn, kor, nzl, usa]),
        "quorum-not-met",
        "root rotation giving JPN and USA new signing keys, signed by all four current keys: the old "
        "quorum is met, but only KOR and NZL sign with keys of the new root (3 of 4 needed)",
    )
    # chaining
    negative(
        "wrong-prev",
        1,
        sign(enrol_nzl | {"prev": states[0].head}, [kor, usa, nzl]),
        "broken-chain",
        "entry 2 naming entry 0's hash as its previous entry",
    )
    negative(
        "wrong-seq",
        1,
        sign(enrol_nzl | {"seq": 3}, [kor, usa, nzl]),
        "broken-chain",
        "entry with seq 3 right after entry 1 (prev is correct)",
    )
    negative(
        "replayed-entry",
        2,
        entries[2][1],
        "broken-chain",
        "chain/002 submitted again after itself",
    )
    negative(
        "backdated",
        1,
        sign(enrol_nzl | {"created_ms": T0 + HOUR - 1}, [kor, usa, nzl]),
        "invalid-statement",
        "created_ms one millisecond before the previous entry's",
    )
    # encoding and shape
    negative(
        "non-canonical",
        1,
        chain2.replace(b'{"', b'{ "', 1),
        "malformed-statement",
        "chain/002 with one space of insignificant whitespace",
    )
    negative(
        "unsorted-signatures",
        1,
        reencode(chain2, lambda v: v["signatures"].reverse()),
        "malformed-statement",
        "chain/002 with its (valid) signatures in descending instead of ascending order",
    )
    negative(
        "duplicate-signature",
        1,
        reencode(chain2, lambda v: v["signatures"].insert(0, v["signatures"][0])),
        "malformed-statement",
        "chain/002 with KOR's signature twice",
    )
    negative(
        "unknown-type",
        1,
        sign(
            gov.statement(at(1), "update-member", T0 + 2 * HOUR, country="USA", changes={"status": "active"})
            | {"type": "remove-member"},
            [kor, usa],
        ),
        "malformed-statement",
        "a validly signed statement of type remove-member, which does not exist",
    )
    negative(
        "extra-field",
        0,
        sign(kor_enc_rotation | {"comment": "routine"}, [kor]),
        "malformed-statement",
        "KOR's rotation with an extra field 'comment', validly signed",
    )
    negative(
        "wrong-format",
        0,
        sign(kor_enc_rotation | {"format": gov.ROOT_FORMAT}, [kor]),
        "malformed-statement",
        "a statement whose format is msmt-root-v1",
    )
    negative(
        "root-quorum-one-half",
        2,
        sign(
            gov.root_statement(
                {c: founders[c] for c in founders},
                T0 + 3 * HOUR,
                quorum=gov.Quorum(1, 2),
                version=2,
                after=at(2),
            ),
            [jpn, kor, usa],
        ),
        "malformed-statement",
        "root rotation with quorum 1/2: n/d must be greater than 1/2",
    )
    # applicability
    negative(
        "key-used-by-another-member",
        1,
        sign(
            gov.statement(
                at(1),
                "enrol-member",
                T0 + 2 * HOUR,
                country="NZL",
                member=body("NZL", nzl.public() | {KeyKind.ENCRYPTION: usa.encryption.public_key}),
            ),
            [kor, usa, nzl],
        ),
        "invalid-statement",
        "enrolment of NZL listing USA's encryption key as its own",
    )
    negative(
        "enrol-existing-member",
        2,
        sign(
            gov.statement(
                at(2), "enrol-member", T0 + 3 * HOUR, country="USA", member=body("USA", usa1.public())
            ),
            [jpn, kor, nzl, usa1],
        ),
        "invalid-statement",
        "enrolment of USA, which is already a member",
    )
    negative(
        "retire-not-current",
        1,
        sign(
            gov.rotate_key(at(1), "KOR", agency("KOR", 2).encryption.public_key, T0 + 2 * HOUR)
            | {"retire": kor.encryption.public_key.key_id},
            [kor],
        ),
        "invalid-statement",
        "KOR rotates its encryption key naming its retired key, not its current one, as the key it replaces",
    )
    negative(
        "revoke-unknown-key",
        1,
        sign(
            gov.statement(
                at(1),
                "revoke-key",
                T0 + 2 * HOUR,
                country="KOR",
                key_id=operator.encryption.public_key.key_id,
            ),
            [kor],
        ),
        "invalid-statement",
        "KOR revokes a key id that is not one of its keys",
    )
    negative(
        "revoke-revoked-key",
        5,
        sign(
            gov.statement(
                at(5), "revoke-key", T0 + 6 * HOUR, country="KOR", key_id=kor.encryption.public_key.key_id
            ),
            [kor],
        ),
        "invalid-statement",
        "KOR revokes its old encryption key a second time",
    )
    negative(
        "suspended-member-self-statement",
        3,
        sign(gov.rotate_key(at(3), "JPN", jpn1.encryption.public_key, T0 + 4 * HOUR), [jpn]),
        "invalid-statement",
        "JPN, suspended, rotates its own encryption key",
    )
    negative(
        "update-non-member",
        1,
        sign(
            gov.statement(at(1), "update-member", T0 + 2 * HOUR, country="CAN", changes={"status": "active"}),
            [kor, usa],
        ),
        "invalid-statement",
        "update of CAN, which is not a member",
    )
    negative(
        "root-version-skipped",
        2,
        sign(
            gov.root_statement({c: founders[c] for c in founders}, T0 + 3 * HOUR, version=3, after=at(2)),
            [jpn, kor, usa],
        ),
        "invalid-statement",
        "root rotation to version 3 after version 1",
    )

    # a different, equally valid entry 2: what a forking broker would serve
    fork = sign(
        gov.statement(
            at(1), "enrol-member", T0 + 2 * HOUR, country="CAN", member=body("CAN", agency("CAN").public())
        ),
        [jpn, kor, agency("CAN")],
    )
    assert outcome(states, 1, fork) == "applied" and fork != chain2

    # --- write --------------------------------------------------------------------------------
    for sub in ("chain", "negative", "fork"):
        (OUT / sub).mkdir(parents=True, exist_ok=True)
    for path, data, _ in entries:
        (OUT / path).write_bytes(data)
    (OUT / "fork" / "002.json").write_bytes(fork)
    heads = [
        {
            "file": path,
            "seq": seq,
            "type": gov.parse_entry(data).type,
            "hash": gov.entry_hash(data),
            "what": what,
        }
        for seq, (path, data, what) in enumerate(entries)
    ]
    write_json(OUT / "expected.json", summary(final, heads))
    write_json(
        OUT / "fingerprint.json",
        {"file": "root.json", "sha256": gov.entry_hash(root), "fingerprint": root_fingerprint(root)},
    )
    for name, vector in negatives.items():
        write_json(OUT / "negative" / f"{name}.json", vector)
    write_json(OUT / "keys.json", key_doc())
    print(f"wrote a root, {len(entries) - 1} chain entries and {len(negatives)} negative vectors to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
