"""Policy decisions per second: the plain-Python evaluator, and Cedar (through cedarpy) on the same rules.

    .venv/bin/python bench/policy.py [--members 50] [--items 1000] [--repeat 3] [--json]

A synthetic coalition of 50 members (11 real codes, the rest synthetic; a few suspended;
groups G7, EU, FIVE_EYES and four regions), ~1,500 bilateral agreements plus the default
one, four admin deny rules, and 1,000 items with realistic markings. Every item is decided
for every member as recipient: 50,000 decisions. Pure CPU, one thread, no I/O; the best of
--repeat runs, with the garbage collector paused while the clock runs (as timeit does).

Cedar is optional (`pip install cedarpy` into the environment; it is not a project
dependency). When present, the same policy is written as one conditional `permit` plus one
named `forbid` per reason and per deny rule; PolicySet, Schema and Entities are parsed once
and cached, and each item is one `is_authorized_batch` call for its 50 recipients. Before
the figures count, the two engines must agree on every decision: allowed or not, and the set
of failed rules (Cedar's fired `@id`s). A Cedar error is treated as a deny (fail closed).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from msmt.core.markings import TOPICS, Markings
from msmt.core.policy import (
    DEFAULT_LADDER,
    Agreement,
    Decision,
    DenyRule,
    Member,
    PolicySnapshot,
    evaluate,
)

try:
    import cedarpy
except ImportError:  # optional: the Python figures stand alone
    cedarpy = None

REAL = ("AUS", "CAN", "DEU", "FRA", "GBR", "ITA", "JPN", "KOR", "NLD", "NZL", "USA")
NAMED_GROUPS = {
    "G7": {"CAN", "DEU", "FRA", "GBR", "ITA", "JPN", "USA"},
    "EU": {"DEU", "FRA", "ITA", "NLD"},
    "FIVE_EYES": {"AUS", "CAN", "GBR", "NZL", "USA"},
}
REGIONS = ("REGION_1", "REGION_2", "REGION_3", "REGION_4")
PERMIT_ID = "share-when-every-rule-holds"
DENY_PREFIX = "denied-by-rule:"


# --- the synthetic coalition and its items ------------------------------------------------


def country_codes(n: int) -> list[str]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    synthetic = [f"X{a}{b}" for a in letters for b in letters]
    return sorted((list(REAL) + synthetic)[:n])


def coalition(n: int, rng: random.Random) -> PolicySnapshot:
    codes = country_codes(n)
    synthetic = [c for c in codes if c not in REAL]
    suspended = set(synthetic[-2:])
    members = {}
    for i, code in enumerate(codes):
        groups = {g for g, names in NAMED_GROUPS.items() if code in names}
        if code in synthetic:
            groups.add(REGIONS[i % len(REGIONS)])
            if rng.random() < 0.3:
                groups.add("EU")
        accreditation = "SECRET" if code in REAL else rng.choice(DEFAULT_LADDER[1:])
        members[code] = Member(code, code not in suspended, accreditation, frozenset(groups))
    agreements = {}
    for o in codes:
        for r in codes:
            if o != r and rng.random() < 0.6:
                ceiling = rng.choices(DEFAULT_LADDER, weights=(1, 3, 3, 2))[0]
                topics = None if rng.random() < 0.5 else frozenset(rng.sample(TOPICS, rng.randint(2, 5)))
                agreements[o, r] = Agreement(ceiling, topics)
    deny_rules = (
        DenyRule(
            "nzl-cyber-pause",
            "cyber reports to NZL are paused while its new network is accredited",
            recipient="NZL",
            topics=frozenset({"cyber"}),
        ),
        DenyRule(
            "no-red-to-region-3",
            "TLP:RED items do not go to REGION_3 members until their handling rules are agreed",
            recipient="REGION_3",
            tlp=frozenset({"RED"}),
        ),
        DenyRule(
            "usa-secret-finance",
            "SECRET finance reports from USA go through the Treasury channel",
            originator="USA",
            classification_at_least="SECRET",
            topics=frozenset({"finance"}),
        ),
        DenyRule(
            "region-1-arms-to-eu",
            "arms reports from REGION_1 to EU members wait for the export-control review",
            originator="REGION_1",
            recipient="EU",
            classification_at_least="CONFIDENTIAL",
            topics=frozenset({"arms"}),
        ),
    )
    default = Agreement("RESTRICTED", frozenset({"maritime", "other"}))
    return PolicySnapshot(members, agreements, default, deny_rules=deny_rules)


def items(policy: PolicySnapshot, n: int, rng: random.Random) -> list[tuple[str, Markings]]:
    codes = sorted(policy.members)
    groups = sorted({g for m in policy.members.values() for g in m.groups})
    out = []
    for _ in range(n):
        originator = rng.choice(codes)
        tlp = rng.choices(("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"), weights=(1, 3, 4, 1, 1))[0]
        shape = rng.random()
        if tlp == "RED" or shape < 0.3:
            releasable = rng.sample(codes, rng.randint(3, 8))
        elif shape < 0.7:
            releasable = ["ALL"]
        else:
            releasable = rng.sample(groups, rng.randint(1, 2))
        if tlp == "RED" and rng.random() < 0.2:
            releasable.append(rng.choice(groups))  # a mistake RED must refuse
        out.append(
            (
                originator,
                Markings.create(
                    rng.choices(DEFAULT_LADDER, weights=(3, 4, 2, 1))[0],
                    tlp,
                    releasable,
                    topics=rng.sample(TOPICS, rng.randint(1, 2)),
                ),
            )
        )
    return out


# --- plain Python ------------------------------------------------------------------------


def python_run(policy: PolicySnapshot, work: list[tuple[str, Markings]]) -> list[Decision]:
    codes = sorted(policy.members)
    return [evaluate(policy, o, r, m) for o, m in work for r in codes]


# --- Cedar -------------------------------------------------------------------------------

SCHEMA = """
entity Group;
type Agreement = { ceiling: Long, all_topics: Bool, topics: Set<String> };
entity Country in [Group] = {
  code: String, active: Bool, accreditation: Long, groups: Set<String>,
} tags Agreement;
action share appliesTo {
  principal: Country,
  resource: Country,
  context: { level: Long, tlp: String, releasable_to: Set<String>, topics: Set<String> },
};
"""

# `level` is the item's rank on the ladder, -1 when it is not on it. Each forbid is one
# rule of msmt.core.policy, with the same name; the permit is their conjunction, so an
# unknown recipient (an error in every policy) is a deny, never an allow.
RULES_CEDAR = """
@id("share-when-every-rule-holds")
permit (principal is Country, action == Action::"share", resource is Country)
when {
  principal != resource && principal.active && resource.active &&
  (context.releasable_to.contains(resource.code) ||
   (context.tlp != "RED" &&
    (context.releasable_to.contains("ALL") || context.releasable_to.containsAny(resource.groups)))) &&
  context.level >= 0 && context.level <= resource.accreditation &&
  principal.hasTag(resource.code) &&
  context.level <= principal.getTag(resource.code).ceiling &&
  (principal.getTag(resource.code).all_topics ||
   principal.getTag(resource.code).topics.containsAll(context.topics))
};

