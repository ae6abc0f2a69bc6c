"""MISP for the agency gateway: what it received, written as a MISP feed; a MISP event, sent.

**Export** (`export_feed`, `msmt-gateway misp-export`) writes the items this gateway stored as
a MISP feed directory, the format a MISP instance fetches ("Feeds", source format "MISP Feed"),
as PyMISP's feed generator writes it (`MISPEvent.to_feed`, `pymisp.tools.feed_meta_generator`):

- one `<event uuid>.json` per item: `{"Event": {uuid, info, date, timestamp,
  publish_timestamp, published, analysis, threat_level_id, distribution, extends_uuid,
  protected, Orgc, Tag, Attribute, Object, EventReport}}`, numbers as strings as MISP writes
  them;
- `manifest.json`: event uuid -> {Orgc, Tag, info, date, analysis, threat_level_id,
  timestamp}: what MISP reads first, to know which events are new or changed (a greater
  timestamp);
- `hashes.csv`: one `<md5 of an attribute value>,<event uuid>` line per attribute (MISP's
  feed cache and correlations).

One event per item. Its uuid is derived from the item id (a UUIDv5), so exporting again
writes the same files: an unchanged file is not rewritten, and MISP sees nothing new. Orgc is
the originating country; the tags are `tlp:<level>` (MISP's tlp taxonomy: tlp:clear,
tlp:green, tlp:amber, tlp:amber+strict, tlp:red) and the signed markings as machine tags
(`msmt:classification="..."`, `msmt:topic="..."`, `msmt:caveat="..."`,
`msmt:releasable-to="..."`). STIX objects become attributes by the hand mapping of
`MAPPED_PATHS` and `_object_attributes` (docs/gateway.md, "MISP", has the table); what is not
mapped is counted, never guessed. A Markdown or plain-text item becomes an event report (MISP's
own Markdown reports). Other payloads (PDF, images) are not exported.

Rules: **TLP:RED items are never exported** unless asked (`include_red`): a feed is fetched by
a MISP instance and shared by its users, and TLP:RED is for named recipients only. A STIX item
the gateway does not serve (invalid, or objects stricter than its envelope) is not exported.
A withdrawn item is exported *as withdrawn* (tag `msmt:withdrawn`, its attributes marked
deleted, a later timestamp), so that a MISP that fetched it before deletes its attributes on its
next fetch; its values leave `hashes.csv`. Withdrawal statements are not events.

Files are written 0600 in a directory created 0700, each atomically (a temporary file in the
same directory, fsynced, then renamed over the old one), events first, then `hashes.csv`, then
`manifest.json`: a MISP fetching during an export never reads half a file, nor a manifest
naming an event file not written yet. The directory holds exactly the events of the last
export (event files of items no longer exported are removed after the new manifest is in
place); a marker file keeps an export from writing into a directory that is not a feed it made.

**Import** (`event_to_bundle`, `import_event`, `msmt-gateway misp-import`) turns a MISP event
(`{"Event": {...}}` or the bare event) into a STIX 2.1 bundle: a `report` holding the event's
info, an indicator per attribute MISP marks for detection (`to_ids`), a cyber-observable per
other mapped attribute, a `note` per text or comment attribute, all `created_by_ref` the sending
country's identity and marked with the TLP 2.0 marking-definitions of `msmt.gateway.stix`: the
TLP of the attribute's own `tlp:*` tag, else the event's (AMBER when it has none: unmarked is
not CLEAR). An event of distribution 0 ("your organisation only") must not leave the agency and
is refused, as is one tagged with the ORCON caveat; attributes of distribution 0 are kept back.
The bundle then goes through `send.Sender` exactly as a TAXII POST: the send profile's
markings (`stix.check_markings`: an attribute or event tagged stricter than the profile allows
is refused, naming the MISP attribute or event and its tag), the broker's preflight, policy and
the durable outbox.

This module does not use misp-stix (MISP's STIX converter): it pulls the STIX 1 stack
(python-stix, cybox, mixbox, maec, lxml), PyMISP and misp-lib-stix2 (a fork of stix2 installing
the same `stix2` module the gateway validates with) into the gateway, for a mapping this small.
Nor does it need PyMISP: the tests read its feed back with PyMISP's loader and feed generator.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ..core import Markings
from ..errors import ClientError
from . import stix
from .config import BUNDLE_TLP, SendProfile
from .send import Prepared, Sender, prepare
from .store import WITHDRAWAL_MEDIA_TYPE, Item, Store, Submission, Withdrawn, parse_timestamp_us

# every uuid this module derives (events, attributes, reports, organisations) is a UUIDv5 in it
NAMESPACE = uuid.UUID("7926eb9b-8f08-47b9-80ba-90e7469db70b")
# STIX 2.1 section 2.9: deterministic ids of cyber-observables
STIX_SCO_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")

MARKER = ".msmt-gateway-feed"  # in a directory this module writes feeds to
MANIFEST = "manifest.json"
HASHES = "hashes.csv"
EVENT_FILE_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.json$")
MAX_INFO = 1024

# MISP's tlp taxonomy (misp-taxonomies/tlp) and its colours
TLP_TAGS = {
    "CLEAR": "tlp:clear",
    "GREEN": "tlp:green",
    "AMBER": "tlp:amber",
    "AMBER+STRICT": "tlp:amber+strict",
    "RED": "tlp:red",
}
TLP_FROM_TAG = {**{v: k for k, v in TLP_TAGS.items()}, "tlp:white": "CLEAR"}
TLP_COLOURS = {
    "CLEAR": "#ffffff",
    "GREEN": "#339900",
    "AMBER": "#FFC000",
    "AMBER+STRICT": "#FFC000",
    "RED": "#CC0033",
}
MSMT_COLOUR = "#0b5394"
WITHDRAWN_TAG = "msmt:withdrawn"
ANALYSIS_COMPLETED = 2  # MISP: 0 initial, 1 ongoing, 2 completed
THREAT_LEVEL_UNDEFINED = 4  # MISP: 1 high, 2 medium, 3 low, 4 undefined
DISTRIBUTION_ORGANISATION_ONLY = 0
TEXT_TYPES = ("text/markdown", "text/plain")

# STIX pattern paths and observable properties -> (MISP attribute type, category)
MAPPED_PATHS: dict[str, tuple[str, str]] = {
    "ipv4-addr:value": ("ip-dst", "Network activity"),
    "ipv6-addr:value": ("ip-dst", "Network activity"),
    "domain-name:value": ("domain", "Network activity"),
    "url:value": ("url", "Network activity"),
    "email-addr:value": ("email-src", "Payload delivery"),
    "file:name": ("filename", "Payload delivery"),
    "file:hashes.md5": ("md5", "Payload delivery"),
    "file:hashes.sha1": ("sha1", "Payload delivery"),
    "file:hashes.sha256": ("sha256", "Payload delivery"),
    "file:hashes.sha512": ("sha512", "Payload delivery"),
}
HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
OBSERVABLE_TYPES = ("ipv4-addr", "ipv6-addr", "domain-name", "url", "email-addr")
CVE_RE = re.compile(r"^CVE-\d{4}-\d{4,}$")


class MispError(ClientError):
    """A MISP event (or feed directory, or option) this module cannot take: says why."""

    code = "misp-invalid"


class MispRefused(MispError):
    """A MISP event that must not be sent as it is; `object_id` names the STIX object concerned."""

    code = "misp-refused"

    def __init__(self, detail: str, object_id: str | None = None) -> None:
        super().__init__(detail)
        self.object_id = object_id


def event_uuid(item_id: str) -> str:
    """The MISP event uuid of a received item: the same on every export."""
    return str(uuid.uuid5(NAMESPACE, f"msmt-item:{item_id}"))


def organisation_uuid(country: str) -> str:
    """A country's MISP organisation uuid (and STIX identity uuid)."""
    return str(uuid.uuid5(NAMESPACE, f"msmt-country:{country}"))


