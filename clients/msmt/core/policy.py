"""Sharing policy: may recipient R receive item I from originator O?

Pure and explainable: each rule is a small named check that returns a sentence a person can
read, and a decision lists every rule that failed, not just the first. The broker enforces
exactly this evaluator; clients use it to explain and to preflight. docs/policy.md states
the model and every sentence.

Each fact is reported by one rule only: a rule that depends on a fact another rule has
already refused (an unknown recipient, a classification off the ladder, a recipient not in
releasable-to at all) stays silent rather than repeat it.
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
class DenyRule:
    """An admin's explicit refusal. It applies when every condition set matches; None = any.

    `originator` and `recipient` are a country code or a group name; `topics` matches an item
    carrying any of them; `tlp` matches an item at any of those levels. `reason` is the
    sentence shown to whoever is refused.
    """

    id: str
    reason: str
    originator: str | None = None
    recipient: str | None = None
    classification_at_least: str | None = None
    topics: frozenset[str] | None = None
    tlp: frozenset[str] | None = None


@dataclass(frozen=True)
class PolicySnapshot:
    members: Mapping[str, Member]
    agreements: Mapping[tuple[str, str], Agreement]
    default_agreement: Agreement
    ladder: tuple[str, ...] = DEFAULT_LADDER
    deny_rules: tuple[DenyRule, ...] = ()
    _rank: Mapping[str, int] = field(init=False, repr=False, compare=False)
    _names: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.ladder or len(set(self.ladder)) != len(self.ladder):
            raise ValueError(f"the classification ladder must be non-empty and unique: {self.ladder}")
        object.__setattr__(self, "_rank", {name: i for i, name in enumerate(self.ladder)})
        names = {code: member.groups | {code} for code, member in self.members.items()}
        object.__setattr__(self, "_names", names)

    def rank(self, classification: str) -> int | None:
        return self._rank.get(classification)

    def agreement(self, originator: str, recipient: str) -> Agreement:
        return self.agreements.get((originator, recipient), self.default_agreement)

    def names_of(self, code: str) -> frozenset[str]:
        """The country code and its current groups: what releasable-to and deny rules can name."""
        return self._names.get(code) or frozenset({code})


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

    def explain(self) -> str:
        """One line for a person: the pair, the verdict, and every reason."""
        pair = f"{self.originator} -> {self.recipient}"
        if self.allowed:
            return f"{pair}: allowed"
        return f"{pair}: denied: " + "; ".join(f"[{d.rule}] {d.reason}" for d in self.denials)


Rule = Callable[[PolicySnapshot, str, str, Markings], str | None]


def _not_self(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    return f"{r} is the originator of this item and cannot also be a recipient" if r == o else None


def _recipient_active(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    member = p.members.get(r)
    if member is None:
        return f"{r} is not a member country"
    return None if member.active else f"{r} is suspended and may not receive items"


def _originator_active(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    member = p.members.get(o)
    if member is None:
        return f"the originator {o} is not a member country"
    return None if member.active else f"the originator {o} is suspended and may not share items"


def _covered_through(p: PolicySnapshot, r: str, m: Markings) -> list[str]:
    """The releasable-to entries other than r's own code that cover r: ALL or r's groups."""
    names = p.names_of(r)
    return [entry for entry in m.releasable_to if entry == ALL or (entry != r and entry in names)]


def _releasable(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    # Whether r is an active member is recipient-not-active's question; ALL and groups are
    # read from the snapshot, so they resolve against the membership at evaluation time.
    if r in m.releasable_to or ALL in m.releasable_to or not p.names_of(r).isdisjoint(m.releasable_to):
        return None
    listed = ", ".join(m.releasable_to)
    groups = sorted(p.names_of(r) - {r})
    if groups:
        return f"releasable-to ({listed}) names neither {r} nor any of its groups ({', '.join(groups)})"
    return f"releasable-to ({listed}) does not name {r}"


def _tlp_red(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    if m.tlp != "RED" or r in m.releasable_to:
        return None
    via = _covered_through(p, r, m)
    if not via:
        return None  # not covered at all: not-releasable says so
    return (
        f"TLP:RED goes only to countries named one by one in releasable-to; "
        f"{r} is covered only through {', '.join(via)}"
    )


def _known_classification(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    if p.rank(m.classification) is None:
        return f"classification {m.classification} is not on the ladder ({' < '.join(p.ladder)})"
    return None


def _accreditation(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    member, level = p.members.get(r), p.rank(m.classification)
    if member is None or level is None:
        return None
    ceiling = p.rank(member.accreditation)
    if ceiling is None:
        return f"{r}'s accreditation ({member.accreditation}) is not on the ladder"
    if level > ceiling:
        return f"{m.classification} is above {r}'s accreditation ({member.accreditation})"
    return None


def _which_agreement(p: PolicySnapshot, o: str, r: str) -> tuple[str, str]:
    """How to name the agreement that applies, and what to add when it is the default."""
    if (o, r) in p.agreements:
        return f"the {o}->{r} agreement", ""
    return "the default agreement", f"; {o}->{r} has no agreement of its own"


def _agreement_ceiling(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    agreement, level = p.agreement(o, r), p.rank(m.classification)
    if level is None:
        return None
    ceiling = p.rank(agreement.ceiling)
    if ceiling is not None and level <= ceiling:
        return None
    name, note = _which_agreement(p, o, r)
    if ceiling is None:
        return f"{name}'s ceiling ({agreement.ceiling}) is not on the ladder{note}"
    return f"{m.classification} is above {name}'s ceiling ({agreement.ceiling}){note}"


def _agreement_topics(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    allowed = p.agreement(o, r).topics
    if allowed is None or allowed.issuperset(m.topics):
        return None
    missing = sorted(set(m.topics) - allowed)
    name, note = _which_agreement(p, o, r)
    what = f"topic {missing[0]}" if len(missing) == 1 else f"topics {', '.join(missing)}"
    return f"{name} does not cover {what}{note}"


def deny_rule_matches(p: PolicySnapshot, rule: DenyRule, o: str, r: str, m: Markings) -> bool:
    """Whether an admin's deny rule applies to this pair and these markings."""
    if rule.tlp is not None and m.tlp not in rule.tlp:
        return False
    if rule.topics is not None and rule.topics.isdisjoint(m.topics):
        return False
    if rule.originator is not None and rule.originator not in p.names_of(o):
        return False
    if rule.recipient is not None and rule.recipient not in p.names_of(r):
        return False
    if rule.classification_at_least is not None:
        level, floor = p.rank(m.classification), p.rank(rule.classification_at_least)
        # Either side off the ladder: the rule applies (fail closed).
        if level is not None and floor is not None and level < floor:
            return False
    return True