@id("recipient-is-originator")
forbid (principal, action == Action::"share", resource)
when { principal == resource };

@id("recipient-not-active")
forbid (principal, action == Action::"share", resource is Country)
when { !resource.active };

@id("originator-not-active")
forbid (principal is Country, action == Action::"share", resource)
when { !principal.active };

@id("not-releasable")
forbid (principal, action == Action::"share", resource is Country)
when {
  !context.releasable_to.contains(resource.code) && !context.releasable_to.contains("ALL") &&
  !context.releasable_to.containsAny(resource.groups)
};

@id("tlp-red-not-named")
forbid (principal, action == Action::"share", resource is Country)
when {
  context.tlp == "RED" && !context.releasable_to.contains(resource.code) &&
  (context.releasable_to.contains("ALL") || context.releasable_to.containsAny(resource.groups))
};

@id("unknown-classification")
forbid (principal, action == Action::"share", resource)
when { context.level < 0 };

@id("above-accreditation")
forbid (principal, action == Action::"share", resource is Country)
when { context.level >= 0 && context.level > resource.accreditation };

@id("above-agreement-ceiling")
forbid (principal is Country, action == Action::"share", resource is Country)
when {
  context.level >= 0 && principal.hasTag(resource.code) &&
  context.level > principal.getTag(resource.code).ceiling
};

