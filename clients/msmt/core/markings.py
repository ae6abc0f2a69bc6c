"""Markings: the signed, cleartext labels that sharing policy is enforced on.

This module checks their form only. Which countries a marking lets an item reach is the
policy evaluator's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidHeader, OversizedField

TLP_LEVELS = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
TOPICS = ("maritime", "arms", "cyber", "finance", "labor", "procurement", "other")
MAX_LIST = 256
MAX_CAVEATS = 16
MAX_TOPICS = 16

CLASSIFICATION_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")
# country codes (ISO 3166-1 alpha-3), group names (G7, EU, FIVE_EYES) or ALL
RELEASABLE_RE = re.compile(r"^[A-Z0-9][A-Z0-9_]{1,31}$")
CAVEAT_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")
TOPIC_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
COUNTRY_RE = re.compile(r"^[A-Z]{3}$")


def check_token_list(
    values: Any, pattern: re.Pattern[str], field: str, max_len: int, *, non_empty: bool = False
) -> tuple[str, ...]:
    if not isinstance(values, list | tuple):
        raise InvalidHeader(f"{field} must be a list")
    if len(values) > max_len:
        raise OversizedField(f"{field} has {len(values)} entries; at most {max_len} are allowed")
    if non_empty and not values:
        raise InvalidHeader(f"{field} must not be empty")
    for value in values:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise InvalidHeader(f"{field} entry {value!r} is not well formed")
    if list(values) != sorted(set(values)):
        raise InvalidHeader(f"{field} must be sorted and free of duplicates")
    return tuple(values)


@dataclass(frozen=True)
class Markings:
    classification: str
    tlp: str
    releasable_to: tuple[str, ...]
    caveats: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        classification: str,
        tlp: str,
        releasable_to: list[str] | tuple[str, ...],
        caveats: list[str] | tuple[str, ...] = (),
        topics: list[str] | tuple[str, ...] = (),
    ) -> Markings:
        """Build markings from loose input: lists are sorted and de-duplicated, then checked."""
        return cls.from_dict(
            {
                "classification": classification,
                "tlp": tlp,
                "releasable_to": sorted(set(releasable_to)),
                "caveats": sorted(set(caveats)),
                "topics": sorted(set(topics)),
            }
        )

    @classmethod
    def from_dict(cls, data: Any) -> Markings:
        if not isinstance(data, dict):
            raise InvalidHeader("markings must be an object")
        expected = {"classification", "tlp", "releasable_to", "caveats", "topics"}
        if set(data) != expected:
            missing, extra = expected - set(data), set(data) - expected
            raise InvalidHeader(f"markings fields wrong: missing {sorted(missing)}, unknown {sorted(extra)}")
        classification = data["classification"]
        if not isinstance(classification, str) or not CLASSIFICATION_RE.fullmatch(classification):
            raise InvalidHeader(f"classification {classification!r} is not well formed")
        tlp = data["tlp"]
        if tlp not in TLP_LEVELS:
            raise InvalidHeader(f"tlp {tlp!r} is not a TLP 2.0 level {TLP_LEVELS}")
        return cls(
            classification=classification,
            tlp=tlp,
            releasable_to=check_token_list(
                data["releasable_to"], RELEASABLE_RE, "releasable_to", MAX_LIST, non_empty=True
            ),
            caveats=check_token_list(data["caveats"], CAVEAT_RE, "caveats", MAX_CAVEATS),
            topics=check_token_list(data["topics"], TOPIC_RE, "topics", MAX_TOPICS),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "classification": self.classification,
            "tlp": self.tlp,
            "releasable_to": list(self.releasable_to),
            "caveats": list(self.caveats),
            "topics": list(self.topics),
        }
