"""STIX 2.1 bundles and their TLP 2.0 markings, checked against the envelope's signed markings.

Pure: no I/O. The gateway indexes what it received with it, and an originator calls
`check_outgoing` before sealing an `application/stix+json` payload, so that a bundle never
travels under markings looser than its own objects carry.

The TLP 2.0 marking-definition ids are the OASIS ones (cti-stix-common-objects,
extension-definition-specifications/tlp-2.0, extension
`extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d`); the STIX 2.1 TLP 1.0 ids
(`TLP:WHITE` and co., section 7.2.1.4 of STIX 2.1) are read too, WHITE as CLEAR.

The `stix2` library (the `stix` or `gateway` extra of msmt-client) is imported only to
validate objects: without it (`pip install ./clients` alone), `msmt submit` still checks the
bundle's structure, ids and TLP markings against the envelope, and warns that the objects
were not validated against STIX 2.1.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from ..core.markings import TLP_LEVELS, Markings
from ..errors import ClientError

STIX_MEDIA_TYPE = "application/stix+json"
TLP_EXTENSION_ID = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP_ORDER = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")  # loosest to strictest
assert set(TLP_ORDER) == set(TLP_LEVELS)

# TLP 2.0: the marking-definitions the OASIS TLP 2.0 extension defines (fixed ids)
TLP2_IDS = {
    "CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "AMBER+STRICT": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
# TLP 1.0 as STIX 2.1 defines it: still found in real bundles
TLP1_IDS = {
    "CLEAR": "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",  # TLP:WHITE
    "GREEN": "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
    "AMBER": "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
    "RED": "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
}
TLP_BY_ID = {**{v: k for k, v in TLP1_IDS.items()}, **{v: k for k, v in TLP2_IDS.items()}}
ID_RE = re.compile(
    r"^[a-z0-9][a-z0-9-]{0,250}--[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
MAX_OBJECTS = 100_000
log = logging.getLogger("msmt.stix")


@cache
def _stix2_parser() -> tuple[Callable[..., Any], tuple[type[Exception], ...]] | None:
    """stix2's parser and the errors it raises, or None when stix2 is not installed."""
    try:
        import stix2  # type: ignore[import-untyped]
        from stix2.exceptions import STIXError  # type: ignore[import-untyped]
    except ImportError:
        return None
    return stix2.parse, (STIXError, ValueError, TypeError, KeyError)


def can_validate() -> bool:
    """Whether objects are validated against STIX 2.1 (the stix2 library is installed)."""
    return _stix2_parser() is not None


def tlp2_definition(level: str) -> dict[str, Any]:
    """The official TLP 2.0 marking-definition object for `level` (CLEAR ... RED)."""
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": TLP2_IDS[level],
        "created": "2022-10-01T00:00:00.000Z",
        "name": f"TLP:{level}",
        "extensions": {TLP_EXTENSION_ID: {"extension_type": "property-extension", "tlp_2_0": level.lower()}},
    }


class StixError(ClientError):
    """A STIX payload that may not be sent or stored as it is; `object_id` names the object."""

    code = "stix-error"

    def __init__(self, detail: str, object_id: str | None = None) -> None:
        super().__init__(detail)
        self.object_id = object_id


class InvalidStix(StixError):
    code = "stix-invalid"


class MarkingConflict(StixError):
    code = "stix-marking-conflict"


def rank(level: str) -> int:
    return TLP_ORDER.index(level)


def _label(object_id: str | None) -> str:
    return f"object {object_id}" if object_id else "the bundle"