def tag(name: str, colour: str = MSMT_COLOUR) -> dict[str, Any]:
    """A tag as MISP's feed format writes it."""
    return {"colour": colour, "local": False, "name": name, "relationship_type": ""}


def tlp_tag(level: str) -> dict[str, Any]:
    return tag(TLP_TAGS[level], TLP_COLOURS[level])


def marking_tags(markings: Markings) -> list[dict[str, Any]]:
    """The event tags of an item's signed markings."""
    tags = [tlp_tag(markings.tlp), tag(f'msmt:classification="{markings.classification}"')]
    tags += [tag(f'msmt:topic="{topic}"') for topic in markings.topics]
    tags += [tag(f'msmt:caveat="{caveat}"') for caveat in markings.caveats]
    tags += [tag(f'msmt:releasable-to="{who}"') for who in markings.releasable_to]
    return tags


def value_hashes(attribute: Mapping[str, Any]) -> list[str]:
    """The md5 digests `hashes.csv` lists for an attribute (each part of a composite value)."""
    value = str(attribute["value"])
    parts = value.split("|") if "|" in str(attribute["type"]) else [value]
    return [hashlib.md5(part.encode()).hexdigest() for part in parts]  # noqa: S324 - MISP's format


# --- STIX patterns ---------------------------------------------------------------------------

_COMPARISON = re.compile(
    r"\s*(?P<type>[a-z0-9][a-z0-9-]*):(?P<path>[A-Za-z0-9_-]+(?:\.(?:'[^'\\]*'|[A-Za-z0-9_-]+))*)"
    r"\s*=\s*'(?P<value>(?:[^'\\]|\\.)*)'\s*"
)
_OR = re.compile(r"\s*OR\b\s*")
_UNESCAPE = re.compile(r"\\(.)")


def _path_key(object_type: str, path: str) -> str:
    """`file:hashes.'SHA-256'` and `file:hashes.SHA256` alike -> `file:hashes.sha256`."""
    head, _, rest = path.partition(".")
    if head == "hashes" and rest:
        name = rest.strip("'").lower().replace("-", "")
        return f"{object_type}:hashes.{name}"
    return f"{object_type}:{path}"


def pattern_values(pattern: str) -> list[tuple[str, str]] | None:
    """The (path, value) pairs of a simple STIX pattern: observation expressions of `=`
    comparisons joined by OR (`[ipv4-addr:value = '198.51.100.7']`,
    `[domain-name:value = 'a.example' OR url:value = 'http://b.example/']`), each of which is
    a value to look out for on its own. None for anything else (AND, other operators,
    FOLLOWEDBY, qualifiers...): such a pattern says more than a list of values."""
    found: list[tuple[str, str]] = []
    pos, end = 0, len(pattern)
    while True:
        while pos < end and pattern[pos].isspace():
            pos += 1
        if pos >= end or pattern[pos] != "[":
            return None
        pos += 1
        while True:
            match = _COMPARISON.match(pattern, pos)
            if match is None:
                return None
            value = _UNESCAPE.sub(r"\1", match["value"])
            found.append((_path_key(match["type"], match["path"]), value))
            pos = match.end()
            if pattern.startswith("]", pos):
                pos += 1
                break
            more = _OR.match(pattern, pos)
            if more is None:
                return None
            pos = more.end()
        rest = pattern[pos:].strip()
        if not rest:
            return found
        more = _OR.match(pattern, pos)
        if more is None:
            return None
        pos = more.end()


