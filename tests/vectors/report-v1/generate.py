"""Generate the frozen joint-report vectors in tests/vectors/report-v1/ (docs/reports.md, section 9).

Run once (`python tests/vectors/report-v1/generate.py --force`); the output is committed and every
later version of the code must accept the valid bundles with exactly the verdicts in
`expected.json` and reject each negative vector with the code it names.

Inputs are fixed: the members' directory is the frozen chain of tests/vectors/directory-v1 (root
and entries 1-9, fingerprint F794-9FA2-1450-F8CE-75F6-4E16-D479-13C6), every key comes from the
seeds of tests/vectors/directory-v1/keys.json (derived by `generate_directory.seed`), report ids
and times are constants. ML-DSA-65 signing is randomised, though, so a new run gives different,
equally valid signature bytes: do not regenerate casually. The tests only verify these files.

A negative vector is the valid bundle `base` decoded, changed by `edits` (applied in order), and
encoded canonically again:
- `{"op": "set", "path": P, "value": V}` replaces the member or array element at path P (a list
  of member names and array indexes) with V;
- `{"op": "delete", "path": P}` removes it (an array element: the later ones move up);
- `{"op": "insert-bytes", "offset": N, "text": T}`, applied to the encoded bytes, inserts the
  UTF-8 bytes of T before byte N.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from generate_directory import HOUR, T0, Agency, agency, seed  # noqa: E402

from msmt.core import KeyKind, canonical  # noqa: E402
from msmt.core import governance as gov  # noqa: E402
from msmt.core import report as rp  # noqa: E402
from msmt.core.errors import MsmtError  # noqa: E402

DIRECTORY = HERE.parent / "directory-v1"
OUT = HERE
REPORT_A = "01a229f1-2800-7000-8000-00000000a001"
REPORT_B = "01a229f1-2800-7000-8000-00000000b002"
OTHER_REPORT = "01a229f1-2800-7000-8000-00000000c003"
WITHDRAWN_ITEM = "01a22a9e-cb80-7000-8000-00000000d004"

BODY_V1 = """# Ship-to-ship transfers of refined petroleum, 2026

## Summary

Between January and September 2026 the team observed 41 ship-to-ship transfers
of refined petroleum products to vessels bound for the DPRK.

## Findings

1. Transfers took place mostly at night, in waters off the Yellow Sea.
2. Several vessels disabled their AIS transponders before each transfer.
"""

BODY_V2 = BODY_V1.replace("41 ship-to-ship", "43 ship-to-ship") + (
    "3. Two vessels changed flag & name within a week (see *figure-1.png*).\n"
    "4. On 12 March a transfer was arranged by a broker in a third country.\n"
)

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5f4a4b20000000049454e44ae426082"
)
STIX = json.dumps(
    {
        "type": "bundle",
        "id": "bundle--6f0a3c5e-1b2d-4c3e-9f10-0a1b2c3d4e5f",
        "objects": [
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": "indicator--2f1c0e0a-7b3d-4e8f-a1b2-c3d4e5f60718",
                "created": "2026-09-30T00:00:00.000Z",
                "modified": "2026-09-30T00:00:00.000Z",
                "name": "Vessel IMO 9000001 in a ship-to-ship transfer",
                "pattern": "[x-vessel:imo = '9000001']",
                "pattern_type": "stix",
                "valid_from": "2026-09-30T00:00:00Z",
            }
        ],
    },
    indent=2,
    sort_keys=True,
).encode()
JPN_RESERVATION = "Japan does not associate itself with finding 4 (the broker in a third country)."


def directory_chain() -> list[bytes]:
    return [(DIRECTORY / "root.json").read_bytes()] + [
        p.read_bytes() for p in sorted((DIRECTORY / "chain").glob("*.json"))
    ]


def endorse(document: rp.ReportDocument, who: Agency, at_ms: int, reservation: str = "") -> bytes:
    return rp.endorse(document, who.country, who.signing, at_ms, reservation)


def endorse_as(
    document: rp.ReportDocument, country: str, who: Agency, at_ms: int, reservation: str = ""
) -> bytes:
    """`who`'s key signing in the name of `country`."""
    return rp.endorse(document, country, who.signing, at_ms, reservation)


def statement_value(data: bytes) -> Any:
    return canonical.decode(data)


