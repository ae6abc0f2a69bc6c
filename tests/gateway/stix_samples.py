"""STIX bundles for the gateway tests."""

from __future__ import annotations

import uuid
from typing import Any

from msmt.gateway.stix import tlp2_definition


def indicator(level: str | None = None, *, value: str = "198.51.100.7") -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{uuid.uuid4()}",
        "created": "2026-03-01T10:00:00.000Z",
        "modified": "2026-03-01T10:00:00.000Z",
        "name": f"C2 server {value}",
        "pattern": f"[ipv4-addr:value = '{value}']",
        "pattern_type": "stix",
        "valid_from": "2026-03-01T10:00:00Z",
    }
    if level is not None:
        obj["object_marking_refs"] = [tlp2_definition(level)["id"]]
    return obj


def vessel_report(level: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "report",
        "spec_version": "2.1",
        "id": f"report--{uuid.uuid4()}",
        "created": "2026-03-02T08:30:00.000Z",
        "modified": "2026-03-02T08:30:00.000Z",
        "name": "Ship-to-ship transfer sighted at 38.1N 124.5E",
        "published": "2026-03-02T08:30:00Z",
        "report_types": ["observed-data"],
        "object_refs": [f"location--{uuid.uuid4()}"],
    }
    if level is not None:
        obj["object_marking_refs"] = [tlp2_definition(level)["id"]]
    return obj


def bundle(*objects: dict[str, Any], levels: tuple[str, ...] = ()) -> dict[str, Any]:
    definitions = [tlp2_definition(level) for level in levels]
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": [*definitions, *objects]}
