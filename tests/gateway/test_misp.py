"""The gateway's MISP feed, read back with PyMISP (MISP's own loader), and MISP events sent as
STIX through a send profile (issue 12, item 4)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymisp import MISPAttribute, MISPEvent
from pymisp.tools import feed_meta_generator

from msmt.client import Client, Receipt
from msmt.core import Markings
from msmt.errors import SubmitPending
from msmt.gateway import misp, stix
from msmt.gateway.cli import main
from msmt.gateway.config import SendProfile
from msmt.gateway.send import Sender
from msmt.gateway.store import Store, follow_once
from msmt.outbox import Outbox
from msmt.trust import TrustStore
from tests.e2e.servers import broker_server
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, root_of

from .stix_samples import bundle, indicator
from .support import FakeInbox, batch, received, withdrawal

SHA256 = "a" * 64
MD5 = "b" * 32
SHA1 = "c" * 40
T0 = "2026-03-01T10:00:00.000Z"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    yield s
    s.close()


def sdo(kind: str, level: str | None = None, **properties: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": kind,
        "spec_version": "2.1",
        "id": f"{kind}--{uuid.uuid4()}",
        "created": T0,
        "modified": T0,
        **properties,
    }
    if level is not None:
        obj["object_marking_refs"] = [stix.TLP2_IDS[level]]
    return obj


def pattern(text: str, level: str | None = None) -> dict[str, Any]:
    return sdo(
        "indicator", level, name=f"watch {text[:30]}", pattern=text, pattern_type="stix", valid_from=T0
    )


def sco(kind: str, **properties: Any) -> dict[str, Any]:
    return {"type": kind, "spec_version": "2.1", "id": f"{kind}--{uuid.uuid4()}", **properties}


def sighting_bundle() -> tuple[dict[str, Any], dict[str, Any]]:
    """An AMBER bundle with every kind of object the export maps, and two it does not."""
    author = sdo("identity", name="KOR maritime unit", identity_class="organization")
    report = sdo(
        "report",
        "AMBER",
        name="Ship-to-ship transfer sighted in the Yellow Sea",
        description="Two tankers moored side by side for six hours.",
        published=T0,
        report_types=["observed-data"],
        object_refs=[author["id"]],
        created_by_ref=author["id"],
    )
    actor = sdo("threat-actor", name="Lazarus Group")
    location = sdo("location", name="Yellow Sea", latitude=38.1, longitude=124.5)
    relationship = sdo(
        "relationship", relationship_type="related-to", source_ref=actor["id"], target_ref=location["id"]
    )
    objects = [
        author,
        report,
        pattern("[ipv4-addr:value = '198.51.100.7']", "GREEN"),
        pattern("[domain-name:value = 'tanker-broker.example']"),
        pattern(f"[file:hashes.'SHA-256' = '{SHA256}']"),
        pattern("[url:value = 'http://tanker-broker.example/it\\'s']"),
        pattern("[email-addr:value = 'broker@tanker-broker.example']"),
        pattern("[ipv4-addr:value = '192.0.2.1'] OR [ipv4-addr:value = '192.0.2.2']"),
        pattern("[ipv4-addr:value = '192.0.2.3' AND domain-name:value = 'and.example']"),
        {**pattern("[ipv4-addr:value = '192.0.2.4']"), "revoked": True},
        sco("ipv4-addr", value="198.51.100.7"),  # the indicator's value again: one attribute
        sco("ipv4-addr", value="203.0.113.9"),
        sco("file", hashes={"MD5": MD5, "SHA-1": SHA1}),
        actor,
        location,
        relationship,
    ]
    return bundle(*objects, levels=("GREEN", "AMBER")), report


EXPECTED_ATTRIBUTES = {  # (type, value, to_ids, category)
    ("ip-dst", "198.51.100.7", True, "Network activity"),
    ("domain", "tanker-broker.example", True, "Network activity"),
    ("sha256", SHA256, True, "Payload delivery"),
    ("url", "http://tanker-broker.example/it's", True, "Network activity"),
    ("email-src", "broker@tanker-broker.example", True, "Payload delivery"),
    ("ip-dst", "192.0.2.1", True, "Network activity"),
    ("ip-dst", "192.0.2.2", True, "Network activity"),
    ("ip-dst", "203.0.113.9", False, "Network activity"),
    ("md5", MD5, False, "Payload delivery"),
    ("sha1", SHA1, False, "Payload delivery"),
    ("threat-actor", "Lazarus Group", False, "Attribution"),
    ("text", "Two tankers moored side by side for six hours.", False, "Other"),
}
MARKING_TAGS = ['msmt:classification="RESTRICTED"', 'msmt:topic="maritime"', 'msmt:releasable-to="USA"']


def load(path: Path) -> MISPEvent:
    event = MISPEvent()
    event.load_file(path)
    return event


def event_files(out: Path) -> dict[str, Path]:
    return {p.stem: p for p in out.glob("*.json") if p.name != "manifest.json"}


def md5(value: str) -> str:
    return hashlib.md5(value.encode()).hexdigest()


def as_feed(event: MISPEvent) -> dict[str, Any]:
    """What PyMISP's own feed generator writes for an event it loaded."""
    return dict(event.to_feed(with_meta=False)["Event"])