@id("topic-not-agreed")
forbid (principal is Country, action == Action::"share", resource is Country)
when {
  principal.hasTag(resource.code) && !principal.getTag(resource.code).all_topics &&
  !principal.getTag(resource.code).topics.containsAll(context.topics)
};
"""


def cedar_ref(policy: PolicySnapshot, name: str) -> str:
    kind = "Country" if name in policy.members else "Group"
    return f"{kind}::{json.dumps(name)}"


def cedar_deny_rule(policy: PolicySnapshot, rule: DenyRule) -> str:
    principal = f"principal in {cedar_ref(policy, rule.originator)}" if rule.originator else "principal"
    resource = f"resource in {cedar_ref(policy, rule.recipient)}" if rule.recipient else "resource"
    conditions = []
    if rule.classification_at_least is not None:
        floor = policy.rank(rule.classification_at_least)
        if floor is not None:  # a floor off the ladder matches everything: fail closed
            conditions.append(f"(context.level < 0 || context.level >= {floor})")
    if rule.topics is not None:
        conditions.append(f"context.topics.containsAny({json.dumps(sorted(rule.topics))})")
    if rule.tlp is not None:
        conditions.append(f"{json.dumps(sorted(rule.tlp))}.contains(context.tlp)")
    return (
        f'@id("{DENY_PREFIX}{rule.id}")\n'
        f'forbid ({principal}, action == Action::"share", {resource})\n'
        f"when {{ {' && '.join(conditions) or 'true'} }};\n"
    )


def cedar_policies(policy: PolicySnapshot) -> str:
    return RULES_CEDAR + "\n" + "\n".join(cedar_deny_rule(policy, rule) for rule in policy.deny_rules)


def cedar_entities(policy: PolicySnapshot) -> str:
    """Countries with their groups as parents and every agreement (default filled in) as a tag."""

    def rank(level: str) -> int:
        found = policy.rank(level)
        return -1 if found is None else found

    groups = sorted({g for m in policy.members.values() for g in m.groups})
    entities: list[dict[str, Any]] = [
        {"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []} for g in groups
    ]
    for code, member in sorted(policy.members.items()):
        tags = {}
        for recipient in policy.members:
            agreement = policy.agreement(code, recipient)
            tags[recipient] = {
                "ceiling": rank(agreement.ceiling),
                "all_topics": agreement.topics is None,
                "topics": sorted(agreement.topics or ()),
            }
        entities.append(
            {
                "uid": {"type": "Country", "id": code},
                "attrs": {
                    "code": code,
                    "active": member.active,
                    "accreditation": rank(member.accreditation),
                    "groups": sorted(member.groups),
                },
                "parents": [{"type": "Group", "id": g} for g in sorted(member.groups)],
                "tags": tags,
            }
        )
    return json.dumps(entities)


def cedar_requests(policy: PolicySnapshot, originator: str, m: Markings) -> list[dict[str, Any]]:
    level = policy.rank(m.classification)
    context = {
        "level": -1 if level is None else level,
        "tlp": m.tlp,
        "releasable_to": list(m.releasable_to),
        "topics": list(m.topics),
    }
    return [
        {
            "principal": {"type": "Country", "id": originator},
            "action": {"type": "Action", "id": "share"},
            "resource": {"type": "Country", "id": r},
            "context": context,
        }
        for r in sorted(policy.members)
    ]


def cedar_outcome(result: Any) -> tuple[bool, frozenset[str]]:
    """(allowed, failed rule names). Any evaluation error is a deny: never fail open."""
    fired = {result.diagnostics.id_annotations_by_reason.get(p, p) for p in result.diagnostics.reasons}
    if result.diagnostics.errors:
        return False, frozenset({"cedar-error"})
    if result.allowed:
        return True, frozenset()
    return False, frozenset("denied-by-rule" if f.startswith(DENY_PREFIX) else f for f in fired)


class Cedar:
    def __init__(self, policy: PolicySnapshot) -> None:
        assert cedarpy is not None
        self.policy = policy
        self.text = cedar_policies(policy)
        validation = cedarpy.validate_policies(self.text, SCHEMA)
        if not validation.validation_passed:
            names = validation.id_annotations_by_policy_id
            raise SystemExit(
                "Cedar policies do not validate:\n"
                + "\n".join(f"  [{names.get(e.policy_id, e.policy_id)}] {e.error}" for e in validation.errors)
            )
        self.entities_json = cedar_entities(policy)
        self.schema = cedarpy.Schema.from_str(SCHEMA)
        self.policies = cedarpy.PolicySet.from_str(self.text)
        self.entities = cedarpy.Entities.from_json_str(self.entities_json, self.schema)
        # The fail-open pitfall: a recipient missing from the entities must come out denied.
        originator = min(policy.members)
        probe = cedar_requests(policy, originator, Markings("UNCLASSIFIED", "CLEAR", ("ALL",)))[0]
        probe["resource"] = {"type": "Country", "id": "ZZZ"}
        (result,) = cedarpy.is_authorized_batch([probe], self.policies, self.entities, self.schema)
        self.unknown_recipient = (result.decision.value, len(result.diagnostics.errors))
        assert cedar_outcome(result)[0] is False, "Cedar allowed an unknown recipient"

    def run(self, work: list[tuple[str, Markings]]) -> list[tuple[bool, frozenset[str]]]:
        assert cedarpy is not None
        out = []
        for originator, m in work:
            batch = cedar_requests(self.policy, originator, m)
            results = cedarpy.is_authorized_batch(batch, self.policies, self.entities, self.schema)
            out.extend(cedar_outcome(r) for r in results)
        return out

    def run_uncached(
        self, work: list[tuple[str, Markings]], *, per_decision: bool = False
    ) -> list[tuple[bool, frozenset[str]]]:
        """The pitfall: policies, entities and schema handed over as text, parsed on every call
        (one call per item, or one per decision)."""
        assert cedarpy is not None
        out = []
        for originator, m in work:
            batch = cedar_requests(self.policy, originator, m)
            calls = [[request] for request in batch] if per_decision else [batch]
            for requests in calls:
                results = cedarpy.is_authorized_batch(requests, self.text, self.entities_json, SCHEMA)
                out.extend(cedar_outcome(r) for r in results)
        return out


# --- measuring ---------------------------------------------------------------------------


def best_of(repeat: int, call: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall time of `repeat` runs. The garbage collector is paused while the clock runs,
    as timeit does: both engines keep 50,000 results alive, which a broker never does."""
    best, result = float("inf"), None
    for _ in range(repeat):
        result = None
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            result = call()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best, result


