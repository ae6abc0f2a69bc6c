"""Joint reports: the frozen report-v1 vectors, the document and statement formats, the
publication bundle's verification order, and the client-side thread flows (no broker)."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from msmt import reports
from msmt.client import Batch, Delivery, InboxPage, Receipt, Received
from msmt.core import (
    EncryptionPrivateKey,
    Markings,
    Opened,
    SigningPrivateKey,
    canonical,
    errors,
    new_item_id,
    parse,
    seal,
)
from msmt.core import governance as gov
from msmt.core import report as rp
from msmt.errors import ClientError
from msmt.trust import root_fingerprint

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "report-v1"
DIRECTORY = Path(__file__).resolve().parents[1] / "vectors" / "directory-v1"
CHAIN = [(DIRECTORY / "root.json").read_bytes()] + [
    p.read_bytes() for p in sorted((DIRECTORY / "chain").glob("*.json"))
]
STATE = gov.verify_chain(CHAIN)
EXPECTED: dict[str, Any] = json.loads((VECTORS / "expected.json").read_text(encoding="utf-8"))
KEYS: dict[str, Any] = json.loads((VECTORS / "keys.json").read_text(encoding="utf-8"))
PIN = json.loads((DIRECTORY / "fingerprint.json").read_text())["fingerprint"]
VALID = (VECTORS / "valid" / "all.json").read_bytes()
NEGATIVES = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((VECTORS / "negative").glob("*.json"))]
T0 = 1_796_000_000_000
HOUR = 3_600_000
REPORT_CODES = {
    cls.code
    for cls in vars(rp).values()
    if isinstance(cls, type) and issubclass(cls, rp.ReportError) and cls is not rp.ReportError
}


def signing_key(country: str, generation: int = 0) -> SigningPrivateKey:
    return SigningPrivateKey.from_seed(bytes.fromhex(KEYS["signing"][country][str(generation)]["seed"]))


KOR, USA, JPN, NZL = signing_key("KOR"), signing_key("USA", 1), signing_key("JPN", 1), signing_key("NZL")


def apply_edits(base: bytes, edits: list[dict[str, Any]]) -> bytes:
    """The harness of docs/reports.md section 9: set / delete on the decoded bundle, then
    insert-bytes on the encoded one."""
    value = canonical.decode(base)
    for edit in edits:
        if edit["op"] == "insert-bytes":
            continue
        *parents, last = edit["path"]
        target = value
        for step in parents:
            target = target[step]
        if edit["op"] == "set":
            target[last] = edit["value"]
        else:
            assert edit["op"] == "delete"
            del target[last]
    data = canonical.encode(value)
    for edit in edits:
        if edit["op"] == "insert-bytes":
            data = data[: edit["offset"]] + edit["text"].encode() + data[edit["offset"] :]
    return data


def document(**overrides: Any) -> rp.ReportDocument:
    parts: dict[str, Any] = {
        "title": "Ship-to-ship transfers",
        "body": "# Findings\n\n1. Transfers at night.\n",
        "participants": ["KOR", "USA", "JPN"],
        "rule": rp.Rule("all"),
        "attachments": {"map.png": ("image/png", b"\x89PNG fake")},
        "report_id": "01a229f1-2800-7000-8000-00000000e001",
    }
    parts.update(overrides)
    return rp.new_document(**parts)


def bundle_for(doc: rp.ReportDocument, *signers: tuple[str, SigningPrivateKey, int, str]) -> bytes:
    statements = [rp.endorse(doc, c, key, at, reservation) for c, key, at, reservation in signers]
    return rp.build_bundle(doc.to_bytes(), statements, CHAIN)


ALL_THREE = (
    ("KOR", KOR, T0 + 10 * HOUR, ""),
    ("USA", USA, T0 + 11 * HOUR, ""),
    ("JPN", JPN, T0 + 12 * HOUR, "Not finding 1."),
)


# --- the frozen vectors ---------------------------------------------------------------------------


def test_vector_keys_derive_from_their_seeds() -> None:
    for country, generations in KEYS["signing"].items():
        for generation, entry in generations.items():
            assert signing_key(country, int(generation)).key_id == entry["key_id"], (country, generation)


def test_vector_root_fingerprint_is_the_directory_vectors() -> None:
    assert EXPECTED["root_fingerprint"] == PIN == rp.root_fingerprint(CHAIN[0]) == root_fingerprint(CHAIN[0])
    assert EXPECTED["directory"] == {"seq": STATE.seq, "head": STATE.head}


@pytest.mark.parametrize("name", sorted(EXPECTED["valid"]))
@pytest.mark.parametrize("pinned", [True, False])
def test_valid_vectors_verify_to_the_expected_verdict(name: str, pinned: bool) -> None:
    verdict = rp.verify_bundle((VECTORS / name).read_bytes(), PIN if pinned else None)
    summary = verdict.to_dict()
    assert summary.pop("valid") is True
    expected = dict(EXPECTED["valid"][name], root_pinned=pinned)
    assert summary == expected


def test_valid_vector_sentence() -> None:
    assert EXPECTED["valid"]["valid/all.json"]["sentence"] == (
        "endorsed by KOR, USA, JPN on 2026-11-30; reservations: JPN: Japan does not associate itself "
        "with finding 4 (the broker in a third country)."
    )


@pytest.mark.parametrize("vector", NEGATIVES, ids=[v["name"] for v in NEGATIVES])
def test_negative_vectors_fail_with_their_code(vector: dict[str, Any]) -> None:
    data = apply_edits((VECTORS / vector["base"]).read_bytes(), vector["edits"])
    assert data != VALID
    with pytest.raises(errors.MsmtError) as pinned:
        rp.verify_bundle(data, PIN)
    assert pinned.value.code == vector["error"], pinned.value.detail
    if vector["unpinned"] == "valid":
        verdict = rp.verify_bundle(data)
        assert verdict.root_fingerprint != PIN and not verdict.root_pinned
    else:
        with pytest.raises(errors.MsmtError) as unpinned:
            rp.verify_bundle(data)
        assert unpinned.value.code == vector["unpinned"]


def test_negative_vectors_cover_every_report_error() -> None:
    listed = {v["error"] for v in NEGATIVES}
    wanted = REPORT_CODES - {"malformed-withdrawal", "bad-withdrawal-signature"}
    assert wanted <= listed, wanted - listed
    required = {
        "body-byte-changed",
        "attachment-byte-changed",
        "endorsement-mldsa-bit-flipped",
        "key-bytes-swapped",
        "signed-by-foreign-key",
        "endorsement-for-other-version",
        "rule-not-met",
        "duplicate-endorser",
        "non-participant-endorser",
    }
    assert required <= {v["name"] for v in NEGATIVES}
    assert {v["name"] for v in NEGATIVES} == {r["name"] for r in EXPECTED["negative"]}


@pytest.mark.parametrize("name", sorted(EXPECTED["documents"]))
def test_document_vectors(name: str) -> None:
    data = (VECTORS / name).read_bytes()
    doc = rp.parse_document(data)
    assert doc.to_bytes() == data
    want = EXPECTED["documents"][name]
    assert (doc.manifest.report_id, doc.manifest.version, doc.manifest.previous, doc.content_hash) == (
        want["report_id"],
        want["version"],
        want["previous"],
        want["content_hash"],
    )
    manifest = canonical.encode(canonical.decode(data)["manifest"])
    assert doc.content_hash == hashlib.sha256(b"MSMT-v1 report-content\x00" + manifest).hexdigest()


def test_version_chain_of_the_document_vectors() -> None:
    v1 = rp.parse_document((VECTORS / "documents" / "report-a-v1.json").read_bytes())
    v2 = rp.parse_document((VECTORS / "documents" / "report-a-v2.json").read_bytes())
    assert v2.manifest.previous == v1.content_hash and v2.manifest.report_id == v1.manifest.report_id


def test_statement_vectors() -> None:
    item = EXPECTED["statements"]
    endorsement = rp.verify_endorsement(
        (VECTORS / "statements" / "endorsement-jpn.json").read_bytes(), JPN.public_key
    )
    assert endorsement.to_dict() == item["statements/endorsement-jpn.json"]["signed"]
    withdrawal = rp.verify_withdrawal(
        (VECTORS / "statements" / "withdrawal-kor.json").read_bytes(), KOR.public_key
    )
    assert withdrawal.to_dict() == item["statements/withdrawal-kor.json"]["signed"]
    # the two contexts differ: one statement's signature never passes as the other's
    _, sig = rp.parse_endorsement((VECTORS / "statements" / "endorsement-jpn.json").read_bytes())
    with pytest.raises(errors.BadSignature):
        JPN.public_key.verify(sig, endorsement.signed_bytes(), rp.WITHDRAWAL_CONTEXT)
    with pytest.raises(errors.BadSignature):
        JPN.public_key.verify(sig, endorsement.signed_bytes(), gov.SIGNATURE_CONTEXT)


def test_any_changed_byte_is_rejected() -> None:
    """A sample of single-bit changes across the whole bundle: report, endorsements, keys, chain."""
    value = canonical.decode(VALID)
    regions = {
        "report": canonical.encode(value["report"]),
        "endorsements": canonical.encode(value["endorsements"]),
        "keys": canonical.encode(value["keys"]),
    }
    positions = set(random.Random(13).sample(range(len(VALID)), 60))
    for part in regions.values():  # a few positions inside each part for sure
        start = VALID.index(part)
        positions |= set(random.Random(len(part)).sample(range(start, start + len(part)), 15))
    for position in sorted(positions):
        changed = bytearray(VALID)
        changed[position] ^= 0x01
        with pytest.raises(errors.MsmtError):
            rp.verify_bundle(bytes(changed), PIN)


# --- documents ----------------------------------------------------------------------------------


def test_new_document_and_revision() -> None:
    v1 = document()
    assert v1.manifest.participants == ("JPN", "KOR", "USA")
    assert v1.manifest.previous == "" and v1.manifest.version == 1
    v2 = rp.revise(v1, body="# Findings\n\nRevised.\n", rule=rp.Rule("quorum", 2))
    assert (v2.manifest.version, v2.manifest.previous, v2.manifest.report_id) == (
        2,
        v1.content_hash,
        v1.manifest.report_id,
    )
    assert v2.attachments == v1.attachments and v2.manifest.needed == 2
    assert rp.parse_document(v2.to_bytes()) == v2


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"rule": rp.Rule("quorum", 2)}, "rule"),
        ({"participants": ["KOR", "USA"]}, "participants"),
        ({"title": "Another title"}, "title"),
        ({"body": "# Findings\n\n1. Transfers by day.\n"}, "body"),
        ({"attachments": {"map.png": ("image/png", b"\x89PNG fakf")}}, "attachment bytes"),
        ({"attachments": {"map.png": ("image/jpeg", b"\x89PNG fake")}}, "attachment type"),
        ({"attachments": {"map2.png": ("image/png", b"\x89PNG fake")}}, "attachment name"),
        ({"report_id": "01a229f1-2800-7000-8000-00000000e002"}, "report id"),
    ],
)
def test_content_hash_covers_every_part(change: dict[str, Any], why: str) -> None:
    assert document(**change).content_hash != document().content_hash, why


@pytest.mark.parametrize(
    "change",
    [
        {"title": "two\nlines"},
        {"title": ""},
        {"title": "x" * 201},
        {"title": "bidi \u202e override"},
        {"participants": ["KOR", "usa"]},
        {"participants": []},
        {"participants": ["ALL"]},
        {"rule": rp.Rule("quorum", 4)},
        {"rule": rp.Rule("quorum", 0)},
        {"rule": rp.Rule("most")},
        {"attachments": {"../etc/passwd": ("text/plain", b"x")}},
        {"attachments": {"a b": ("text/plain", b"x")}},
        {"attachments": {"a.txt": ("Text/Plain", b"x")}},
        {"report_id": "not-a-uuid"},
        {"version": 2},
        {"previous": "ab" * 32},
    ],
)
def test_invalid_documents_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(rp.MalformedReport):
        document(**change)


def test_parse_document_is_strict() -> None:
    data = document().to_bytes()
    with pytest.raises(rp.MalformedReport):
        rp.parse_document(data.replace(b"{", b"{ ", 1))
    value = canonical.decode(data)
    value["extra"] = "x"
    with pytest.raises(rp.MalformedReport):
        rp.parse_document(canonical.encode(value))
    value = canonical.decode(data)
    value["body"] += "!"
    with pytest.raises(rp.ContentMismatch):
        rp.parse_document(canonical.encode(value))
    value = canonical.decode(data)
    value["manifest"]["attachments"][0]["size"] += 1
    with pytest.raises(rp.ContentMismatch):
        rp.parse_document(canonical.encode(value))


# --- statements ---------------------------------------------------------------------------------


def test_endorsement_round_trip_and_checks() -> None:
    doc = document()
    data = rp.endorse(doc, "KOR", KOR, T0, "Only\nsections 1-2.")
    endorsement = rp.verify_endorsement(data, KOR.public_key)
    assert (endorsement.version, endorsement.content_hash, endorsement.reservation) == (
        1,
        doc.content_hash,
        "Only\nsections 1-2.",
    )
    with pytest.raises(rp.BadEndorsementSignature):
        rp.verify_endorsement(data, USA.public_key)
    value = canonical.decode(data)
    value["signed"]["version"] = 2
    with pytest.raises(rp.BadEndorsementSignature):
        rp.verify_endorsement(canonical.encode(value), KOR.public_key)
    with pytest.raises(rp.MalformedEndorsement):
        rp.endorse(doc, "KOR", KOR, T0, "\x1b[31m")
    with pytest.raises(rp.MalformedEndorsement):
        rp.parse_endorsement(data + b" ")


def test_withdrawal_round_trip_and_checks() -> None:
    item = "01a229f1-2800-7000-8000-00000000e009"
    data = rp.withdraw(item, "USA", USA, T0, "Sent by mistake.")
    assert rp.verify_withdrawal(data, USA.public_key).item_id == item
    with pytest.raises(rp.BadWithdrawalSignature):
        rp.verify_withdrawal(data, KOR.public_key)
    with pytest.raises(rp.MalformedWithdrawal):
        rp.withdraw(item, "USA", USA, T0, "")
    with pytest.raises(ValueError, match="names key"):
        rp._sign(rp.Withdrawal(item, "USA", KOR.key_id, T0, "x"), USA, rp.WITHDRAWAL_CONTEXT)


# --- bundles ------------------------------------------------------------------------------------


def test_bundle_round_trip_and_verdict() -> None:
    doc = document()
    verdict = rp.verify_bundle(bundle_for(doc, *ALL_THREE), PIN)
    assert verdict.endorsers == ("KOR", "USA", "JPN")
    assert verdict.reservations == (("JPN", "Not finding 1."),)
    assert verdict.satisfied_ms == T0 + 12 * HOUR and verdict.root_pinned
    assert verdict.sentence() == "endorsed by KOR, USA, JPN on 2026-11-30; reservations: JPN: Not finding 1."


def test_verdict_dates_span_days_and_quorum_time() -> None:
    doc = document(rule=rp.Rule("quorum", 2))
    signers = (("KOR", KOR, T0, ""), ("USA", USA, T0 + 30 * HOUR, ""), ("JPN", JPN, T0 + 50 * HOUR, ""))
    verdict = rp.verify_bundle(bundle_for(doc, *signers))
    assert verdict.dates() == "between 2026-11-30 and 2026-12-02"
    assert verdict.satisfied_ms == T0 + 30 * HOUR
    assert verdict.sentence().endswith("reservations: none")


def test_retired_key_counts_only_until_its_overlap_ends() -> None:
    old_usa = signing_key("USA", 0)  # retired at entry 4 (T0 + 4 h) with a one-day overlap
    doc = document()
    ok = (("KOR", KOR, T0 + 10 * HOUR, ""), ("USA", old_usa, T0 + 27 * HOUR, ""), ALL_THREE[2])
    assert rp.verify_bundle(bundle_for(doc, *ok)).endorsers == ("KOR", "JPN", "USA")
    late = rp.endorse(doc, "USA", old_usa, T0 + 28 * HOUR)
    with pytest.raises(rp.KeyNotInDirectory):
        rp.build_bundle(doc.to_bytes(), [late], CHAIN)


def test_builder_refuses_a_key_the_directory_does_not_list() -> None:
    doc = document()
    forged = rp.endorse(doc, "KOR", signing_key("ZZZ"), T0 + 10 * HOUR)
    with pytest.raises(rp.KeyNotInDirectory):
        rp.build_bundle(doc.to_bytes(), [forged], CHAIN)


def test_bundle_limits() -> None:
    with pytest.raises(rp.MalformedBundle):
        rp.verify_bundle(b"x" * (rp.MAX_BUNDLE_BYTES + 1))
    with pytest.raises(rp.MalformedBundle):
        rp.verify_bundle(b"\xff")
    value = canonical.decode(VALID)
    value["directory"] = []
    with pytest.raises(rp.MalformedBundle):
        rp.verify_bundle(canonical.encode(value))
    value = canonical.decode(VALID)
    value["format"] = "msmt-publication-v2"
    with pytest.raises(rp.MalformedBundle):
        rp.verify_bundle(canonical.encode(value))


def test_fingerprints_are_normalised() -> None:
    assert rp.normalize_fingerprint(PIN.lower().replace("-", " ")) == PIN
    with pytest.raises(ValueError):
        rp.normalize_fingerprint("F794-9FA2")
    with pytest.raises(ValueError):
        rp.verify_bundle(VALID, "not a fingerprint")


# --- client flows (no broker) -------------------------------------------------------------------


@dataclass
class FakeKeys:
    signing: SigningPrivateKey


@dataclass
class FakeClient:
    """Stands for `msmt.client.Client`: records what would be sealed and sent."""

    country: str
    keys: FakeKeys
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(
        self, payload: bytes, *, content_type: str, markings: Markings, recipients: Any = None, **options: Any
    ) -> Receipt:
        self.sent.append(
            {"payload": payload, "content_type": content_type, "recipients": list(recipients), **options}
        )
        return Receipt(options["item_id"], len(self.sent), options["created_ms"], tuple(recipients))


MARKINGS = Markings("RESTRICTED", "AMBER", ("G7",), (), ("maritime",))


def clients() -> dict[str, FakeClient]:
    return {
        c: FakeClient(c, FakeKeys(k)) for c, k in (("KOR", KOR), ("USA", USA), ("JPN", JPN), ("NZL", NZL))
    }


def test_thread_flow_draft_revise_comment_endorse_publish() -> None:
    c = clients()
    v1_doc = document()
    items = [reports.send_draft(c["KOR"], v1_doc, MARKINGS, now_ms=T0 + 10 * HOUR)]
    assert c["KOR"].sent[0]["recipients"] == ["JPN", "USA"]  # not to itself: the broker would refuse
    assert c["KOR"].sent[0]["content_type"] == rp.REPORT_MEDIA_TYPE
    state = reports.thread_status(items, STATE)
    thread = state.report(v1_doc.manifest.report_id[:12])
    v1 = thread.latest
    items.append(
        reports.send_comment(
            c["USA"],
            v1.item_id,
            "Finding 1 needs a source.",
            ["KOR", "USA", "JPN"],
            MARKINGS,
            now_ms=T0 + 11 * HOUR,
        )
    )
    items.append(
        reports.send_endorsement(c["JPN"], v1, MARKINGS, now_ms=T0 + 11 * HOUR)
    )  # of v1: will not count for v2
    v2_doc = rp.revise(v1.document, body="# Findings\n\n1. Transfers at night (source: AIS).\n")
    items.append(reports.send_revision(c["USA"], v1, v2_doc, MARKINGS, now_ms=T0 + 12 * HOUR))
    assert c["USA"].sent[-1]["supersedes"] == v1.item_id
    v2 = reports.thread_status(items, STATE).report(v1_doc.manifest.report_id).latest
    assert v2.number == 2
    for country, hours, reservation in (("KOR", 13, ""), ("USA", 14, ""), ("JPN", 15, "Not finding 1.")):
        items.append(
            reports.send_endorsement(
                c[country], v2, MARKINGS, reservation=reservation, now_ms=T0 + hours * HOUR
            )
        )
    assert c["JPN"].sent[-1]["in_reply_to"] == v2.item_id
    status = reports.thread_status(items, STATE)
    assert status.problems == []
    thread = status.report(v1_doc.manifest.report_id)
    rows = reports.log(thread)
    assert [(r["version"], r["by"], r["endorsed_by"], r["satisfied"]) for r in rows] == [
        (1, "KOR", ["JPN"], False),
        (2, "USA", ["KOR", "USA", "JPN (with reservation)"], True),
    ]
    assert rows[0]["comments"] == 1 and rows[0]["missing"] == ["KOR", "USA"]
    assert "+1. Transfers at night (source: AIS)." in reports.diff(v1.document, v2.document)
    bundle, verdict = reports.publish(thread, thread.latest, CHAIN)
    assert verdict.sentence() == "endorsed by KOR, USA, JPN on 2026-11-30; reservations: JPN: Not finding 1."
    assert rp.verify_bundle(bundle, PIN).content_hash == v2.content_hash
    with pytest.raises(rp.RuleNotMet):
        reports.publish(thread, thread.version(1), CHAIN)


def test_thread_refuses_what_does_not_check() -> None:
    c = clients()
    doc = document()
    items = [reports.send_draft(c["KOR"], doc, MARKINGS, now_ms=T0 + 10 * HOUR)]
    v1 = reports.thread_status(items, STATE).report(doc.manifest.report_id).latest
    good = reports.send_endorsement(c["USA"], v1, MARKINGS, now_ms=T0 + 11 * HOUR)
    # NZL relays USA's endorsement as its own item: refused (the statement names USA)
    relayed = reports.ThreadItem(
        "01a22a8c-6a00-7000-8000-000000000001", "NZL", T0 + 12 * HOUR, rp.ENDORSEMENT_MEDIA_TYPE, good.payload
    )
    # a version by a non-participant, and a damaged one
    outsider = reports.ThreadItem(
        "01a22a8c-6a00-7000-8000-000000000002",
        "NZL",
        T0 + 12 * HOUR,
        rp.REPORT_MEDIA_TYPE,
        rp.revise(doc).to_bytes(),
    )
    damaged = reports.ThreadItem(
        "01a22a8c-6a00-7000-8000-000000000003", "JPN", T0 + 12 * HOUR, rp.REPORT_MEDIA_TYPE, b"{}"
    )
    # KOR withdraws USA's endorsement: refused; USA withdraws it: it no longer counts
    foreign = reports.send_withdrawal(
        c["KOR"], good.item_id, "no", ["USA", "JPN"], MARKINGS, now_ms=T0 + 13 * HOUR
    )
    status = reports.thread_status([*items, good, relayed, outsider, damaged, foreign], STATE)
    assert len(status.problems) == 4, status.problems
    thread = status.report(doc.manifest.report_id)
    assert [i.endorsement.country for i in thread.endorsements_of(thread.latest)] == ["USA"]
    own = reports.send_withdrawal(
        c["USA"], good.item_id, "Premature.", ["KOR", "JPN"], MARKINGS, now_ms=T0 + 14 * HOUR
    )
    thread = reports.thread_status([*items, good, own], STATE).report(doc.manifest.report_id)
    assert thread.endorsements_of(thread.latest) == [] and good.item_id in thread.withdrawn


def test_flows_refuse_non_participants_and_wrong_versions() -> None:
    c = clients()
    doc = document()
    with pytest.raises(ClientError):
        reports.send_draft(c["NZL"], doc, MARKINGS)
    with pytest.raises(ClientError):
        reports.send_draft(c["KOR"], document(participants=["KOR"]), MARKINGS)
    item = reports.send_draft(c["KOR"], doc, MARKINGS, now_ms=T0)
    v1 = reports.thread_status([item], STATE).report(doc.manifest.report_id).latest
    with pytest.raises(ClientError):
        reports.send_revision(c["USA"], v1, document(body="unrelated"), MARKINGS)
    with pytest.raises(ClientError):
        reports.send_endorsement(c["NZL"], v1, MARKINGS)


def test_thread_items_round_trip() -> None:
    item = reports.ThreadItem(
        "01a229f1-2800-7000-8000-00000000e001",
        "KOR",
        T0,
        "text/markdown",
        b"hi",
        None,
        "01a229f1-2800-7000-8000-00000000e002",
    )
    assert reports.ThreadItem.from_dict(canonical.decode(canonical.encode(item.to_dict()))) == item


def received(item: reports.ThreadItem, seq: int) -> Received:
    """A delivery as `Client.receive` returns it, with a real signed header."""
    recipient = EncryptionPrivateKey.from_seed(bytes(32))
    envelope = seal(
        item.payload,
        content_type=item.content_type,
        markings=MARKINGS,
        recipients=[("GBR", recipient.public_key)],
        originator=item.originator,
        signing_key={"KOR": KOR, "USA": USA, "JPN": JPN, "NZL": NZL}[item.originator],
        item_id=item.item_id,
        created_ms=item.created_ms,
        supersedes=item.supersedes,
        in_reply_to=item.in_reply_to,
    )
    header = parse(envelope).header
    delivery = Delivery(
        seq,
        item.item_id,
        item.originator,
        item.created_ms,
        item.created_ms,
        "RESTRICTED",
        "AMBER",
        item.content_type,
        len(item.payload),
        seq,
        "pending",
    )
    return Received(delivery, Opened(header, item.payload))


@dataclass
class FakeInbox:
    deliveries: list[Received]
    calls: list[int] = field(default_factory=list)

    def receive(
        self, after: int = 0, *, limit: int = 100, wait: float = 0, read_ahead: bool = False
    ) -> Batch:
        self.calls.append(after)
        page = [r for r in self.deliveries if r.delivery.seq > after][:limit]
        cursor = page[-1].delivery.seq if page else after
        return Batch(InboxPage(tuple(r.delivery for r in page), cursor), tuple(page), ())


def test_sync_keeps_report_items_and_the_store_round_trips(tmp_path: Path) -> None:
    c = clients()
    doc = document()
    draft = reports.send_draft(c["KOR"], doc, MARKINGS, now_ms=T0 + 10 * HOUR)
    v1 = reports.thread_status([draft], STATE).report(doc.manifest.report_id).latest
    comment = reports.send_comment(
        c["USA"], v1.item_id, "A source?", ["KOR", "JPN"], MARKINGS, now_ms=T0 + 11 * HOUR
    )
    other = reports.ThreadItem(
        new_item_id(T0 + 11 * HOUR), "JPN", T0 + 11 * HOUR, "text/markdown", b"unrelated"
    )
    endorsement = reports.send_endorsement(c["JPN"], v1, MARKINGS, now_ms=T0 + 12 * HOUR)
    inbox = FakeInbox([received(i, n) for n, i in enumerate([draft, comment, other, endorsement], start=1)])
    store = reports.ThreadStore(tmp_path / "reports")
    assert reports.sync(inbox, store, limit=2) == 3
    assert inbox.calls == [0, 2, 4] and store.cursor == 4
    assert {i.item_id for i in store.items()} == {draft.item_id, comment.item_id, endorsement.item_id}
    assert reports.sync(inbox, store) == 0 and inbox.calls[-1] == 4
    status = reports.thread_status(store.items(), STATE)
    thread = status.report(doc.manifest.report_id)
    assert status.problems == [] and [e.endorsement.country for e in thread.endorsements] == ["JPN"]
    assert [cm.text for cm in thread.comments] == ["A source?"]
    assert not store.add(draft)