# --- export ----------------------------------------------------------------------------------


def test_the_feed_reads_back_with_pymisp_exactly_as_misp_writes_it(store: Store, tmp_path: Path) -> None:
    sent, report = sighting_bundle()
    stix_item = received(1, sent)
    markdown = received(2, b"# Arms transfer at Nampo\n\nCrates loaded at night.", tlp="GREEN")
    store.save(batch([stix_item, markdown]))
    out = tmp_path / "feed"
    result = misp.export_feed(store, out)
    location_text = 1
    assert (result.events, result.event_reports) == (2, 1)
    assert result.attributes == len(EXPECTED_ATTRIBUTES) + location_text
    assert result.unmapped == Counter(
        {
            "indicator (pattern not a list of values: AND, operators, qualifiers)": 1,
            "indicator (revoked)": 1,
            "relationship": 1,
        }
    )
    stix_uuid = misp.event_uuid(stix_item.opened.header.item_id)
    md_uuid = misp.event_uuid(markdown.opened.header.item_id)
    assert stix_uuid != md_uuid and str(uuid.UUID(stix_uuid)) == stix_uuid
    files = event_files(out)
    assert set(files) == {stix_uuid, md_uuid}

    event = load(files[stix_uuid])
    assert event.uuid == stix_uuid and event.info == report["name"]
    assert (event.Orgc.name, event.Orgc.uuid) == ("KOR", misp.organisation_uuid("KOR"))
    assert [t.name for t in event.tags] == ["tlp:amber", *MARKING_TAGS]
    assert (
        event.date.isoformat()
        == datetime.fromtimestamp(stix_item.opened.header.created_ms / 1000, UTC).date().isoformat()
    )
    texts = [a for a in event.attributes if a.type == "text"]
    location = next(a for a in texts if "Yellow Sea" in a.value)
    assert "latitude 38.1" in location.value and "longitude 124.5" in location.value
    got = {(a.type, a.value, a.to_ids, a.category) for a in event.attributes if a is not location}
    assert got == EXPECTED_ATTRIBUTES
    tagged = {a.value: [t.name for t in a.tags] for a in event.attributes if a.tags}
    assert tagged == {  # an object's own TLP marking tags its attributes
        "198.51.100.7": ["tlp:green"],
        "Two tankers moored side by side for six hours.": ["tlp:amber"],
    }
    categories = MISPAttribute().describe_types["category_type_mappings"]
    assert all(a.type in categories[a.category] for a in event.attributes)
    assert len({a.uuid for a in event.attributes}) == len(event.attributes)

    notes = load(files[md_uuid])
    assert notes.info == "Arms transfer at Nampo" and not notes.attributes
    assert [(r.name, r.content) for r in notes.event_reports] == [
        ("Arms transfer at Nampo", "# Arms transfer at Nampo\n\nCrates loaded at night.")
    ]
    assert [t.name for t in notes.tags] == ["tlp:green", *MARKING_TAGS]

    # field for field what PyMISP's feed generator writes for the events it loaded
    for path in files.values():
        written = json.loads(path.read_text())["Event"]
        assert written["distribution"] == "0" and written["Object"] == []
        expected = {k: v for k, v in written.items() if k not in ("distribution", "Object")}
        if not expected["Attribute"]:
            del expected["Attribute"]
        assert as_feed(load(path)) == expected

    # the manifest and hashes.csv, as PyMISP would make them from these event files
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest) == set(files)
    for name, path in files.items():
        assert manifest[name] == load(path).manifest[name]
    hashes = (out / "hashes.csv").read_text().splitlines()
    assert sorted(hashes) == sorted(
        f"{md5(str(a.value))},{name}" for name, path in files.items() for a in load(path).attributes
    )
    assert f"{md5(SHA256)},{stix_uuid}" in hashes
    again = tmp_path / "regenerated"
    shutil.copytree(out, again)
    feed_meta_generator(again)
    assert json.loads((again / "manifest.json").read_text()) == manifest
    assert sorted((again / "hashes.csv").read_text().splitlines()) == sorted(hashes)