def disagreements(python: list[Decision], cedar: list[tuple[bool, frozenset[str]]]) -> list[str]:
    found = []
    for decision, (allowed, rules) in zip(python, cedar, strict=True):
        expected = frozenset(d.rule for d in decision.denials)
        if decision.allowed != allowed or expected != rules:
            found.append(
                f"{decision.originator}->{decision.recipient}: python {sorted(expected)}, cedar {sorted(rules)}"
            )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--uncached-items", type=int, default=2, help="items for the uncached Cedar figures")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    rng = random.Random(20240601)
    policy = coalition(args.members, rng)
    work = items(policy, args.items, rng)
    n = len(work) * len(policy.members)
    figures: dict[str, Any] = {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "members": len(policy.members),
        "agreements": len(policy.agreements),
        "deny_rules": len(policy.deny_rules),
        "items": len(work),
        "decisions": n,
    }

    seconds, decisions = best_of(args.repeat, lambda: python_run(policy, work))
    allowed = sum(d.allowed for d in decisions)
    figures["allowed"] = allowed
    figures["python_decisions_per_s"] = round(n / seconds)
    figures["python_ms_per_item"] = round(seconds / len(work) * 1000, 4)

    if cedarpy is None:
        figures["cedar"] = "skipped: cedarpy is not installed (pip install cedarpy to compare)"
    else:
        figures["cedarpy"] = version("cedarpy")
        engine = Cedar(policy)
        cedar_seconds, outcomes = best_of(args.repeat, lambda: engine.run(work))
        wrong = disagreements(decisions, outcomes)
        figures["cedar_agrees"] = f"{n - len(wrong)}/{n}"
        figures["cedar_unknown_recipient"] = "{} with {} policy errors".format(*engine.unknown_recipient)
        if wrong:
            print("Cedar and Python disagree:", *wrong[:20], sep="\n  ", file=sys.stderr)
            return 1
        figures["cedar_decisions_per_s"] = round(n / cedar_seconds)
        figures["cedar_ms_per_item"] = round(cedar_seconds / len(work) * 1000, 3)
        figures["python_over_cedar"] = round(cedar_seconds / seconds, 1)
        few = work[: args.uncached_items]
        few_decisions = decisions[: len(few) * len(policy.members)]
        for label, per_decision in (("per_item", False), ("per_decision", True)):
            uncached_seconds, uncached = best_of(
                1, lambda p=per_decision: engine.run_uncached(few, per_decision=p)
            )
            assert not disagreements(few_decisions, uncached)
            uncached_rate = len(few_decisions) / uncached_seconds
            figures[f"cedar_uncached_{label}_decisions_per_s"] = round(uncached_rate, 1)
            figures[f"cedar_cached_over_uncached_{label}"] = round(
                figures["cedar_decisions_per_s"] / uncached_rate
            )

    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"machine: {figures['cores']} cores ({figures['usable_cores']} usable), {figures['machine']}")
    print(f"python:  {figures['implementation']} {figures['python']}")
    print(
        f"policy:  {figures['members']} members, {figures['agreements']} agreements + default, "
        f"{figures['deny_rules']} deny rules"
    )
    print(
        f"work:    {figures['items']} items x {figures['members']} recipients = {n} decisions ({allowed} allowed)"
    )
    print(
        f"python:  {figures['python_decisions_per_s']:,} decisions/s "
        f"({figures['python_ms_per_item']} ms per item of {figures['members']} recipients)"
    )
    if cedarpy is None:
        print(f"cedar:   {figures['cedar']}")
        return 0
    print(
        f"cedar:   {figures['cedar_decisions_per_s']:,} decisions/s "
        f"({figures['cedar_ms_per_item']} ms per item; cedarpy {figures['cedarpy']}, cached PolicySet/Schema/"
        f"Entities, one batch per item); agrees with python on {figures['cedar_agrees']} decisions"
    )
    print(f"         python is {figures['python_over_cedar']}x faster")
    print(f"cedar, unknown recipient: {figures['cedar_unknown_recipient']} (read as a deny)")
    for label, how in (("per_item", "one call per item"), ("per_decision", "one call per decision")):
        print(
            f"cedar uncached, re-parsed on every call, {how} ({args.uncached_items} items): "
            f"{figures[f'cedar_uncached_{label}_decisions_per_s']:,} decisions/s, "
            f"{figures[f'cedar_cached_over_uncached_{label}']:,}x slower than cached"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