def parse_bundle(payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """A STIX 2.1 bundle as plain JSON, each object validated by `stix2`; an error names the
    first offending object's id."""
    if isinstance(payload, dict):
        data: Any = payload
    else:
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidStix(f"the STIX payload is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("type") != "bundle":
        raise InvalidStix("the STIX payload is not a bundle (its type must be 'bundle')")
    bundle_id = data.get("id")
    if (
        not isinstance(bundle_id, str)
        or not bundle_id.startswith("bundle--")
        or not ID_RE.fullmatch(bundle_id)
    ):
        raise InvalidStix(f"the bundle id {str(bundle_id)[:80]!r} is not a STIX identifier 'bundle--<uuid>'")
    objects = data.get("objects", [])
    if not isinstance(objects, list) or len(objects) > MAX_OBJECTS:
        raise InvalidStix(f"bundle {bundle_id}: 'objects' must be a list of at most {MAX_OBJECTS}", bundle_id)
    parser = _stix2_parser()
    if parser is None and objects:
        log.warning(
            "stix2 is not installed: bundle %s was checked for its structure and TLP markings only, "
            "not validated against STIX 2.1 (pip install 'msmt-client[stix]')",
            bundle_id,
        )
    for index, obj in enumerate(objects):
        _check_object(obj, index, parser)
    return data


def _check_object(
    obj: Any, index: int, parser: tuple[Callable[..., Any], tuple[type[Exception], ...]] | None
) -> None:
    if not isinstance(obj, dict):
        raise InvalidStix(f"object #{index} of the bundle is not a JSON object")
    object_id = obj.get("id")
    if not isinstance(object_id, str) or not ID_RE.fullmatch(object_id):
        raise InvalidStix(f"object #{index} of the bundle has no valid STIX id ({str(object_id)[:80]!r})")
    if obj.get("type") != object_id.split("--", 1)[0]:
        raise InvalidStix(
            f"object {object_id}: its type {obj.get('type')!r} does not match its id", object_id
        )
    if parser is not None:
        parse, errors = parser
        try:
            parse(obj, allow_custom=True, version="2.1")
        except errors as exc:
            raise InvalidStix(f"object {object_id} is not valid STIX 2.1: {exc}", object_id) from exc
    if object_id in TLP2_IDS.values():
        level = TLP_BY_ID[object_id]
        extension = (obj.get("extensions") or {}).get(TLP_EXTENSION_ID) or {}
        if extension.get("tlp_2_0") != level.lower() or obj.get("name") != f"TLP:{level}":
            raise InvalidStix(
                f"object {object_id} uses the id of the TLP 2.0 marking TLP:{level} but does not define it",
                object_id,
            )
    for ref in object_marking_refs(obj):
        if not isinstance(ref, str) or not ref.startswith("marking-definition--"):
            raise InvalidStix(f"object {object_id} refers to {str(ref)[:80]!r} as a marking", object_id)


def object_marking_refs(obj: dict[str, Any]) -> list[Any]:
    """Every marking an object refers to: object markings and granular markings alike."""
    refs = list(obj.get("object_marking_refs") or [])
    for granular in obj.get("granular_markings") or []:
        if isinstance(granular, dict) and "marking_ref" in granular:
            refs.append(granular["marking_ref"])
    return refs


def object_tlp(obj: dict[str, Any]) -> str | None:
    """The strictest TLP an object carries (None when it carries none)."""
    levels = [TLP_BY_ID[ref] for ref in object_marking_refs(obj) if isinstance(ref, str) and ref in TLP_BY_ID]
    return max(levels, key=rank) if levels else None


def marked_objects(bundle: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """(object id, its strictest TLP) for every object that carries a TLP marking."""
    for obj in bundle.get("objects", []):
        level = object_tlp(obj)
        if level is not None:
            yield str(obj["id"]), level


def strictest_tlp(bundle: dict[str, Any]) -> str | None:
    levels = [level for _, level in marked_objects(bundle)]
    return max(levels, key=rank) if levels else None


def derive_tlp(bundle: dict[str, Any], default: str = "AMBER") -> str:
    """The envelope TLP a bundle needs: its strictest object's; `default` when no object is
    marked (unmarked is not CLEAR: AMBER unless the caller says otherwise)."""
    if default not in TLP_ORDER:
        raise ValueError(f"{default!r} is not a TLP 2.0 level")
    return strictest_tlp(bundle) or default


def check_markings(bundle: dict[str, Any], envelope: Markings) -> None:
    """Refuse a bundle whose objects carry a stricter TLP than the envelope, or TLP:RED content
    (envelope or object) releasable to ALL; the error names the offending object."""
    releasable_to_all = "ALL" in envelope.releasable_to
    marked = sorted(marked_objects(bundle), key=lambda pair: -rank(pair[1]))  # strictest first
    stricter = [(object_id, level) for object_id, level in marked if rank(level) > rank(envelope.tlp)]
    if stricter:
        object_id, level = stricter[0]
        others = (
            f" (and {len(stricter) - 1} more: {', '.join(o for o, _ in stricter[1:6])})"
            if len(stricter) > 1
            else ""
        )
        raise MarkingConflict(
            f"object {object_id} is marked TLP:{level}, stricter than the envelope's TLP:{envelope.tlp}{others}; "
            f"send the item as TLP:{level} or remove it from the bundle",
            object_id,
        )
    red = [object_id for object_id, level in marked if level == "RED"]
    if red and releasable_to_all:
        raise MarkingConflict(
            f"object {red[0]} is marked TLP:RED and cannot be releasable to ALL: "
            "name its recipients in releasable_to",
            red[0],
        )
    if envelope.tlp == "RED" and releasable_to_all:
        raise MarkingConflict(
            "a TLP:RED item cannot be releasable to ALL: name its recipients in releasable_to",
            str(bundle.get("id")),
        )


def check_outgoing(payload: bytes, content_type: str, markings: Markings) -> dict[str, Any] | None:
    """Before sealing: a STIX payload must be a valid bundle whose markings agree with the
    envelope's. Returns the bundle (None for a payload of another content type)."""
    if content_type.split(";", 1)[0].strip().lower() != STIX_MEDIA_TYPE:
        return None
    bundle = parse_bundle(payload)
    check_markings(bundle, markings)
    return bundle


def object_version(obj: dict[str, Any]) -> str | None:
    """A STIX object's version as TAXII 2.1 sees it: `modified`, else `created`, else None."""
    value = obj.get("modified") or obj.get("created")
    return str(value) if value else None