def _valid(misp_type: str, value: str) -> bool:
    if not value or len(value) > 65_000:
        return False
    if misp_type in ("ip-dst", "ip-src"):
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return False
        return True
    if misp_type in HASH_LENGTHS:
        return len(value) == HASH_LENGTHS[misp_type] and all(c in "0123456789abcdefABCDEF" for c in value)
    if misp_type in ("domain", "hostname"):
        return not any(c.isspace() for c in value) and "." in value
    if misp_type.startswith("email"):
        return "@" in value and not any(c.isspace() for c in value)
    if misp_type in ("url", "filename"):
        return not any(c in value for c in "\r\n")
    return True


# --- export: STIX objects -> attributes --------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    type: str
    category: str
    value: str
    to_ids: bool
    comment: str
    source: str  # the STIX object's id
    tlp: str | None  # the object's own TLP marking


def _comment(obj: Mapping[str, Any]) -> str:
    name = obj.get("name")
    return f"{obj['id']}: {name}" if isinstance(name, str) and name else str(obj["id"])


def _summary(obj: Mapping[str, Any]) -> str | None:
    """A readable text of an object that has no MISP attribute type of its own."""
    lines: list[str] = []
    name = obj.get("name")
    head = f"{obj['type']} {name}" if isinstance(name, str) and name else None
    if obj["type"] == "note":
        for key in ("abstract", "content"):
            if isinstance(obj.get(key), str) and obj[key]:
                lines.append(obj[key])
    if obj["type"] == "location":
        where = [
            f"{key} {obj[key]}"
            for key in ("latitude", "longitude", "precision", "street_address", "city", "region", "country")
            if key in obj and isinstance(obj[key], str | int | float)
        ]
        if where:
            lines.append(", ".join(where))
    for key in ("description", "identity_class", "contact_information"):
        if isinstance(obj.get(key), str) and obj[key]:
            lines.append(obj[key] if key == "description" else f"{key.replace('_', ' ')}: {obj[key]}")
    if head is None and not lines:
        return None
    return "\n".join([head, *lines] if head else lines)


def _object_attributes(obj: Mapping[str, Any], authors: set[str]) -> tuple[list[Attribute], str | None]:
    """The attributes a STIX object maps to, or why it maps to none (None: it needs none: a
    marking definition is a tag, the author identity is the event's Orgc, a report its info)."""
    kind = str(obj.get("type"))
    tlp = stix.object_tlp(dict(obj))
    comment = _comment(obj)
    source = str(obj["id"])

    def attr(key: str, value: Any, to_ids: bool) -> Attribute | None:
        if key not in MAPPED_PATHS or not isinstance(value, str) or not _valid(MAPPED_PATHS[key][0], value):
            return None
        misp_type, category = MAPPED_PATHS[key]
        return Attribute(misp_type, category, value, to_ids, comment, source, tlp)

    if kind == "marking-definition" or (kind == "identity" and source in authors):
        return [], None
    if obj.get("revoked") is True:
        return [], f"{kind} (revoked)"
    if kind == "indicator":
        if obj.get("pattern_type", "stix") != "stix" or not isinstance(obj.get("pattern"), str):
            return [], "indicator (not a STIX pattern)"
        pairs = pattern_values(obj["pattern"])
        if pairs is None:
            return [], "indicator (pattern not a list of values: AND, operators, qualifiers)"
        found = [a for a in (attr(key, value, True) for key, value in pairs) if a is not None]
        return found, None if found else "indicator (pattern on properties not mapped)"
    if kind in OBSERVABLE_TYPES:
        one = attr(f"{kind}:value", obj.get("value"), False)
        return ([one], None) if one else ([], f"{kind} (no valid value)")
    if kind == "file":
        hashes: dict[str, Any] = obj["hashes"] if isinstance(obj.get("hashes"), dict) else {}
        members = [(_path_key("file", f"hashes.{k}"), v) for k, v in hashes.items()]
        members.append(("file:name", obj.get("name")))
        found = [a for a in (attr(key, value, False) for key, value in members) if a is not None]
        return found, None if found else "file (no mapped hash or name)"
    if kind == "report":
        description = obj.get("description")
        if isinstance(description, str) and description:
            return [Attribute("text", "Other", description, False, comment, source, tlp)], None
        return [], None  # its name is the event's info
    name = obj.get("name")
    if kind == "threat-actor" and isinstance(name, str) and name:
        return [Attribute("threat-actor", "Attribution", name, False, comment, source, tlp)], None
    if kind == "campaign" and isinstance(name, str) and name:
        return [Attribute("campaign-name", "Attribution", name, False, comment, source, tlp)], None
    if kind == "vulnerability" and isinstance(name, str) and CVE_RE.fullmatch(name):
        return [Attribute("vulnerability", "External analysis", name, False, comment, source, tlp)], None
    if kind in ("relationship", "sighting", "observed-data", "bundle", "language-content"):
        return [], kind
    summary = _summary(obj)
    if summary is None:
        return [], f"{kind} (nothing to show)"
    return [Attribute("text", "Other", summary, False, comment, source, tlp)], None


