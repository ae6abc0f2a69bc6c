"""Hypothesis strategies for random but valid policy documents."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from broker import policydoc
from msmt.core.markings import TLP_LEVELS, TOPICS

LADDER = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"]
CODES = ["KOR", "USA", "JPN", "FRA", "GBR", "NZL"]
GROUPS = ["G7", "EU", "FIVE_EYES"]


@st.composite
def documents(draw: st.DrawFn) -> policydoc.PolicyDocument:
    codes = draw(st.lists(st.sampled_from(CODES), min_size=2, max_size=6, unique=True))
    levels = st.sampled_from(LADDER)
    topic_sets: st.SearchStrategy[Any] = st.one_of(
        st.just("*"), st.lists(st.sampled_from(TOPICS), max_size=3, unique=True)
    )
    countries = {
        code: {
            "name": f"Country {code}",
            "status": draw(st.sampled_from(["active", "suspended"])),
            "accreditation": draw(levels),
            "groups": draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)),
        }
        for code in codes
    }
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from(codes), st.sampled_from(codes)).filter(lambda p: p[0] != p[1]),
            max_size=6,
            unique=True,
        )
    )
    agreements = [
        {"originator": o, "recipient": r, "ceiling": draw(levels), "topics": draw(topic_sets)}
        for o, r in pairs
    ]
    names = codes + sorted({g for c in countries.values() for g in c["groups"]})
    rules = []
    for i in range(draw(st.integers(0, 2))):
        rule: dict[str, Any] = {"id": f"rule-{i}", "reason": f"reason {i}"}
        if draw(st.booleans()):
            rule["originator"] = draw(st.sampled_from(names))
        if draw(st.booleans()):
            rule["recipient"] = draw(st.sampled_from(names))
        if draw(st.booleans()):
            rule["classification_at_least"] = draw(levels)
        if draw(st.booleans()):
            rule["topics"] = draw(st.lists(st.sampled_from(TOPICS), min_size=1, max_size=2, unique=True))
        if draw(st.booleans()):
            rule["tlp"] = draw(st.lists(st.sampled_from(TLP_LEVELS), min_size=1, max_size=2, unique=True))
        rules.append(rule)
    return policydoc.from_dict(
        {
            "ladder": LADDER,
            "default_agreement": {"ceiling": draw(levels), "topics": draw(topic_sets)},
            "countries": countries,
            "agreements": agreements,
            "deny_rules": rules,
        }
    )


@st.composite
def markings_for(draw: st.DrawFn, doc: policydoc.PolicyDocument) -> dict[str, Any]:
    names = sorted(doc.countries) + sorted({g for c in doc.countries.values() for g in c.groups}) + ["ALL"]
    return {
        "classification": draw(st.sampled_from(LADDER)),
        "tlp": draw(st.sampled_from(TLP_LEVELS)),
        "releasable_to": sorted(set(draw(st.lists(st.sampled_from(names), min_size=1, max_size=3)))),
        "caveats": [],
        "topics": sorted(set(draw(st.lists(st.sampled_from(TOPICS), max_size=2)))),
    }