def test_red_items_are_never_exported_unless_asked(store: Store, tmp_path: Path) -> None:
    red = received(1, bundle(indicator("RED", value="198.51.100.66"), levels=("RED",)), tlp="RED")
    amber = received(2, bundle(indicator("AMBER"), levels=("AMBER",)))
    red_md = received(3, b"# Names of the crew\n", tlp="RED")
    store.save(batch([red, amber, red_md]))
    red_uuid = misp.event_uuid(red.opened.header.item_id)
    out = tmp_path / "feed"

    result = misp.export_feed(store, out)
    assert result.events == 1 and result.skipped == Counter(
        {"TLP:RED (for named recipients only; --include-red exports them)": 2}
    )
    assert set(event_files(out)) == {misp.event_uuid(amber.opened.header.item_id)}
    assert set(json.loads((out / "manifest.json").read_text())) == set(event_files(out))
    assert md5("198.51.100.66") not in (out / "hashes.csv").read_text()
    assert "2 TLP:RED" in "\n".join(result.summary())

    asked = misp.export_feed(store, out, include_red=True)
    assert asked.events == 3 and not asked.skipped
    assert load(event_files(out)[red_uuid]).tags[0].name == "tlp:red"
    assert red_uuid in json.loads((out / "manifest.json").read_text())

    again = misp.export_feed(store, out)  # not asked this time: the RED events leave the feed
    assert again.removed == 2 and red_uuid not in event_files(out)
    assert red_uuid not in json.loads((out / "manifest.json").read_text())
    assert md5("198.51.100.66") not in (out / "hashes.csv").read_text()