def _title(objects: list[dict[str, Any]], authors: set[str]) -> str | None:
    reports = [o for o in objects if o.get("type") == "report" and isinstance(o.get("name"), str)]
    named = [
        o
        for o in objects
        if o.get("type") not in ("marking-definition", "relationship")
        and o.get("id") not in authors
        and isinstance(o.get("name"), str)
        and o["name"]
    ]
    for candidate in (*reports, *named):
        return str(candidate["name"])
    return None


def _markdown_title(text: str) -> str | None:
    """The text of a Markdown document's first line when it is a heading."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            return (stripped.lstrip("#").strip() or None) if stripped.startswith("#") else None
    return None


# --- export: items -> events ------------------------------------------------------------------


@dataclass
class Mapped:
    """An item as a MISP event (`event` None: not exported, `skipped` says why)."""

    event: dict[str, Any] | None
    skipped: str | None = None
    unmapped: Counter[str] = field(default_factory=Counter)  # STIX objects not mapped, by kind


def _seconds(ms: int) -> int:
    return ms // 1000


def _misp_attribute(item_id: str, a: Attribute, timestamp: int, deleted: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "uuid": str(uuid.uuid5(NAMESPACE, f"msmt-attribute:{item_id}:{a.source}:{a.type}:{a.value}")),
        "type": a.type,
        "category": a.category,
        "value": a.value,
        "comment": a.comment[:1024],
        "to_ids": a.to_ids and not deleted,
        "disable_correlation": False,
        "deleted": deleted,
        "timestamp": str(timestamp),
    }
    if a.tlp is not None:
        out["Tag"] = [tlp_tag(a.tlp)]
    return out


def item_event(item: Item, withdrawn: Withdrawn | None = None, *, include_red: bool = False) -> Mapped:
    """The MISP event of a stored item, or why it is not exported."""
    if item.content_type == WITHDRAWAL_MEDIA_TYPE:
        return Mapped(None, "withdrawal statements (applied to the items they withdraw)")
    markings = Markings.from_dict(json.loads(item.markings))
    if markings.tlp == "RED" and not include_red:
        return Mapped(None, "TLP:RED (for named recipients only; --include-red exports them)")
    media_type = item.content_type.split(";", 1)[0].strip().lower()
    timestamp = _seconds(item.stored_ms)
    if withdrawn is not None and withdrawn.applied_ms is not None:
        # later than any earlier export of it, so that MISP takes the new version
        timestamp = max(timestamp + 1, _seconds(withdrawn.applied_ms))
    deleted = withdrawn is not None
    unmapped: Counter[str] = Counter()
    attributes: list[Attribute] = []
    reports: list[dict[str, Any]] = []
    title: str | None = None
    if media_type == stix.STIX_MEDIA_TYPE:
        if item.stix_error is not None:
            return Mapped(None, "STIX the gateway does not serve (invalid, or stricter than its envelope)")
        objects: list[dict[str, Any]] = []
        if item.payload:  # empty: a withdrawn TLP:RED item's plaintext was deleted
            try:
                bundle = json.loads(item.payload)
                objects = [o for o in bundle.get("objects", []) if isinstance(o, dict) and "id" in o]
            except (ValueError, AttributeError):
                return Mapped(
                    None, "STIX the gateway does not serve (invalid, or stricter than its envelope)"
                )
        authors = {str(o["created_by_ref"]) for o in objects if isinstance(o.get("created_by_ref"), str)}
        title = _title(objects, authors)
        for obj in objects:
            found, why = _object_attributes(obj, authors)
            attributes += found
            if why is not None:
                unmapped[why] += 1
    elif media_type in TEXT_TYPES:
        if item.payload:
            try:
                text = item.payload.decode("utf-8")
            except UnicodeDecodeError:
                return Mapped(None, f"{media_type} that is not UTF-8")
            title = _markdown_title(text) if media_type == "text/markdown" else None
            report: dict[str, Any] = {
                "uuid": str(uuid.uuid5(NAMESPACE, f"msmt-report:{item.item_id}")),
                "name": (title or f"{item.originator} report")[:255],
                "content": text,
                "timestamp": str(timestamp),
            }
            if deleted:
                report["deleted"] = True
            reports.append(report)
    else:
        return Mapped(None, f"{media_type} payloads (not mapped to MISP)")

    info = (title or f"{media_type} from {item.originator}")[:MAX_INFO]
    tags = marking_tags(markings)
    if deleted:
        info = f"[withdrawn] {info}"[:MAX_INFO]
        tags.append(tag(WITHDRAWN_TAG, "#000000"))
    seen: set[tuple[str, str, str]] = set()
    unique: list[Attribute] = []
    for a in attributes:  # MISP refuses the same value twice in one event
        if (a.type, a.category, a.value) not in seen:
            seen.add((a.type, a.category, a.value))
            unique.append(a)
    event: dict[str, Any] = {
        "uuid": event_uuid(item.item_id),
        "info": info,
        "date": datetime.fromtimestamp(item.created_ms / 1000, UTC).date().isoformat(),
        "timestamp": str(timestamp),
        "publish_timestamp": str(timestamp),
        "published": True,
        "analysis": str(ANALYSIS_COMPLETED),
        "threat_level_id": str(THREAT_LEVEL_UNDEFINED),
        "distribution": str(DISTRIBUTION_ORGANISATION_ONLY),
        "extends_uuid": "",
        "protected": False,
        "Orgc": {"name": item.originator, "uuid": organisation_uuid(item.originator)},
        "Tag": tags,
        "Attribute": [_misp_attribute(item.item_id, a, timestamp, deleted) for a in unique],
        "Object": [],
    }
    if reports:
        event["EventReport"] = reports
    return Mapped(event, None, unmapped)


def manifest_entry(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event's `manifest.json` entry (numbers as numbers, as PyMISP writes the manifest)."""
    return {
        "Orgc": dict(event["Orgc"]),
        "Tag": [dict(t) for t in event["Tag"]],
        "info": event["info"],
        "date": event["date"],
        "analysis": int(event["analysis"]),
        "threat_level_id": int(event["threat_level_id"]),
        "timestamp": int(event["timestamp"]),
    }


