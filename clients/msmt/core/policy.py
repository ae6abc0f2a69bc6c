"""Sharing policy: may recipient R receive item I from originator O?

Pure and explainable: each rule is a small named check that returns a reason a person can
read, and a decision lists every rule that failed, not just the first. The broker enforces
exactly this evaluator; clients use it to explain and to preflight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .markings import Markings

DEFAULT_LADDER = ("UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET")
ALL = "ALL"
DEFAULT_PAIR = ("*", "*")


@dataclass(frozen=True)
class Member:
    code: str
    active: bool
    accreditation: str
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Agreement:
    """What may flow originator -> recipient: a classification ceiling and topics (None = all)."""

    ceiling: str
    topics: frozenset[str] | None = None


@dataclass(frozen=True)
class PolicySnapshot:
    members: Mapping[str, Member]
    agreements: Mapping[tuple[str, str], Agreement]
    default_agreement: Agreement
    ladder: tuple[str, ...] = DEFAULT_LADDER
    _rank: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rank", {name: i for i, name in enumerate(self.ladder)})

    def rank(self, classification: str) -> int | None:
        return self._rank.get(classification)

    def agreement(self, originator: str, recipient: str) -> Agreement:
        return self.agreements.get((originator, recipient), self.default_agreement)


@dataclass(frozen=True)
class Denial:
    rule: str
    reason: str


@dataclass(frozen=True)
class Decision:
    originator: str
    recipient: str
    denials: tuple[Denial, ...]

    @property
    def allowed(self) -> bool:
        return not self.denials


Rule = Callable[[PolicySnapshot, str, str, Markings], str | None]


def _not_self(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    return f"{r} is the originator" if r == o else None


def _recipient_member(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    member = p.members.get(r)
    if member is None:
        return f"{r} is not a member country"
    return None if member.active else f"{r} is suspended"


def _originator_active(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    member = p.members.get(o)
    if member is None or not member.active:
        return f"originator {o} is not an active member"
    return None


def _releasable(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    member = p.members.get(r)
    groups = member.groups if member else frozenset()
    if r in m.releasable_to or ALL in m.releasable_to or groups & set(m.releasable_to):
        return None
    return f"{r} is not within releasable-to ({', '.join(m.releasable_to)})"


def _tlp_red(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    if m.tlp == "RED" and r not in m.releasable_to:
        return f"TLP:RED requires {r} to be named explicitly in releasable-to, not through a group or ALL"
    return None


def _accreditation(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    member = p.members.get(r)
    level, ceiling = p.rank(m.classification), p.rank(member.accreditation) if member else None
    if level is None:
        return f"classification {m.classification} is not on the ladder ({' < '.join(p.ladder)})"
    if ceiling is None or level > ceiling:
        held = member.accreditation if member else "none"
        return f"{m.classification} is above {r}'s accreditation ({held})"
    return None


def _agreement_ceiling(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    agreement = p.agreement(o, r)
    level, ceiling = p.rank(m.classification), p.rank(agreement.ceiling)
    if level is None:
        return None  # reported once, by the accreditation rule
    if ceiling is None or level > ceiling:
        return f"{m.classification} is above the {o}->{r} agreement's ceiling ({agreement.ceiling})"
    return None


def _agreement_topics(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    allowed = p.agreement(o, r).topics
    if allowed is None:
        return None
    missing = sorted(set(m.topics) - allowed)
    if missing:
        return f"topic(s) {', '.join(missing)} not covered by the {o}->{r} agreement"
    return None


RULES: tuple[tuple[str, Rule], ...] = (
    ("recipient-is-originator", _not_self),
    ("recipient-not-active", _recipient_member),
    ("originator-not-active", _originator_active),
    ("not-releasable", _releasable),
    ("tlp-red-not-named", _tlp_red),
    ("above-accreditation", _accreditation),
    ("above-agreement-ceiling", _agreement_ceiling),
    ("topic-not-agreed", _agreement_topics),
)


def evaluate(policy: PolicySnapshot, originator: str, recipient: str, markings: Markings) -> Decision:
    """Apply every rule; the decision names each one that failed."""
    denials = []
    for name, rule in RULES:
        reason = rule(policy, originator, recipient, markings)
        if reason is not None:
            denials.append(Denial(name, reason))
    return Decision(originator, recipient, tuple(denials))