def key_value(country: str, who: Agency) -> dict[str, str]:
    return {
        "country": country,
        "key_id": who.signing.key_id,
        "public_key": canonical.b64encode(who.signing.public_key.raw),
    }


def b64(data: bytes) -> str:
    return canonical.b64encode(data)


def apply_edits(base: bytes, edits: list[dict[str, Any]]) -> bytes:
    """What a harness does with a negative vector (see the module docstring)."""
    value = canonical.decode(base)
    raw_edits = []
    for edit in edits:
        if edit["op"] == "insert-bytes":
            raw_edits.append(edit)
            continue
        *parents, last = edit["path"]
        target = value
        for step in parents:
            target = target[step]
        if edit["op"] == "set":
            target[last] = edit["value"]
        elif edit["op"] == "delete":
            del target[last]
        else:
            raise ValueError(edit["op"])
    data = canonical.encode(value)
    for edit in raw_edits:
        data = data[: edit["offset"]] + edit["text"].encode() + data[edit["offset"] :]
    return data


def outcome(data: bytes, pin: str | None) -> str:
    try:
        rp.verify_bundle(data, pin)
    except MsmtError as exc:
        return exc.code
    return "valid"


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def verdict_summary(verdict: rp.Verdict) -> dict[str, Any]:
    summary = verdict.to_dict()
    del summary["valid"]
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="overwrite the committed vectors")
    if (OUT / "expected.json").exists() and not parser.parse_args().force:
        print(f"{OUT} holds vectors; they are frozen. Pass --force to regenerate.", file=sys.stderr)
        return 1

    chain = directory_chain()
    state = gov.verify_chain(chain)
    pin = rp.root_fingerprint(chain[0])
    jpn0, jpn1, kor, usa0, usa1, nzl = (
        agency("JPN"),
        agency("JPN", 1),
        agency("KOR"),
        agency("USA"),
        agency("USA", 1),
        agency("NZL"),
    )
    operator = agency("ZZZ")

    # --- report A: JPN, KOR, USA, every participant must endorse; version 2 is published ----
    a1 = rp.new_document(
        title="Ship-to-ship transfers of refined petroleum, 2026 (draft)",
        body=BODY_V1,
        participants=["KOR", "USA", "JPN"],
        rule=rp.Rule("all"),
        attachments={"figure-1.png": ("image/png", PNG)},
        report_id=REPORT_A,
    )
    a2 = rp.revise(
        a1,
        title="Ship-to-ship transfers of refined petroleum, 2026",
        body=BODY_V2,
        attachments={
            "figure-1.png": ("image/png", PNG),
            "sources.stix.json": ("application/stix+json", STIX),
        },
    )
    e_kor = endorse(a2, kor, T0 + 10 * HOUR)
    e_usa = endorse(a2, usa1, T0 + 11 * HOUR)
    e_jpn = endorse(a2, jpn1, T0 + 12 * HOUR, JPN_RESERVATION)
    bundle_a = rp.build_bundle(a2.to_bytes(), [e_kor, e_usa, e_jpn], chain)

    # --- report B: JPN, KOR, NZL, USA, any 3; USA signs with its retired key, still in overlap --
    b1 = rp.new_document(
        title="Overseas workers: remittance channels",
        body="# Overseas workers\n\nRemittances are routed through <b>front companies</b> & couriers.\n",
        participants=["JPN", "KOR", "NZL", "USA"],
        rule=rp.Rule("quorum", 3),
        report_id=REPORT_B,
    )
    bundle_b = rp.build_bundle(
        b1.to_bytes(),
        [
            endorse(b1, nzl, T0 + 10 * HOUR),
            endorse(b1, kor, T0 + 10 * HOUR + 1_800_000, "Figures for 2025 are provisional."),
            endorse(b1, usa0, T0 + 11 * HOUR),
        ],
        chain,
    )

    # --- statements on their own ----------------------------------------------------------------
    withdrawal = rp.withdraw(WITHDRAWN_ITEM, "KOR", kor.signing, T0 + 13 * HOUR, "Superseded by version 2.")

    # --- negative vectors, each with one defect, against report A's bundle ----------------------
    valid = canonical.decode(bundle_a)
    endorsements = valid["endorsements"]  # sorted by country: JPN, KOR, USA
    keys = valid["keys"]
    index = {e["signed"]["country"]: i for i, e in enumerate(endorsements)}
    key_index = {k["country"]: i for i, k in enumerate(keys)}

    def flipped(text: str, byte: int) -> str:
        raw = bytearray(canonical.b64decode(text))
        raw[byte] ^= 0x01
        return b64(bytes(raw))

    fake_members = {
        c: gov.member_body(c, "SECRET", [], agency(f"ZZ{c[0]}").public()) for c in ("JPN", "KOR", "USA")
    }
    fake_root_signed = gov.root_statement(fake_members, T0)
    fake_root = gov.signed_entry(fake_root_signed, [(c, agency(f"ZZ{c[0]}").signing) for c in fake_members])
    forged = [
        endorse_as(a2, c, agency(f"ZZ{c[0]}"), T0 + (10 + i) * HOUR)
        for i, c in enumerate(("KOR", "USA", "JPN"))
    ]
    forged_bundle = canonical.decode(rp.build_bundle(a2.to_bytes(), forged, [fake_root]))

    body_changed = a2.body.replace("43 ship-to-ship", "44 ship-to-ship")
    png_changed = bytearray(PNG)
    png_changed[40] ^= 0x01
    retitled = rp.new_document(
        title="Ship-to-ship transfers of refined petroleum, 2025",
        body=BODY_V2,
        participants=a2.manifest.participants,
        rule=a2.manifest.rule,
        attachments={
            "figure-1.png": ("image/png", PNG),
            "sources.stix.json": ("application/stix+json", STIX),
        },
        report_id=REPORT_A,
        version=2,
        previous=a1.content_hash,
    )
    other_report = rp.new_document(
        title=a2.manifest.title,
        body=BODY_V2,
        participants=a2.manifest.participants,
        rule=a2.manifest.rule,
        attachments={
            "figure-1.png": ("image/png", PNG),
            "sources.stix.json": ("application/stix+json", STIX),
        },
        report_id=OTHER_REPORT,
        version=2,
        previous=a1.content_hash,
    )
    kor_twice = sorted(
        [*endorsements, statement_value(endorse(a2, kor, T0 + 13 * HOUR))],
        key=lambda e: (e["signed"]["country"], e["signed"]["created_ms"]),
    )
    with_nzl = sorted(
        [*endorsements, statement_value(endorse(a2, nzl, T0 + 13 * HOUR))],
        key=lambda e: e["signed"]["country"],
    )
    keys_with_nzl = sorted([*keys, key_value("NZL", nzl)], key=lambda k: (k["country"], k["key_id"]))

    negatives: list[tuple[str, str, list[dict[str, Any]]]] = [
        (
            "body-byte-changed",
            "one character of the Markdown body changed (43 -> 44); the manifest is unchanged",
            [{"op": "set", "path": ["report", "body"], "value": body_changed}],
        ),
        (
            "attachment-byte-changed",
            "one bit of figure-1.png flipped; the manifest is unchanged",
            [
                {
                    "op": "set",
                    "path": ["report", "attachments", "figure-1.png"],
                    "value": b64(bytes(png_changed)),
                }
            ],
        ),
        (
            "manifest-title-changed",
            "the title changed and the manifest is consistent: the content hash is not the one endorsed",
            [{"op": "set", "path": ["report"], "value": retitled.to_dict()}],
        ),
        (
            "endorsement-mldsa-bit-flipped",
            "one bit of the ML-DSA-65 half of USA's endorsement signature flipped",
            [
                {
                    "op": "set",
                    "path": ["endorsements", index["USA"], "sig"],
                    "value": flipped(endorsements[index["USA"]]["sig"], 100),
                }
            ],
        ),
        (
            "endorsement-ed25519-bit-flipped",
            "one bit of the Ed25519 half of KOR's endorsement signature flipped",
            [
                {
                    "op": "set",
                    "path": ["endorsements", index["KOR"], "sig"],
                    "value": flipped(endorsements[index["KOR"]]["sig"], 3309 + 10),
                }
            ],
        ),
        (
            "endorsement-reservation-changed",
            "JPN's signed reservation text changed after signing",
            [
                {
                    "op": "set",
                    "path": ["endorsements", index["JPN"], "signed", "reservation"],
                    "value": "Japan fully endorses the report.",
                }
            ],
        ),
        (
            "endorsement-time-changed",
            "KOR's signed created_ms moved by one millisecond after signing",
            [
                {
                    "op": "set",
                    "path": ["endorsements", index["KOR"], "signed", "created_ms"],
                    "value": T0 + 10 * HOUR + 1,
                }
            ],
        ),
        (
            "key-bytes-swapped",
            "the public key listed for KOR (under KOR's key id) is replaced by NZL's signing key",
            [
                {
                    "op": "set",
                    "path": ["keys", key_index["KOR"], "public_key"],
                    "value": b64(nzl.signing.public_key.raw),
                }
            ],
        ),
        (
            "key-missing",
            "KOR's key is not in the bundle",
            [{"op": "delete", "path": ["keys", key_index["KOR"]]}],
        ),
        (
            "signed-by-foreign-key",
            "KOR's endorsement made with a key in no directory (the operator's), which the bundle lists for KOR",
            [
                {
                    "op": "set",
                    "path": ["endorsements", index["KOR"]],
                    "value": statement_value(endorse_as(a2, "KOR", operator, T0 + 10 * HOUR)),
                },
                {"op": "set", "path": ["keys", key_index["KOR"]], "value": key_value("KOR", operator)},
            ],
        ),
        (
            "signed-by-revoked-key",
            "JPN endorses with its first signing key, revoked at directory entry 6 (T0 + 6 h), at T0 + 12 h",
            [
                {
                    "op": "set",
                    "path": ["endorsements", index["JPN"]],
                    "value": statement_value(endorse(a2, jpn0, T0 + 12 * HOUR, JPN_RESERVATION)),
                },
                {"op": "set", "path": ["keys", key_index["JPN"]], "value": key_value("JPN", jpn0)},
            ],
        ),
        (
            "directory-truncated",
            "the directory stops at entry 5, before JPN's current key was introduced (entry 6)",
            [{"op": "delete", "path": ["directory", 6]} for _ in range(4)],
        ),
        (
            "directory-signature-bit-flipped",
            "one bit of a signature in directory entry 1 flipped",
            [{"op": "set", "path": ["directory", 1], "value": b64(_flip_entry_signature(chain[1]))}],
        ),
        (
            "forged-root",
            "a self-consistent bundle whose directory is a root the operator made, with its own keys "
            "for JPN, KOR and USA: it verifies only when no root is pinned (and then shows another fingerprint)",
            [
                {"op": "set", "path": ["endorsements"], "value": forged_bundle["endorsements"]},
                {"op": "set", "path": ["keys"], "value": forged_bundle["keys"]},
                {"op": "set", "path": ["directory"], "value": forged_bundle["directory"]},
            ],
        ),
        (
            "endorsement-for-other-version",
            "USA endorsed version 1, not the published version 2",
            [
                {
                    "op": "set",
                    "path": ["endorsements", index["USA"]],
                    "value": statement_value(endorse(a1, usa1, T0 + 11 * HOUR)),
                }
            ],
        ),
        (
            "endorsement-for-other-report",
            "USA's endorsement names another report id (same version number and text)",
            [
                {
                    "op": "set",
                    "path": ["endorsements", index["USA"]],
                    "value": statement_value(endorse(other_report, usa1, T0 + 11 * HOUR)),
                }
            ],
        ),
        (
            "rule-not-met",
            "JPN's endorsement (and its key) left out: the rule needs all 3 participants",
            [
                {"op": "delete", "path": ["endorsements", index["JPN"]]},
                {"op": "delete", "path": ["keys", key_index["JPN"]]},
            ],
        ),
        (
            "duplicate-endorser",
            "KOR endorses twice (T0 + 10 h and T0 + 13 h)",
            [{"op": "set", "path": ["endorsements"], "value": kor_twice}],
        ),
        (
            "non-participant-endorser",
            "NZL, a member but not a participant, endorses too",
            [
                {"op": "set", "path": ["endorsements"], "value": with_nzl},
                {"op": "set", "path": ["keys"], "value": keys_with_nzl},
            ],
        ),
        (
            "non-canonical",
            "a space after the opening brace",
            [{"op": "insert-bytes", "offset": 1, "text": " "}],
        ),
        (
            "report-extra-field",
            "the report document has a member its format does not define",
            [{"op": "set", "path": ["report", "comment"], "value": "unsigned note"}],
        ),
        (
            "endorsement-unknown-field",
            "USA's endorsement statement has a member its format does not define",
            [{"op": "set", "path": ["endorsements", index["USA"], "signed", "note"], "value": "x"}],
        ),
        (
            "unsorted-endorsements",
            "the endorsements are not sorted by country",
            [{"op": "set", "path": ["endorsements"], "value": list(reversed(endorsements))}],
        ),
        (
            "unused-key",
            "the bundle lists NZL's key, with which no endorsement was made",
            [{"op": "set", "path": ["keys"], "value": keys_with_nzl}],
        ),
    ]

    records = []
    for name, description, edits in negatives:
        data = apply_edits(bundle_a, edits)
        pinned, unpinned = outcome(data, pin), outcome(data, None)
        assert pinned != "valid", name
        records.append({"name": name, "description": description, "error": pinned, "unpinned": unpinned})
        write_json(
            OUT / "negative" / f"{name}.json",
            {
                "name": name,
                "description": description,
                "base": "valid/all.json",
                "edits": edits,
                "error": pinned,
                "unpinned": unpinned,
            },
        )

    (OUT / "valid").mkdir(parents=True, exist_ok=True)
    (OUT / "valid" / "all.json").write_bytes(bundle_a)
    (OUT / "valid" / "quorum.json").write_bytes(bundle_b)
    (OUT / "documents").mkdir(parents=True, exist_ok=True)
    documents = {"report-a-v1.json": a1, "report-a-v2.json": a2, "report-b-v1.json": b1}
    for file, document in documents.items():
        (OUT / "documents" / file).write_bytes(document.to_bytes())
    (OUT / "statements").mkdir(parents=True, exist_ok=True)
    (OUT / "statements" / "endorsement-jpn.json").write_bytes(e_jpn)
    (OUT / "statements" / "withdrawal-kor.json").write_bytes(withdrawal)

    used = {
        "JPN": {"0": jpn0, "1": jpn1},
        "KOR": {"0": kor},
        "NZL": {"0": nzl},
        "USA": {"0": usa0, "1": usa1},
        "ZZZ": {"0": operator},
        **{f"ZZ{c}": {"0": agency(f"ZZ{c}")} for c in "JKU"},
    }
    write_json(
        OUT / "keys.json",
        {
            "label": "MSMT-v1 directory vector {country} {kind} {generation}",
            "signing": {
                country: {
                    generation: {
                        "seed": seed(who.country, who.generation, KeyKind.SIGNING).hex(),
                        "key_id": who.signing.key_id,
                    }
                    for generation, who in generations.items()
                }
                for country, generations in used.items()
            },
        },
    )
    write_json(
        OUT / "expected.json",
        {
            "root_fingerprint": pin,
            "directory": {"seq": state.seq, "head": state.head},
            "valid": {
                "valid/all.json": verdict_summary(rp.verify_bundle(bundle_a, pin)),
                "valid/quorum.json": verdict_summary(rp.verify_bundle(bundle_b, pin)),
            },
            "documents": {
                f"documents/{file}": {
                    "report_id": d.manifest.report_id,
                    "version": d.manifest.version,
                    "previous": d.manifest.previous,
                    "content_hash": d.content_hash,
                }
                for file, d in documents.items()
            },
            "statements": {
                "statements/endorsement-jpn.json": {
                    "country": "JPN",
                    "key_id": jpn1.signing.key_id,
                    "signed": canonical.decode(e_jpn)["signed"],
                },
                "statements/withdrawal-kor.json": {
                    "country": "KOR",
                    "key_id": kor.signing.key_id,
                    "signed": canonical.decode(withdrawal)["signed"],
                },
            },
            "negative": records,
        },
    )
    print(f"wrote {len(records)} negative vectors; root {pin}")
    return 0


def _flip_entry_signature(entry: bytes) -> bytes:
    value = canonical.decode(entry)
    sig = bytearray(canonical.b64decode(value["signatures"][0]["sig"]))
    sig[200] ^= 0x01
    value["signatures"][0]["sig"] = canonical.b64encode(bytes(sig))
    return canonical.encode(value)


if __name__ == "__main__":
    raise SystemExit(main())