# --- export: the feed directory ---------------------------------------------------------------


@dataclass
class ExportResult:
    directory: Path
    events: int = 0
    attributes: int = 0
    event_reports: int = 0
    withdrawn: int = 0  # events exported as withdrawn
    written: int = 0  # files (re)written
    unchanged: int = 0  # files already as they should be
    removed: int = 0  # event files of items no longer exported
    skipped: Counter[str] = field(default_factory=Counter)  # items not exported, by reason
    unmapped: Counter[str] = field(default_factory=Counter)  # STIX objects not mapped, by kind

    def summary(self) -> list[str]:
        lines = [
            f"wrote a MISP feed of {self.events} event(s), {self.attributes} attribute(s) and "
            f"{self.event_reports} event report(s) to {self.directory} ({self.written} file(s) written, "
            f"{self.unchanged} unchanged, {self.removed} removed)"
        ]
        if self.withdrawn:
            lines.append(f"{self.withdrawn} event(s) exported as withdrawn (tag {WITHDRAWN_TAG})")
        skipped = sum(self.skipped.values())
        lines.append(f"skipped {skipped} item(s)" + (":" if skipped else ""))
        lines += [f"  {count} {reason}" for reason, count in sorted(self.skipped.items())]
        if self.unmapped:
            lines.append(f"not mapped: {sum(self.unmapped.values())} STIX object(s) of exported items:")
            lines += [f"  {count} {kind}" for kind, count in sorted(self.unmapped.items())]
        return lines


def parse_since(text: str) -> int:
    """Milliseconds since the epoch from a date (2026-03-01, midnight UTC) or a UTC timestamp
    (2026-03-01T12:00:00Z)."""
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return int(datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
        return parse_timestamp_us(value) // 1000
    except ValueError:
        raise MispError(
            f"--since {text!r} is neither a date (2026-03-01) nor a UTC timestamp (2026-03-01T12:00:00Z)"
        ) from None


def _write_atomic(path: Path, data: bytes) -> bool:
    """Write `path` 0600 through a temporary file renamed over it; False when it already holds
    exactly `data` (left as it is)."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def _sync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _feed_directory(out: Path) -> None:
    """Create the feed directory 0700 (or take one this module wrote to before, or an empty one)."""
    try:
        if not out.exists():
            out.mkdir(parents=True, mode=0o700)
            out.chmod(0o700)
        elif not out.is_dir():
            raise MispError(f"{out} is not a directory")
        elif not (out / MARKER).exists() and any(out.iterdir()):
            raise MispError(
                f"{out} holds files and is not a MISP feed msmt-gateway wrote (it has no {MARKER}): "
                "export into a new or empty directory"
            )
        marker = out / MARKER
        if not marker.exists():
            _write_atomic(marker, b"a MISP feed written by msmt-gateway misp-export\n")
    except OSError as exc:
        raise MispError(f"cannot use {out} for the MISP feed: {exc}") from exc


def _stored_items(store: Store, since_ms: int | None) -> Iterator[Item]:
    query = select(Item).order_by(Item.stored_ms, Item.item_id)
    if since_ms is not None:
        query = query.where(Item.stored_ms >= since_ms)
    with store.sessions() as session:
        yield from session.scalars(query.execution_options(yield_per=200))


def export_feed(
    store: Store, out: Path, *, since_ms: int | None = None, include_red: bool = False
) -> ExportResult:
    """Write the items the gateway stored (those stored at or after `since_ms`, when given) as
    a MISP feed in `out`; what was written, and what was skipped and why."""
    _feed_directory(out)
    result = ExportResult(out)
    withdrawn = {w.item_id: w for w in store.withdrawals() if w.applied_ms is not None and w.refused is None}
    manifest: dict[str, Any] = {}
    hashes: list[str] = []
    try:
        for item in _stored_items(store, since_ms):
            mapped = item_event(item, withdrawn.get(item.item_id), include_red=include_red)
            if mapped.event is None:
                result.skipped[mapped.skipped or "not mapped"] += 1
                continue
            event = mapped.event
            data = (json.dumps({"Event": event}, indent=2, ensure_ascii=False) + "\n").encode()
            if _write_atomic(out / f"{event['uuid']}.json", data):
                result.written += 1
            else:
                result.unchanged += 1
            manifest[event["uuid"]] = manifest_entry(event)
            for attribute in event["Attribute"]:
                if not attribute["deleted"]:
                    hashes += [f"{h},{event['uuid']}" for h in value_hashes(attribute)]
            result.events += 1
            result.attributes += len(event["Attribute"])
            result.event_reports += len(event.get("EventReport", []))
            result.withdrawn += WITHDRAWN_TAG in {t["name"] for t in event["Tag"]}
            result.unmapped.update(mapped.unmapped)
        _sync_directory(out)
        for name, data in (
            (HASHES, "".join(f"{line}\n" for line in hashes).encode()),
            (MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False).encode()),
        ):
            if _write_atomic(out / name, data):
                result.written += 1
            else:
                result.unchanged += 1
        for path in out.iterdir():  # after the new manifest: it no longer names them
            if EVENT_FILE_RE.fullmatch(path.name) and path.name[:-5] not in manifest:
                path.unlink()
                result.removed += 1
        _sync_directory(out)
    except OSError as exc:
        raise MispError(f"cannot write the MISP feed in {out}: {exc}") from exc
    return result


# --- import: a MISP event -> a STIX bundle ------------------------------------------------------

IMPORT_INDICATOR_TYPES: dict[str, tuple[str, str]] = {  # MISP type -> (STIX type, property path)
    "ip-dst": ("ip", "value"),
    "ip-src": ("ip", "value"),
    "domain": ("domain-name", "value"),
    "hostname": ("domain-name", "value"),
    "url": ("url", "value"),
    "email": ("email-addr", "value"),
    "email-src": ("email-addr", "value"),
    "email-dst": ("email-addr", "value"),
    "md5": ("file", "hashes.'MD5'"),
    "sha1": ("file", "hashes.'SHA-1'"),
    "sha256": ("file", "hashes.'SHA-256'"),
    "sha512": ("file", "hashes.'SHA-512'"),
    "filename": ("file", "name"),
}
IMPORT_TEXT_TYPES = ("text", "comment")


def _stix_time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def load_event(data: Any) -> dict[str, Any]:
    """The bare event of a MISP event document: `{"Event": {...}}`, the event itself, or MISP's
    `{"response": [{"Event": ...}]}`, as JSON text or parsed."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MispError(f"the MISP event is not JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("response"), list) and len(data["response"]) == 1:
        data = data["response"][0]
    event = data.get("Event", data) if isinstance(data, dict) else data
    if not isinstance(event, dict):
        raise MispError('a MISP event must be a JSON object: {"Event": {...}} or the event itself')
    info = event.get("info")
    if not isinstance(info, str) or not info.strip():
        raise MispError("the MISP event has no 'info' (its title)")
    return event


