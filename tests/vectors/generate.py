"""Generate the frozen protocol-v1 test vectors in tests/vectors/envelope-v1/.

Run once (`python tests/vectors/generate.py --force`); the output is committed and every
later version of the code must still verify and open the valid vectors and reject each
tamper vector with the error its manifest names. Signatures and HPKE are randomised, so
re-running produces different (equally valid) files: do not regenerate casually.
`--supplement` (re)writes only the deterministic additions derived from the committed files
(`supplement()`: two parser-limit tamper vectors and `hpke.json`); a full run ends with it too.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

from msmt.core import EncryptionPrivateKey, Markings, SigningPrivateKey, canonical, parse, seal
from msmt.core.envelope import MAGIC, SIGNATURE_CONTEXT

OUT = Path(__file__).parent / "envelope-v1"
COUNTRIES = ("KOR", "FRA", "USA", "JPN", "GBR", "NZL")
CREATED_MS = 1_796_000_000_000  # 2026-11-30T00:53:20Z, fixed so the vectors are dated


def seeds(country: str) -> dict[str, str]:
    def derive(kind: str, size: int) -> str:
        return hashlib.shake_256(f"MSMT-v1 test vector {country} {kind}".encode()).digest(size).hex()

    return {"signing_seed": derive("signing", 64), "encryption_seed": derive("encryption", 32)}


def load_keys(doc: dict[str, Any]) -> dict[str, tuple[SigningPrivateKey, EncryptionPrivateKey]]:
    return {
        country: (
            SigningPrivateKey.from_seed(bytes.fromhex(entry["signing_seed"])),
            EncryptionPrivateKey.from_seed(bytes.fromhex(entry["encryption_seed"])),
        )
        for country, entry in doc["countries"].items()
    }


def frame(header: dict[str, Any] | bytes, signature: bytes, ciphertext: bytes) -> bytes:
    header_bytes = header if isinstance(header, bytes) else canonical.encode(header)
    return struct.pack(">4sBI", MAGIC, 1, len(header_bytes)) + header_bytes + signature + ciphertext


SUPPLEMENT_TAMPER = {
    "integer-beyond-digit-limit": "created_ms is a 5,000-digit integer (past Python's 4,300-digit parse limit)",
    "nesting-beyond-parser-limit": "a header member nested 5,000 arrays deep (past the parser's recursion limit)",
}


def supplement() -> None:
    """Deterministic additions to the frozen set, derived from the committed files only (so a
    re-run writes the same bytes): two tamper vectors for limits a JSON parser has of its own,
    which section 3 makes `non-canonical-encoding`, and `hpke.json`, the HPKE (RFC 9180) vector
    in the product's own suite (X-Wing, HKDF-SHA256, AES-256-GCM) taken from `valid/basic.msmt`."""
    from msmt.core.envelope import _HPKE, _info

    manifest = json.loads((OUT / "manifest.json").read_text())
    key_doc = json.loads((OUT / "keys.json").read_text())
    keys = load_keys(key_doc)
    basic = (OUT / "valid" / "basic.msmt").read_bytes()
    env = parse(basic)
    text = env.header_bytes
    created = str(env.header.created_ms).encode()
    tampered = {
        "integer-beyond-digit-limit": text.replace(
            b'"created_ms":' + created, b'"created_ms":' + b"9" * 5000, 1
        ),
        "nesting-beyond-parser-limit": text.replace(
            b'"caveats":[]', b'"caveats":' + b"[" * 5000 + b"]" * 5000, 1
        ),
    }
    for name, header in tampered.items():
        assert header != text, name
        (OUT / "tamper" / f"{name}.msmt").write_bytes(frame(header, env.signature, env.ciphertext))
        entry = {
            "name": name,
            "file": f"tamper/{name}.msmt",
            "stage": "verify",
            "error": "non-canonical-encoding",
            "description": SUPPLEMENT_TAMPER[name],
        }
        manifest["tamper"] = [t for t in manifest["tamper"] if t["name"] != name] + [entry]

    header = env.header
    cases = []
    for recipient in header.recipients:
        private = keys[recipient.country][1]
        info = _info(
            header.item_id, header.originator, header.originator_key_id, recipient.country, recipient.key_id
        )
        content_key = _HPKE.decrypt(recipient.wrapped_key, private.hpke_key, info=info)
        cases.append(
            {
                "recipient": recipient.country,
                "encryption_seed": key_doc["countries"][recipient.country]["encryption_seed"],
                "info": info.hex(),
                "aad": "",
                "enc": recipient.wrapped_key[:1120].hex(),
                "ct": recipient.wrapped_key[1120:].hex(),
                "pt": content_key.hex(),
            }
        )
    hpke_doc = {
        "description": "RFC 9180 base mode, single shot, in the MSMT suite (protocol section 2.4): open "
        "`enc` and `ct` with the X-Wing key derived from `encryption_seed` (section 2.3), `info` and empty "
        "`aad`; the result is `pt`, the 32-byte content key. From valid/basic.msmt.",
        "mode": 0,
        "kem_id": 0x647A,
        "kdf_id": 0x0001,
        "aead_id": 0x0002,
        "source": "valid/basic.msmt",
        "cases": cases,
    }
    (OUT / "hpke.json").write_text(json.dumps(hpke_doc, indent=2) + "\n")
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(tampered)} supplementary tamper vectors and {len(cases)} HPKE cases to {OUT}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="overwrite the committed vectors")
    parser.add_argument(
        "--supplement", action="store_true", help="(re)write only the deterministic additions (supplement())"
    )
    args = parser.parse_args()
    if args.supplement:
        supplement()
        return 0
    if OUT.exists() and not args.force:
        print(f"{OUT} exists; vectors are frozen. Pass --force to regenerate.", file=sys.stderr)
        return 1
    (OUT / "valid").mkdir(parents=True, exist_ok=True)
    (OUT / "tamper").mkdir(parents=True, exist_ok=True)

    key_doc: dict[str, Any] = {"countries": {c: seeds(c) for c in COUNTRIES}}
    keys = load_keys(key_doc)
    for country, (sig, enc) in keys.items():
        key_doc["countries"][country].update(signing_key_id=sig.key_id, encryption_key_id=enc.key_id)

    def make(origin: str, to: list[str], payload: bytes, **extra: Any) -> bytes:
        markings = extra.pop("markings", Markings.create("RESTRICTED", "AMBER", ["G7"], topics=["maritime"]))
        return seal(
            payload,
            content_type=extra.pop("content_type", "text/markdown"),
            markings=markings,
            recipients=[(c, keys[c][1].public_key) for c in to],
            originator=origin,
            signing_key=keys[origin][0],
            created_ms=extra.pop("created_ms", CREATED_MS),
            **extra,
        )

    manifest: dict[str, Any] = {"valid": [], "tamper": []}

    def add_valid(name: str, data: bytes, payload: bytes) -> None:
        (OUT / "valid" / f"{name}.msmt").write_bytes(data)
        header = parse(data).header
        manifest["valid"].append(
            {
                "name": name,
                "file": f"valid/{name}.msmt",
                "item_id": header.item_id,
                "originator": header.originator,
                "recipients": list(header.recipient_countries),
                "content_type": header.content_type,
                "payload_b64": base64.b64encode(payload).decode(),
                "envelope_sha256": hashlib.sha256(data).hexdigest(),
            }
        )

    def add_tamper(
        name: str, data: bytes, stage: str, error: str, description: str, open_as: str = ""
    ) -> None:
        (OUT / "tamper" / f"{name}.msmt").write_bytes(data)
        entry = {
            "name": name,
            "file": f"tamper/{name}.msmt",
            "stage": stage,
            "error": error,
            "description": description,
        }
        if open_as:
            entry["open_as"] = open_as
        manifest["tamper"].append(entry)

    report = b"# Ship-to-ship transfer sighting\n\nTwo tankers, 2026-11-02, 12 nm off the coast.\n"
    basic = make("KOR", ["USA", "JPN", "GBR"], report)
    add_valid("basic", basic, report)
    add_valid("empty-payload", make("KOR", ["USA"], b""), b"")
    blob = hashlib.shake_256(b"evidence image").digest(4096)
    first = parse(basic).header
    add_valid(
        "optional-fields",
        make(
            "FRA",
            ["NZL"],
            blob,
            content_type="image/png",
            supersedes=first.item_id,
            in_reply_to=first.item_id,
            expires_ms=CREATED_MS + 86_400_000,
            markings=Markings.create("CONFIDENTIAL", "RED", ["NZL"], caveats=["ORCON"], topics=["arms"]),
        ),
        blob,
    )

    env = parse(basic)
    header = canonical.decode(env.header_bytes)
    other = parse(make("FRA", ["USA", "JPN", "GBR"], b"another report"))
    other_header = canonical.decode(other.header_bytes)

    def edited(change: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(header))
        change(copy)
        return copy  # type: ignore[no-any-return]

    def flipped(data: bytes, index: int) -> bytes:
        raw = bytearray(data)
        raw[index] ^= 0x01
        return bytes(raw)

    v = "verify"
    add_tamper(
        "marking-changed",
        frame(
            edited(lambda h: h["markings"].update(classification="UNCLASSIFIED")),
            env.signature,
            env.ciphertext,
        ),
        v,
        "bad-signature",
        "classification lowered after signing",
    )
    add_tamper(
        "releasable-widened",
        frame(edited(lambda h: h["markings"].update(releasable_to=["ALL"])), env.signature, env.ciphertext),
        v,
        "bad-signature",
        "releasable_to widened after signing",
    )
    add_tamper(
        "recipient-removed",
        frame(edited(lambda h: h["recipients"].pop()), env.signature, env.ciphertext),
        v,
        "bad-signature",
        "one recipient entry removed",
    )
    add_tamper(
        "mldsa-half-flipped",
        frame(env.header_bytes, flipped(env.signature, 100), env.ciphertext),
        v,
        "bad-signature",
        "one bit of the ML-DSA-65 half of the signature flipped",
    )
    add_tamper(
        "ed25519-half-flipped",
        frame(env.header_bytes, flipped(env.signature, 3340), env.ciphertext),
        v,
        "bad-signature",
        "one bit of the Ed25519 half of the signature flipped",
    )
    add_tamper(
        "wrapped-key-flipped",
        frame(
            edited(
                lambda h: h["recipients"][0].update(
                    wrapped_key=canonical.b64encode(
                        flipped(canonical.b64decode(h["recipients"][0]["wrapped_key"]), 7)
                    )
                )
            ),
            env.signature,
            env.ciphertext,
        ),
        v,
        "bad-signature",
        "one bit of a wrapped content key flipped",
    )
    add_tamper(
        "ciphertext-flipped",
        frame(env.header_bytes, env.signature, flipped(env.ciphertext, 3)),
        v,
        "payload-mismatch",
        "one bit of the payload ciphertext flipped",
    )
    add_tamper(
        "ciphertext-swapped",
        frame(env.header_bytes, env.signature, other.ciphertext),
        v,
        "payload-mismatch",
        "ciphertext taken from another valid envelope",
    )
    add_tamper(
        "recipient-entry-swapped",
        frame(
            edited(lambda h: h["recipients"].__setitem__(0, other_header["recipients"][0])),
            env.signature,
            env.ciphertext,
        ),
        v,
        "bad-signature",
        "a recipient entry taken from another valid envelope",
    )
    add_tamper(
        "item-id-swapped",
        frame(edited(lambda h: h.update(item_id=other_header["item_id"])), env.signature, env.ciphertext),
        v,
        "bad-signature",
        "item id taken from another valid envelope",
    )
    add_tamper(
        "originator-swapped",
        frame(
            edited(lambda h: h.update(originator=other_header["originator"])), env.signature, env.ciphertext
        ),
        v,
        "bad-signature",
        "originator (country and key id) taken from another valid envelope",
    )
    add_tamper(
        "unknown-originator-key",
        frame(edited(lambda h: h["originator"].update(key_id="0" * 32)), env.signature, env.ciphertext),
        v,
        "unknown-signing-key",
        "originator key id not in the directory",
    )
    add_tamper(
        "duplicate-key",
        frame(
            env.header_bytes.replace(b'"version":1', b'"version":1,"version":1'),
            env.signature,
            env.ciphertext,
        ),
        v,
        "duplicate-key",
        "the header repeats the key 'version'",
    )
    add_tamper(
        "non-canonical",
        frame(env.header_bytes.replace(b'{"', b'{ "', 1), env.signature, env.ciphertext),
        v,
        "non-canonical-encoding",
        "insignificant whitespace in the header",
    )
    add_tamper(
        "frame-version-2", b"MSMT\x02" + basic[5:], v, "unsupported-version", "framing version byte is 2"
    )
    add_tamper(
        "unknown-suite",
        frame(edited(lambda h: h.update(suite="MSMT-v1/X25519/Ed25519")), env.signature, env.ciphertext),
        v,
        "unsupported-suite",
        "suite string not the one fixed for version 1",
    )
    add_tamper(
        "truncated",
        basic[: len(basic) - len(env.ciphertext) - 10],
        v,
        "malformed-envelope",
        "envelope cut inside the signature",
    )
    add_tamper(
        "header-length-oversized",
        b"MSMT\x01" + struct.pack(">I", 16 * 1024 * 1024) + basic[9:],
        v,
        "oversized-field",
        "declared header length above the 1 MiB limit",
    )

    o = "open"
    resigned = edited(lambda h: h.update(originator={"country": "FRA", "key_id": keys["FRA"][0].key_id}))
    resigned_bytes = canonical.encode(resigned)
    add_tamper(
        "resigned-by-other-member",
        frame(resigned_bytes, keys["FRA"][0].sign(resigned_bytes, SIGNATURE_CONTEXT), env.ciphertext),
        o,
        "key-unwrap-failed",
        "KOR's envelope re-signed validly by FRA as its own; USA must refuse it",
        "USA",
    )
    twin = parse(make("KOR", ["USA", "JPN", "GBR"], b"a different text", item_id=first.item_id))
    twin_header = canonical.decode(twin.header_bytes)
    mixed = edited(
        lambda h: h["recipients"].__setitem__(
            [r["country"] for r in h["recipients"]].index("USA"),
            next(r for r in twin_header["recipients"] if r["country"] == "USA"),
        )
    )
    mixed_bytes = canonical.encode(mixed)
    add_tamper(
        "inconsistent-content-key",
        frame(mixed_bytes, keys["KOR"][0].sign(mixed_bytes, SIGNATURE_CONTEXT), env.ciphertext),
        o,
        "key-commitment-mismatch",
        "a malicious originator wrapped a different content key for USA than it committed to",
        "USA",
    )
    swapped = edited(lambda h: h.update(payload=twin_header["payload"]))
    swapped_bytes = canonical.encode(swapped)
    add_tamper(
        "ciphertext-under-other-key",
        frame(swapped_bytes, keys["KOR"][0].sign(swapped_bytes, SIGNATURE_CONTEXT), twin.ciphertext),
        o,
        "payload-decryption-failed",
        "a malicious originator signed a ciphertext made under another content key",
        "USA",
    )
    add_tamper("not-a-recipient", basic, o, "not-a-recipient", "NZL is not among the recipients", "NZL")

    (OUT / "keys.json").write_text(json.dumps(key_doc, indent=2, sort_keys=True) + "\n")
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(manifest['valid'])} valid and {len(manifest['tamper'])} tamper vectors to {OUT}")
    supplement()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