def _deny_rules(p: PolicySnapshot, o: str, r: str, m: Markings) -> str | None:
    if not p.deny_rules:
        return None
    hits = [rule for rule in p.deny_rules if deny_rule_matches(p, rule, o, r, m)]
    if not hits:
        return None
    return "; ".join(f'blocked by admin rule "{rule.id}": {rule.reason}' for rule in hits)


RULES: tuple[tuple[str, Rule], ...] = (
    ("recipient-is-originator", _not_self),
    ("recipient-not-active", _recipient_active),
    ("originator-not-active", _originator_active),
    ("not-releasable", _releasable),
    ("tlp-red-not-named", _tlp_red),
    ("unknown-classification", _known_classification),
    ("above-accreditation", _accreditation),
    ("above-agreement-ceiling", _agreement_ceiling),
    ("topic-not-agreed", _agreement_topics),
    ("denied-by-rule", _deny_rules),
)


def evaluate(policy: PolicySnapshot, originator: str, recipient: str, markings: Markings) -> Decision:
    """Apply every rule; the decision names each one that failed."""
    denials = []
    for name, rule in RULES:
        reason = rule(policy, originator, recipient, markings)
        if reason is not None:
            denials.append(Denial(name, reason))
    return Decision(originator, recipient, tuple(denials))


def allowed_recipients(
    policy: PolicySnapshot, originator: str, markings: Markings
) -> tuple[list[str], dict[str, tuple[Denial, ...]]]:
    """Preflight: every other member the markings may go to, and each denied one with its reasons."""
    allowed: list[str] = []
    denied: dict[str, tuple[Denial, ...]] = {}
    for code in sorted(policy.members):
        if code == originator:
            continue
        decision = evaluate(policy, originator, code, markings)
        if decision.allowed:
            allowed.append(code)
        else:
            denied[code] = decision.denials
    return allowed, denied


def sharing_matrix(policy: PolicySnapshot, markings: Markings) -> dict[str, dict[str, Decision]]:
    """For these markings, the decision for every ordered pair of distinct members."""
    codes = sorted(policy.members)
    return {o: {r: evaluate(policy, o, r, markings) for r in codes if r != o} for o in codes}