def read_event_file(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MispError(f"cannot read the MISP event {path}: {exc.strerror or exc}") from exc
    return load_event(data)


def _uuid(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise MispError(f"{what} has uuid {str(value)[:80]!r}, which is not a UUID") from None


def _int(value: Any, what: str, allowed: Iterable[int] | None = None) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        raise MispError(f"{what} must be a number, not {str(value)[:40]!r}")
    number = int(value)
    if allowed is not None and number not in set(allowed):
        raise MispError(f"{what} must be one of {', '.join(str(a) for a in allowed)}, not {number}")
    return number


def _bool(value: Any, what: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false", ""):
        return False
    raise MispError(f"{what} must be true or false, not {str(value)[:40]!r}")


def _tags(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MispError(f"the tags of {what} must be a list")
    names: list[str] = []
    for index, entry in enumerate(value):
        name = entry.get("name") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise MispError(f"tag #{index} of {what} is not a tag with a name")
        names.append(name.strip())
    return names


def _tlp(tags: list[str], what: str) -> tuple[str, str] | None:
    """The strictest TLP of `tags` and the tag that gave it; None without a TLP tag."""
    found: list[tuple[str, str]] = []
    for name in tags:
        lowered = name.lower()
        if not lowered.startswith("tlp:") or lowered.startswith("tlp:ex:"):
            continue  # tlp:ex:chr and co. are not levels: a label
        level = TLP_FROM_TAG.get(lowered)
        if level is None:
            raise MispError(
                f"{what} has the unknown TLP tag {name!r}: use tlp:clear (or tlp:white), tlp:green, "
                "tlp:amber, tlp:amber+strict or tlp:red"
            )
        found.append((level, name))
    return max(found, key=lambda pair: stix.rank(pair[0])) if found else None


@dataclass(frozen=True)
class Source:
    """Where a STIX object of an imported bundle came from, for errors that name it."""

    what: str  # "attribute <uuid> (ip-dst 198.51.100.7)", "event <uuid>"
    tlp: str
    why: str  # "tag tlp:red", "the event's tag tlp:amber", "no TLP tag: AMBER by default"


@dataclass(frozen=True)
class ImportPlan:
    event_uuid: str
    info: str
    tlp: str  # the event's
    bundle: dict[str, Any]
    sources: dict[str, Source]
    mapped: int  # attributes sent
    kept_back: Counter[str]  # attributes not sent, by reason


def _sco_id(kind: str, contributing: dict[str, Any]) -> str:
    canonical = json.dumps(contributing, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{kind}--{uuid.uuid5(STIX_SCO_NAMESPACE, canonical)}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _attributes_of(
    event: dict[str, Any], event_label: str, kept_back: Counter[str]
) -> list[tuple[dict[str, Any], str]]:
    """The event's attributes and its objects' attributes, each with a label; objects of
    distribution 0 are kept back whole."""
    attributes = event.get("Attribute") or []
    objects = event.get("Object") or []
    if not isinstance(attributes, list) or not isinstance(objects, list):
        raise MispError(f"{event_label}: 'Attribute' and 'Object' must be lists")
    found = [(a, f"attribute #{i} of {event_label}") for i, a in enumerate(attributes)]
    for index, obj in enumerate(objects):
        label = f"object #{index} of {event_label}"
        if not isinstance(obj, dict) or not isinstance(obj.get("Attribute") or [], list):
            raise MispError(f"{label} is not a MISP object with a list of attributes")
        members = obj.get("Attribute") or []
        if _int(obj.get("distribution"), f"the distribution of {label}", range(6)) == 0:
            kept_back["distribution 0 (your organisation only)"] += len(members)
            continue
        found += [(a, f"attribute #{i} of {label}") for i, a in enumerate(members)]
    return found


def event_to_bundle(data: Any, country: str, *, now_s: int | None = None) -> ImportPlan:
    """A STIX 2.1 bundle of a MISP event, sent by `country`. Raises `MispError` for an event it
    cannot read, `MispRefused` for one that must not leave the agency."""
    event = load_event(data)
    info = str(event["info"]).strip()
    ev_uuid = _uuid(event.get("uuid"), "the event") or str(
        uuid.uuid5(NAMESPACE, f"misp-event:{info}:{event.get('date')}")
    )
    label = f"event {ev_uuid}"
    if _int(event.get("distribution"), f"the distribution of {label}", range(5)) == 0:
        raise MispRefused(
            f"{label} ({info[:80]!r}) has distribution 0, 'your organisation only': it must not leave "
            "the agency; nothing was sent"
        )
    event_tags = _tags(event.get("Tag"), label)
    orcon = [t for t in event_tags if t.replace(" ", "").lower() == 'msmt:caveat="orcon"']
    if orcon:
        orgc = event.get("Orgc")
        whose = str(orgc.get("name")) if isinstance(orgc, dict) and orgc.get("name") else "another member"
        raise MispRefused(
            f"{label} carries the tag {orcon[0]}: it is an originator-controlled report ({whose}'s) "
            "that may not be passed on without its originator; nothing was sent"
        )
    event_tlp = _tlp(event_tags, label)
    tlp, why = (
        (event_tlp[0], f"the event's tag {event_tlp[1]}")
        if event_tlp
        else ("AMBER", "no TLP tag: AMBER by default")
    )
    labels = [t for t in event_tags if not t.lower().startswith("tlp:") or t.lower().startswith("tlp:ex:")]
    now = now_s if now_s is not None else int(datetime.now(UTC).timestamp())
    created = _int(event.get("timestamp"), f"the timestamp of {label}") or now
    published = _int(event.get("publish_timestamp"), f"the publish_timestamp of {label}") or created

    identity_id = f"identity--{organisation_uuid(country)}"
    report_id = f"report--{ev_uuid}"
    sources: dict[str, Source] = {report_id: Source(label, tlp, why)}
    kept_back: Counter[str] = Counter()
    objects: dict[str, dict[str, Any]] = {}
    used_tlp: set[str] = {tlp}
    seen_uuids: set[str] = set()

    for attribute, where in _attributes_of(event, label, kept_back):
        if not isinstance(attribute, dict):
            raise MispError(f"{where} is not a JSON object")
        misp_type, raw = attribute.get("type"), attribute.get("value")
        if (
            not isinstance(misp_type, str)
            or not misp_type
            or isinstance(raw, bool)
            or not isinstance(raw, str | int | float)
        ):
            raise MispError(f"{where} needs a 'type' and a 'value'")
        value = str(raw).strip()
        a_uuid = _uuid(attribute.get("uuid"), where) or str(
            uuid.uuid5(NAMESPACE, f"misp-attribute:{ev_uuid}:{misp_type}:{value}")
        )
        if a_uuid in seen_uuids:
            raise MispError(f"{where}: two attributes of {label} have the uuid {a_uuid}")
        seen_uuids.add(a_uuid)
        what = f"attribute {a_uuid} ({misp_type} {value[:60]})"
        if _bool(attribute.get("deleted"), f"'deleted' of {where}", False):
            kept_back["deleted"] += 1
            continue
        if _int(attribute.get("distribution"), f"the distribution of {where}", range(6)) == 0:
            kept_back["distribution 0 (your organisation only)"] += 1
            continue
        own = _tlp(_tags(attribute.get("Tag"), what), what)
        level, level_why = (own[0], f"tag {own[1]}") if own else (tlp, why)
        marking = [stix.TLP2_IDS[level]]
        timestamp = _int(attribute.get("timestamp"), f"the timestamp of {where}") or created
        comment = attribute.get("comment") if isinstance(attribute.get("comment"), str) else ""
        to_ids = _bool(attribute.get("to_ids"), f"'to_ids' of {where}", misp_type in IMPORT_INDICATOR_TYPES)
        if misp_type in IMPORT_TEXT_TYPES:
            if not value:
                kept_back["empty text"] += 1
                continue
            obj: dict[str, Any] = {
                "type": "note",
                "id": f"note--{a_uuid}",
                "content": value,
                "object_refs": [report_id],
            }
        elif misp_type in IMPORT_INDICATOR_TYPES:
            if not _valid(misp_type, value):
                raise MispError(f"{what}: {value[:80]!r} is not a valid {misp_type}")
            kind, path = IMPORT_INDICATOR_TYPES[misp_type]
            if kind == "ip":
                kind = "ipv6-addr" if ipaddress.ip_network(value, strict=False).version == 6 else "ipv4-addr"
            if to_ids:
                obj = {
                    "type": "indicator",
                    "id": f"indicator--{a_uuid}",
                    "name": f"{misp_type} {value}"[:250],
                    "pattern": f"[{kind}:{path} = '{_escape(value)}']",
                    "pattern_type": "stix",
                    "valid_from": _stix_time(timestamp),
                }
                if comment:
                    obj["description"] = comment
            else:
                if path.startswith("hashes."):
                    contributing: dict[str, Any] = {"hashes": {path.split("'")[1]: value}}
                elif path == "name":
                    contributing = {"name": value}
                else:
                    contributing = {"value": value}
                obj = {"type": kind, "id": _sco_id(kind, contributing), **contributing}
        else:
            kept_back[f"type {misp_type} (not mapped)"] += 1
            continue
        obj = {"type": obj.pop("type"), "spec_version": "2.1", "id": obj.pop("id"), **obj}
        if obj["type"] in ("indicator", "note"):
            obj.update(
                created=_stix_time(timestamp), modified=_stix_time(timestamp), created_by_ref=identity_id
            )
        if obj["id"] in objects and stix.rank(level) <= stix.rank(sources[obj["id"]].tlp):
            continue  # the same observable twice: once, under the stricter TLP
        obj["object_marking_refs"] = marking
        objects[obj["id"]] = obj
        sources[obj["id"]] = Source(what, level, level_why)
        used_tlp.add(level)

    if not objects:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(kept_back.items())) or "none"
        raise MispError(
            f"{label} has no attribute this gateway maps to STIX: nothing to send (kept back: {reasons})"
        )
    report: dict[str, Any] = {
        "type": "report",
        "spec_version": "2.1",
        "id": report_id,
        "created": _stix_time(created),
        "modified": _stix_time(created),
        "created_by_ref": identity_id,
        "name": info,
        "published": _stix_time(published),
        "report_types": ["threat-report"],
        "object_refs": list(objects),
        "external_references": [{"source_name": "MISP", "external_id": ev_uuid}],
        "object_marking_refs": [stix.TLP2_IDS[tlp]],
    }
    if labels:
        report["labels"] = labels
    identity = {
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id,
        "created": "2024-01-01T00:00:00.000Z",
        "modified": "2024-01-01T00:00:00.000Z",
        "name": country,
        "identity_class": "organization",
    }
    definitions = [stix.tlp2_definition(level) for level in stix.TLP_ORDER if level in used_tlp]
    bundle = {
        "type": "bundle",
        "id": f"bundle--{uuid.uuid4()}",
        "objects": [*definitions, identity, report, *objects.values()],
    }
    return ImportPlan(ev_uuid, info, tlp, bundle, sources, len(objects), kept_back)


def check_import(plan: ImportPlan, profile: SendProfile) -> Prepared:
    """The bundle validated and checked against the send profile's markings, as a TAXII POST is;
    a MISP event or attribute tagged stricter than the profile allows is refused, named."""
    try:
        return prepare(profile, plan.bundle)
    except stix.MarkingConflict as exc:
        envelope = stix.derive_tlp(plan.bundle) if profile.tlp == BUNDLE_TLP else profile.tlp
        source = plan.sources.get(exc.object_id or "")
        if source is None:
            raise MispRefused(f"send profile {profile.name!r}: {exc.detail}", exc.object_id) from exc
        if stix.rank(source.tlp) > stix.rank(envelope):
            detail = (
                f"{source.what} is TLP:{source.tlp} ({source.why}), stricter than send profile "
                f"{profile.name!r} allows (TLP:{envelope}); nothing was sent: use a profile for "
                f"TLP:{source.tlp}, or leave it out of the event"
            )
        else:
            detail = (
                f"{source.what} is TLP:{source.tlp} ({source.why}) and send profile {profile.name!r} "
                "is releasable to ALL: TLP:RED goes to named recipients only; nothing was sent"
            )
        raise MispRefused(detail, exc.object_id) from exc
    except stix.StixError as exc:
        raise MispError(f"the STIX made of the MISP event is not valid: {exc.detail}") from exc


def check_event(data: Any, profile: SendProfile) -> ImportPlan:
    """Everything `import_event` checks that needs neither the agency's keys nor the broker."""
    plan = event_to_bundle(data, "ZZZ")
    check_import(plan, profile)
    return plan


@dataclass(frozen=True)
class Imported:
    plan: ImportPlan
    submission: Submission


def import_event(sender: Sender, profile: SendProfile, data: Any, *, country: str, user: str) -> Imported:
    """Send a MISP event as a STIX bundle through `sender` (profile markings, preflight, policy,
    the outbox), as a TAXII POST to the profile's collection would be. Raises `MispError`,
    `MispRefused`, or the client's errors; nothing is sent for any of them."""
    plan = event_to_bundle(data, country)
    check_import(plan, profile)
    try:
        submission = sender.submit(profile, user, plan.bundle)
    except stix.MarkingConflict as exc:  # checked above: only if the profile changed meanwhile
        raise MispRefused(str(exc), exc.object_id) from exc
    return Imported(plan, submission)


def describe(imported: Imported) -> list[str]:
    """What `msmt-gateway misp-import` prints."""
    plan, row = imported.plan, imported.submission
    lines: list[str] = []
    count = f"{plan.mapped} attribute(s) as {len(plan.bundle['objects'])} STIX object(s)"
    if row.outcome == "sent":
        recipients = ", ".join(json.loads(row.recipients)) or "-"
        where = f", log index {row.log_index}" if row.log_index is not None else ""
        lines.append(
            f"sent MISP event {plan.event_uuid} ({plan.info[:80]!r}, TLP:{row.tlp}) as item {row.item_id} "
            f"to {recipients}{where}: {count}"
        )
    else:
        lines.append(
            f"MISP event {plan.event_uuid} was sealed as item {row.item_id} and is pending in the outbox "
            f"({row.message}): {count}; `msmt-gateway serve` or `msmt outbox send` re-sends it"
        )
    if plan.kept_back:
        lines.append(f"kept back {sum(plan.kept_back.values())} attribute(s):")
        lines += [f"  {count} {reason}" for reason, count in sorted(plan.kept_back.items())]
    return lines