def test_files_are_private_and_exporting_again_changes_nothing(store: Store, tmp_path: Path) -> None:
    store.save(batch([received(1, sighting_bundle()[0]), received(2, b"# A report\n")]))
    out = tmp_path / "exports" / "misp"
    first = misp.export_feed(store, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 2 + 3  # two events, the manifest, hashes.csv and the marker
    assert all(stat.S_IMODE((out / n).stat().st_mode) == 0o600 for n in names)
    assert first.written == 4
    before = {n: ((out / n).read_bytes(), (out / n).stat().st_mtime_ns) for n in names}

    second = misp.export_feed(store, out)
    assert (second.written, second.unchanged, second.removed) == (0, 4, 0)
    assert {n: ((out / n).read_bytes(), (out / n).stat().st_mtime_ns) for n in before} == before
    assert sorted(p.name for p in out.iterdir()) == names  # no temporary file left behind


def test_a_failed_write_leaves_the_previous_file_whole(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = received(1, bundle(indicator("AMBER"), levels=("AMBER",)))
    store.save(batch([item]))
    out = tmp_path / "feed"
    misp.export_feed(store, out)
    path = out / f"{misp.event_uuid(item.opened.header.item_id)}.json"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    follow_once(FakeInbox([batch([withdrawal(2, item.opened.header.item_id)])]), store)  # it changes

    def interrupted(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(misp.MispError, match="No space left"):
        misp.export_feed(store, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half written
    monkeypatch.undo()
    misp.export_feed(store, out)
    assert path.read_bytes() != before[path.name]


def test_a_withdrawn_item_is_exported_withdrawn(store: Store, tmp_path: Path) -> None:
    item = received(1, bundle(indicator("AMBER", value="198.51.100.99"), levels=("AMBER",)))
    store.save(batch([item]))
    out = tmp_path / "feed"
    misp.export_feed(store, out)
    name = misp.event_uuid(item.opened.header.item_id)
    before = load(out / f"{name}.json")
    stamp = int(json.loads((out / "manifest.json").read_text())[name]["timestamp"])
    assert [a.deleted for a in before.attributes] == [False]

    follow_once(FakeInbox([batch([withdrawal(2, item.opened.header.item_id)])]), store)
    result = misp.export_feed(store, out)
    assert result.withdrawn == 1 and result.events == 1
    assert result.skipped == Counter({"withdrawal statements (applied to the items they withdraw)": 1})
    after = load(out / f"{name}.json")
    assert after.info == f"[withdrawn] {before.info}"
    assert misp.WITHDRAWN_TAG in [t.name for t in after.tags]
    assert [(a.uuid, a.value, a.deleted, a.to_ids) for a in after.attributes] == [
        (before.attributes[0].uuid, "198.51.100.99", True, False)
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest[name]["timestamp"] > stamp  # MISP fetches the new version
    assert after.timestamp > before.timestamp
    assert md5("198.51.100.99") not in (out / "hashes.csv").read_text()


def test_stix_the_gateway_does_not_serve_is_not_exported(store: Store, tmp_path: Path) -> None:
    looser = received(1, bundle(indicator("RED"), levels=("RED",)), tlp="AMBER")
    pdf = received(2, b"%PDF-1.7")
    store.save(batch([looser]))
    store.save(batch([pdf]))
    assert store.item(looser.opened.header.item_id).stix_error is not None  # type: ignore[union-attr]
    row = store.item(pdf.opened.header.item_id)
    assert row is not None
    row.content_type = "application/pdf"
    assert misp.item_event(row).skipped == "application/pdf payloads (not mapped to MISP)"
    result = misp.export_feed(store, tmp_path / "feed")
    assert result.events == 1 and result.skipped == Counter(
        {"STIX the gateway does not serve (invalid, or stricter than its envelope)": 1}
    )
    assert set(event_files(tmp_path / "feed")) == {misp.event_uuid(pdf.opened.header.item_id)}


def test_since_exports_the_items_stored_since(store: Store, tmp_path: Path) -> None:
    early = received(1, b"# early\n")
    late = received(2, b"# late\n")
    march = misp.parse_since("2026-03-01")
    store.save(batch([early]), at_ms=march - 1)
    store.save(batch([late]), at_ms=march + 3_600_000)
    out = tmp_path / "feed"
    result = misp.export_feed(store, out, since_ms=misp.parse_since("2026-03-01T00:30:00Z"))
    assert result.events == 1 and set(event_files(out)) == {misp.event_uuid(late.opened.header.item_id)}
    assert misp.export_feed(store, out, since_ms=march).events == 1
    assert misp.export_feed(store, out).events == 2
    for bad in ("yesterday", "2026-13-01", "2026-03-01T00:00:00+02:00"):
        with pytest.raises(misp.MispError, match="neither a date"):
            misp.parse_since(bad)


def test_a_directory_that_is_not_a_feed_is_left_alone(store: Store, tmp_path: Path) -> None:
    store.save(batch([received(1, b"# a report\n")]))
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(misp.MispError, match="not a MISP feed msmt-gateway wrote"):
        misp.export_feed(store, home)
    assert [p.name for p in home.iterdir()] == ["notes.txt"]
    with pytest.raises(misp.MispError, match="not a directory"):
        misp.export_feed(store, home / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert misp.export_feed(store, empty).events == 1  # an empty one is taken


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("[ipv4-addr:value = '198.51.100.7']", [("ipv4-addr:value", "198.51.100.7")]),
        ("[domain-name:value='a.example']", [("domain-name:value", "a.example")]),
        (f"[file:hashes.'SHA-256' = '{SHA256}']", [("file:hashes.sha256", SHA256)]),
        (f"[file:hashes.MD5 = '{MD5}']", [("file:hashes.md5", MD5)]),
        ("[url:value = 'http://x.example/it\\'s']", [("url:value", "http://x.example/it's")]),
        (
            "[email-addr:value = 'a@x.example' OR email-addr:value = 'b@x.example']",
            [("email-addr:value", "a@x.example"), ("email-addr:value", "b@x.example")],
        ),
        (
            "[ipv4-addr:value = '192.0.2.1'] OR [url:value = 'http://a OR b/']",
            [("ipv4-addr:value", "192.0.2.1"), ("url:value", "http://a OR b/")],
        ),
        ("[ipv4-addr:value = '192.0.2.1' AND ipv4-addr:value = '192.0.2.2']", None),
        ("[ipv4-addr:value != '192.0.2.1']", None),
        ("[ipv4-addr:value = '192.0.2.1'] WITHIN 300 SECONDS", None),
        ("[ipv4-addr:value = '192.0.2.1'] FOLLOWEDBY [ipv4-addr:value = '192.0.2.2']", None),
        ("[network-traffic:dst_ref.value = '192.0.2.1']", [("network-traffic:dst_ref.value", "192.0.2.1")]),
        ("[ipv4-addr:value = 192]", None),
        ("ipv4-addr:value = '192.0.2.1'", None),
        ("[ipv4-addr:value = '192.0.2.1'", None),
    ],
)
def test_simple_stix_patterns_are_lists_of_values(text: str, values: list[tuple[str, str]] | None) -> None:
    assert misp.pattern_values(text) == values


# --- import ----------------------------------------------------------------------------------

EVENT_UUID = "5b6f1a2e-0c3d-4e5f-8a9b-1c2d3e4f5a6b"
PROFILE = SendProfile.from_dict(
    "partners",
    {
        "classification": "RESTRICTED",
        "tlp": "AMBER",
        "releasable_to": ["USA", "JPN"],
        "topics": ["maritime"],
        "writers": ["analyst"],
    },
)
DERIVED_TO_ALL = SendProfile.from_dict(
    "everyone",
    {
        "classification": "RESTRICTED",
        "tlp": "bundle",
        "releasable_to": ["ALL"],
        "topics": ["maritime"],
        "writers": ["analyst"],
    },
)


def attribute(kind: str, value: str, *, tags: Iterable[str] = (), **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"uuid": str(uuid.uuid4()), "type": kind, "value": value, **more}
    if tags:
        out["Tag"] = [{"name": t} for t in tags]
    return out


def misp_event(
    *attributes: dict[str, Any], tags: Iterable[str] = ("tlp:green",), **more: Any
) -> dict[str, Any]:
    return {
        "Event": {
            "uuid": EVENT_UUID,
            "info": "Tanker NEW KONK: transfers off Nampo",
            "date": "2026-03-01",
            "timestamp": "1772359200",
            "publish_timestamp": "1772359200",
            "distribution": "1",
            "Orgc": {"name": "KOR-MISP", "uuid": str(uuid.uuid4())},
            "Tag": [{"name": t, "colour": "#339900"} for t in tags],
            "Attribute": list(attributes),
            **more,
        }
    }


def sample_event() -> dict[str, Any]:
    return misp_event(
        attribute("ip-dst", "198.51.100.7", to_ids=True, tags=["tlp:amber"], comment="C2"),
        attribute("domain", "tanker-broker.example", to_ids=False),
        attribute("sha256", SHA256, to_ids="1"),
        attribute("text", "Moored alongside for six hours."),
        attribute("btc", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"),
        attribute("ip-src", "192.0.2.50", distribution="0"),
        attribute("ip-src", "192.0.2.51", deleted=True),
        attribute("domain", "tanker-broker.example", to_ids=False, tags=["tlp:amber"]),  # again, stricter
        tags=("tlp:green", 'osint:source-type="report"', "tlp:ex:chr"),
        Object=[{"name": "file", "Attribute": [attribute("md5", MD5, to_ids=True)]}],
    )


def by_type(bundle_: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in bundle_["objects"]:
        out.setdefault(obj["type"], []).append(obj)
    return out


def test_a_misp_event_becomes_a_stix_bundle_marked_from_its_tags() -> None:
    event = sample_event()
    plan = misp.event_to_bundle(event, "KOR")
    stix.parse_bundle(plan.bundle)  # valid STIX 2.1, object by object (stix2)
    objects = by_type(plan.bundle)
    identity = objects["identity"][0]
    assert identity["name"] == "KOR" and identity["id"] == f"identity--{misp.organisation_uuid('KOR')}"
    report = objects["report"][0]
    assert report["id"] == f"report--{EVENT_UUID}" and report["name"] == event["Event"]["info"]
    assert report["object_marking_refs"] == [stix.TLP2_IDS["GREEN"]]
    assert report["labels"] == ['osint:source-type="report"', "tlp:ex:chr"]  # not a TLP level
    assert report["created"] == "2026-03-01T10:00:00.000Z"
    green, amber = stix.TLP2_IDS["GREEN"], stix.TLP2_IDS["AMBER"]
    got = {
        (o.get("pattern") or o.get("value") or o.get("content") or json.dumps(o.get("hashes"))): (
            o["type"],
            o["object_marking_refs"],
        )
        for kind in ("indicator", "domain-name", "note")
        for o in objects.get(kind, [])
    }
    assert got == {
        "[ipv4-addr:value = '198.51.100.7']": ("indicator", [amber]),  # its own tag
        "tanker-broker.example": ("domain-name", [amber]),  # to_ids false: an observable, once
        f"[file:hashes.'SHA-256' = '{SHA256}']": ("indicator", [green]),
        f"[file:hashes.'MD5' = '{MD5}']": ("indicator", [green]),  # an object's attribute
        "Moored alongside for six hours.": ("note", [green]),
    }
    assert set(report["object_refs"]) == {o["id"] for o in plan.bundle["objects"][4:]}
    assert {o["id"] for o in objects["marking-definition"]} == {green, amber}
    attribute_uuid = event["Event"]["Attribute"][0]["uuid"]
    assert f"indicator--{attribute_uuid}" in {o["id"] for o in objects["indicator"]}
    assert all(o["created_by_ref"] == identity["id"] for o in objects["indicator"] + objects["note"])
    assert plan.kept_back == Counter(
        {"type btc (not mapped)": 1, "distribution 0 (your organisation only)": 1, "deleted": 1}
    )
    assert "192.0.2.50" not in json.dumps(plan.bundle) and "192.0.2.51" not in json.dumps(plan.bundle)
    assert misp.check_import(plan, PROFILE).markings.tlp == "AMBER"
    assert misp.check_import(plan, DERIVED_TO_ALL).markings.tlp == "AMBER"  # its strictest object's

    untagged = misp.event_to_bundle(misp_event(attribute("url", "http://a.example/"), tags=()), "KOR")
    assert untagged.tlp == "AMBER"  # unmarked is not CLEAR
    white = misp.event_to_bundle(misp_event(attribute("url", "http://a.example/"), tags=["TLP:WHITE"]), "KOR")
    assert white.tlp == "CLEAR"
    bare = misp.event_to_bundle(json.dumps(sample_event()["Event"]), "KOR")  # the bare event, as text
    assert bare.event_uuid == EVENT_UUID and bare.mapped == plan.mapped == 5


def test_an_event_for_our_organisation_only_never_leaves() -> None:
    event = misp_event(attribute("ip-dst", "198.51.100.7"), distribution=0)
    with pytest.raises(misp.MispRefused, match="distribution 0, 'your organisation only'") as caught:
        misp.event_to_bundle(event, "KOR")
    assert EVENT_UUID in str(caught.value)
    orcon = misp_event(attribute("ip-dst", "198.51.100.7"), tags=["tlp:green", 'msmt:caveat="ORCON"'])
    with pytest.raises(misp.MispRefused, match="originator-controlled report"):
        misp.event_to_bundle(orcon, "KOR")


def test_a_tlp_stricter_than_the_profile_is_refused_naming_the_tag() -> None:
    red_event = misp.event_to_bundle(misp_event(attribute("ip-dst", "198.51.100.7"), tags=["tlp:red"]), "KOR")
    with pytest.raises(misp.MispRefused) as caught:
        misp.check_import(red_event, PROFILE)
    message = str(caught.value)
    assert f"event {EVENT_UUID}" in message and "tlp:red" in message
    assert "'partners'" in message and "TLP:AMBER" in message
    assert caught.value.object_id == f"report--{EVENT_UUID}"

    red = attribute("ip-dst", "198.51.100.8", tags=["tlp:red"])
    mixed = misp.event_to_bundle(misp_event(attribute("url", "http://a.example/"), red), "KOR")
    with pytest.raises(misp.MispRefused) as caught:
        misp.check_import(mixed, PROFILE)
    assert f"attribute {red['uuid']} (ip-dst 198.51.100.8)" in str(caught.value)
    assert "(tag tlp:red)" in str(caught.value)
    assert caught.value.object_id == f"indicator--{red['uuid']}"
    with pytest.raises(misp.MispRefused, match="releasable to ALL"):
        misp.check_import(mixed, DERIVED_TO_ALL)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        ({"Event": {"uuid": EVENT_UUID}}, "has no 'info'"),
        (misp_event(Attribute={"type": "ip-dst"}), "must be lists"),
        (misp_event({"type": "ip-dst"}), "needs a 'type' and a 'value'"),
        (misp_event(attribute("ip-dst", "198.51.100.7"), uuid="not-a-uuid"), "is not a UUID"),
        (
            misp_event(attribute("ip-dst", "198.51.100.7"), tags=["tlp:purple"]),
            "unknown TLP tag 'tlp:purple'",
        ),
        (misp_event(attribute("ip-dst", "198.51.100.7"), Tag="tlp:red"), "must be a list"),
        (misp_event(attribute("ip-dst", "198.51.100.7"), Tag=[{"colour": "#fff"}]), "not a tag with a name"),
        (misp_event(attribute("ip-dst", "198.51.100.7"), distribution="9"), "must be one of 0, 1, 2, 3, 4"),
        (misp_event(attribute("ip-dst", "not-an-address")), "is not a valid ip-dst"),
        (misp_event(attribute("sha256", "abc")), "is not a valid sha256"),
        (misp_event(attribute("ip-dst", "198.51.100.7", to_ids="maybe")), "true or false"),
        (
            misp_event(attribute("btc", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT")),
            "no attribute this gateway maps",
        ),
        (misp_event(attribute("ip-dst", "198.51.100.7", tags=["tlp:rouge"])), "unknown TLP tag"),
    ],
)
def test_bad_events_get_clear_errors(document: Any, message: str) -> None:
    with pytest.raises(misp.MispError, match=message):
        misp.check_event(document, PROFILE)


@pytest.fixture
def sent_through(tmp_path: Path) -> Iterator[tuple[FakeSendingClient, Sender, Store]]:
    store = Store(f"sqlite:///{tmp_path / 'kor.db'}")
    client = FakeSendingClient()
    yield client, Sender(client, store, [PROFILE]), store
    store.close()


class FakeSendingClient:
    """A sending client that records what it is asked to send; `pending` leaves it in the outbox."""

    def __init__(self) -> None:
        self.outbox = Outbox(None)
        self.sent: list[tuple[bytes, str, Markings, tuple[str, ...] | None]] = []
        self.pending = False

    def send(
        self,
        payload: bytes,
        *,
        content_type: str,
        markings: Markings,
        recipients: Iterable[str] | None = None,
    ) -> Receipt:
        self.sent.append((payload, content_type, markings, tuple(recipients) if recipients else None))
        item_id = f"0190{len(self.sent):028x}"
        if self.pending:
            raise SubmitPending(item_id, "cannot reach the broker")
        return Receipt(item_id, 7, int(time.time() * 1000), ("JPN", "USA"))

    def resend_pending(self) -> list[Receipt]:
        return []


def test_import_seals_and_submits_through_the_send_profile(
    sent_through: tuple[FakeSendingClient, Sender, Store],
) -> None:
    client, sender, store = sent_through
    imported = misp.import_event(sender, PROFILE, sample_event(), country="KOR", user="analyst")
    assert len(client.sent) == 1
    payload, content_type, markings, recipients = client.sent[0]
    assert content_type == "application/stix+json" and recipients is None
    assert json.loads(payload) == imported.plan.bundle
    assert markings == PROFILE.markings("AMBER")
    row = imported.submission
    assert (row.outcome, row.item_id, row.log_index, row.requested_by) == (
        "sent",
        f"0190{1:028x}",
        7,
        "analyst",
    )
    assert store.submission(row.status_id) is not None
    lines = misp.describe(imported)
    assert f"as item {row.item_id} to JPN, USA, log index 7" in lines[0]
    assert "kept back 3 attribute(s):" in lines

    client.pending = True
    pending = misp.import_event(sender, PROFILE, sample_event(), country="KOR", user="analyst")
    assert pending.submission.outcome == "pending"
    assert "pending in the outbox" in misp.describe(pending)[0]

    before = len(client.sent)
    for refused in (
        misp_event(attribute("url", "http://a.example/"), distribution="0"),
        misp_event(attribute("url", "http://a.example/"), tags=["tlp:red"]),
    ):
        with pytest.raises(misp.MispRefused):
            misp.import_event(sender, PROFILE, refused, country="KOR", user="analyst")
    assert len(client.sent) == before  # nothing sealed, nothing sent


# --- the command line ------------------------------------------------------------------------


def write_config(home: Path, broker: str = "https://broker.invalid", *, profile: str = PROFILE.name) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "gateway.toml"
    config.write_text(
        f'broker_url = "{broker}"\nkeys = "keys"\naudience = "{AUDIENCE}"\n'
        f'[tokens]\nmisp = "sha256${"0" * 64}"\n'
        f'[send.{profile}]\nclassification = "RESTRICTED"\ntlp = "AMBER"\n'
        'releasable_to = ["USA", "JPN"]\ntopics = ["maritime"]\nwriters = ["misp"]\n'
    )
    return config


def test_the_commands_refuse_bad_arguments_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path / "gw"))
    missing = str(tmp_path / "nowhere.json")
    assert main(["misp-import", "--config", config, "--profile", "partners", missing]) == 2
    err = capsys.readouterr().err
    assert "misp-invalid: cannot read the MISP event" in err and "Traceback" not in err
    (tmp_path / "event.json").write_text("{not json")
    assert (
        main(["misp-import", "--config", config, "--profile", "partners", str(tmp_path / "event.json")]) == 2
    )
    assert "the MISP event is not JSON" in capsys.readouterr().err
    assert main(["misp-import", "--config", config, "--profile", "nobody", missing]) == 2
    assert "no send profile 'nobody' (send profiles: partners)" in capsys.readouterr().err
    (tmp_path / "red.json").write_text(
        json.dumps(misp_event(attribute("url", "http://a/"), tags=["tlp:red"]))
    )
    assert main(["misp-import", "--config", config, "--profile", "partners", str(tmp_path / "red.json")]) == 2
    assert "misp-refused" in capsys.readouterr().err  # refused before the keys are even opened
    out = str(tmp_path / "feed")
    assert main(["misp-export", "--config", config, "--out", out, "--since", "last week"]) == 2
    assert "neither a date" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["misp-export", "--config", config, "--out", str(tmp_path / "file")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["misp-import", "--config", config, str(tmp_path / "red.json")])  # no --profile
    assert usage.value.code == 2


FAST_KDF = {"memory_kib": 19456, "iterations": 2, "lanes": 1}


def test_a_misp_event_imported_at_kor_reaches_usas_misp_feed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """misp-import at KOR's gateway -> a real broker -> USA's gateway -> misp-export."""
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    root = root_of(url)
    kor_home, usa_home = tmp_path / "kor", tmp_path / "usa"
    _KEYS["KOR"].save(kor_home / "keys", "kor passphrase", kdf=FAST_KDF)
    TrustStore.pin(root, kor_home / "keys" / "trust")
    monkeypatch.setenv("MSMT_PASSPHRASE", "kor passphrase")
    event = sample_event()
    (tmp_path / "event.json").write_text(json.dumps(event))
    with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _):
        config = write_config(kor_home, base)
        args = ["misp-import", "--config", str(config), "--profile", "partners", str(tmp_path / "event.json")]
        assert main(args) == 0
        printed = capsys.readouterr().out
        assert f"sent MISP event {EVENT_UUID}" in printed and "to JPN, USA" in printed
        item_id = printed.split(" as item ")[1].split()[0]

        usa_store = Store(f"sqlite:///{usa_home / 'gateway.db'}")
        try:
            with Client(base, _KEYS["USA"], trust=TrustStore.pin(root), audience=AUDIENCE) as usa:
                deadline = time.monotonic() + 30
                while usa_store.item(item_id) is None:
                    follow_once(usa, usa_store)
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
        finally:
            usa_store.close()
    write_config(usa_home)
    feed = usa_home / "feed"
    assert main(["misp-export", "--config", str(usa_home / "gateway.toml"), "--out", str(feed)]) == 0
    assert "wrote a MISP feed of 1 event(s), 5 attribute(s)" in capsys.readouterr().out
    exported = load(feed / f"{misp.event_uuid(item_id)}.json")
    assert exported.info == event["Event"]["info"] and exported.Orgc.name == "KOR"
    assert [t.name for t in exported.tags][:2] == ["tlp:amber", 'msmt:classification="RESTRICTED"']
    assert {(a.type, a.value, a.to_ids) for a in exported.attributes} == {
        ("ip-dst", "198.51.100.7", True),
        ("domain", "tanker-broker.example", False),
        ("sha256", SHA256, True),
        ("md5", MD5, True),
        ("text", "Moored alongside for six hours.", False),
    }
    tagged = {a.value: [t.name for t in a.tags] for a in exported.attributes}
    assert tagged["198.51.100.7"] == tagged["tanker-broker.example"] == ["tlp:amber"]
    assert tagged[SHA256] == ["tlp:green"]
