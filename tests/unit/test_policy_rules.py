"""Every sharing rule, every TLP level, and the exact sentence a person reads when refused."""

from __future__ import annotations

import dataclasses

import pytest

from msmt.core.markings import Markings
from msmt.core.policy import (
    DEFAULT_LADDER,
    RULES,
    Agreement,
    Decision,
    Denial,
    DenyRule,
    Member,
    PolicySnapshot,
    allowed_recipients,
    evaluate,
    sharing_matrix,
)

MEMBERS = {
    "KOR": Member("KOR", True, "SECRET"),
    "USA": Member("USA", True, "SECRET", frozenset({"G7", "FIVE_EYES"})),
    "JPN": Member("JPN", True, "SECRET", frozenset({"G7"})),
    "FRA": Member("FRA", True, "CONFIDENTIAL", frozenset({"G7", "EU"})),
    "NZL": Member("NZL", True, "RESTRICTED", frozenset({"FIVE_EYES"})),
    "DEU": Member("DEU", False, "SECRET", frozenset({"G7", "EU"})),
}
AGREEMENTS = {
    ("KOR", "USA"): Agreement("SECRET"),
    ("KOR", "JPN"): Agreement("SECRET", frozenset({"maritime", "arms", "cyber"})),
    ("KOR", "FRA"): Agreement("RESTRICTED"),
    ("KOR", "NZL"): Agreement("SECRET", frozenset({"maritime", "arms"})),
    ("DEU", "KOR"): Agreement("SECRET"),
}
DEFAULT = Agreement("UNCLASSIFIED", frozenset({"maritime", "other"}))
POLICY = PolicySnapshot(MEMBERS, AGREEMENTS, DEFAULT)

DENY_RULES = (
    DenyRule(
        "nzl-arms-pause",
        "arms reports to NZL are paused pending the export-control review",
        recipient="NZL",
        topics=frozenset({"arms"}),
    ),
    DenyRule(
        "no-red-to-eu",
        "TLP:RED items do not go to EU members under the current arrangement",
        recipient="EU",
        tlp=frozenset({"RED"}),
    ),
    DenyRule(
        "kor-secret-to-g7",
        "KOR sends SECRET items to G7 partners through the bilateral channel instead",
        originator="KOR",
        recipient="G7",
        classification_at_least="SECRET",
    ),
)
WITH_DENY_RULES = dataclasses.replace(POLICY, deny_rules=DENY_RULES)

LADDER = "UNCLASSIFIED < RESTRICTED < CONFIDENTIAL < SECRET"


def marks(classification: str, tlp: str, releasable_to: list[str], topics: tuple[str, ...] = ()) -> Markings:
    return Markings.create(classification, tlp, releasable_to, topics=topics)


def denials(policy: PolicySnapshot, o: str, r: str, m: Markings) -> list[tuple[str, str]]:
    return [(d.rule, d.reason) for d in evaluate(policy, o, r, m).denials]


# (originator, recipient, markings, expected denials in rule order)
RULE_CASES = {
    "allowed": ("KOR", "USA", marks("SECRET", "RED", ["JPN", "USA"], ("arms",)), []),
    "recipient-is-originator": (
        "KOR",
        "KOR",
        marks("UNCLASSIFIED", "CLEAR", ["ALL"]),
        [("recipient-is-originator", "KOR is the originator of this item and cannot also be a recipient")],
    ),
    "recipient-not-a-member": (
        "KOR",
        "CHN",
        marks("UNCLASSIFIED", "CLEAR", ["CHN"]),
        [("recipient-not-active", "CHN is not a member country")],
    ),
    "recipient-suspended": (
        "KOR",
        "DEU",
        marks("UNCLASSIFIED", "GREEN", ["ALL"]),
        [("recipient-not-active", "DEU is suspended and may not receive items")],
    ),
    "originator-suspended": (
        "DEU",
        "KOR",
        marks("SECRET", "AMBER", ["ALL"]),
        [("originator-not-active", "the originator DEU is suspended and may not share items")],
    ),
    "originator-not-a-member": (
        "CHN",
        "USA",
        marks("UNCLASSIFIED", "CLEAR", ["ALL"]),
        [("originator-not-active", "the originator CHN is not a member country")],
    ),
    "not-releasable-with-groups": (
        "KOR",
        "NZL",
        marks("RESTRICTED", "GREEN", ["EU", "JPN"], ("maritime",)),
        [("not-releasable", "releasable-to (EU, JPN) names neither NZL nor any of its groups (FIVE_EYES)")],
    ),
    "not-releasable-without-groups": (
        "USA",
        "KOR",
        marks("UNCLASSIFIED", "CLEAR", ["G7"]),
        [("not-releasable", "releasable-to (G7) does not name KOR")],
    ),
    "releasable-through-group": ("KOR", "FRA", marks("RESTRICTED", "AMBER", ["EU"]), []),
    "releasable-through-all": ("KOR", "NZL", marks("RESTRICTED", "GREEN", ["ALL"], ("maritime",)), []),
    "tlp-red-through-group": (
        "KOR",
        "USA",
        marks("SECRET", "RED", ["FIVE_EYES"]),
        [
            (
                "tlp-red-not-named",
                "TLP:RED goes only to countries named one by one in releasable-to; "
                "USA is covered only through FIVE_EYES",
            )
        ],
    ),
    "tlp-red-through-all-and-group": (
        "KOR",
        "FRA",
        marks("RESTRICTED", "RED", ["ALL", "EU"]),
        [
            (
                "tlp-red-not-named",
                "TLP:RED goes only to countries named one by one in releasable-to; "
                "FRA is covered only through ALL, EU",
            )
        ],
    ),
    "tlp-red-not-covered-at-all-is-said-once": (
        "KOR",
        "JPN",
        marks("SECRET", "RED", ["USA"]),
        [("not-releasable", "releasable-to (USA) names neither JPN nor any of its groups (G7)")],
    ),
    "unknown-classification": (
        "KOR",
        "USA",
        marks("TOP_SECRET", "CLEAR", ["ALL"]),
        [("unknown-classification", f"classification TOP_SECRET is not on the ladder ({LADDER})")],
    ),
    "above-accreditation": (
        "KOR",
        "NZL",
        marks("CONFIDENTIAL", "AMBER", ["ALL"], ("maritime",)),
        [("above-accreditation", "CONFIDENTIAL is above NZL's accreditation (RESTRICTED)")],
    ),
    "above-agreement-ceiling": (
        "KOR",
        "FRA",
        marks("CONFIDENTIAL", "AMBER", ["ALL"]),
        [("above-agreement-ceiling", "CONFIDENTIAL is above the KOR->FRA agreement's ceiling (RESTRICTED)")],
    ),
    "above-default-agreement-ceiling": (
        "JPN",
        "FRA",
        marks("RESTRICTED", "GREEN", ["ALL"], ("maritime",)),
        [
            (
                "above-agreement-ceiling",
                "RESTRICTED is above the default agreement's ceiling (UNCLASSIFIED); "
                "JPN->FRA has no agreement of its own",
            )
        ],
    ),
    "topic-not-agreed": (
        "KOR",
        "NZL",
        marks("RESTRICTED", "GREEN", ["ALL"], ("cyber", "maritime")),
        [("topic-not-agreed", "the KOR->NZL agreement does not cover topic cyber")],
    ),
    "topics-not-agreed": (
        "KOR",
        "JPN",
        marks("SECRET", "AMBER", ["ALL"], ("finance", "labor", "maritime")),
        [("topic-not-agreed", "the KOR->JPN agreement does not cover topics finance, labor")],
    ),
    "topic-not-in-default-agreement": (
        "USA",
        "JPN",
        marks("UNCLASSIFIED", "CLEAR", ["ALL"], ("arms",)),
        [
            (
                "topic-not-agreed",
                "the default agreement does not cover topic arms; USA->JPN has no agreement of its own",
            )
        ],
    ),
    "agreement-without-topic-list-covers-all-topics": (
        "KOR",
        "USA",
        marks("SECRET", "AMBER", ["ALL"], ("arms", "cyber", "finance", "labor", "procurement")),
        [],
    ),
}


@pytest.mark.parametrize("case", RULE_CASES.values(), ids=list(RULE_CASES))
def test_each_rule_says_why(case: tuple[str, str, Markings, list[tuple[str, str]]]) -> None:
    originator, recipient, markings, expected = case
    assert denials(POLICY, originator, recipient, markings) == expected


def test_every_rule_has_a_case() -> None:
    covered = {rule for *_, expected in RULE_CASES.values() for rule, _ in expected}
    covered |= {rule for *_, expected in DENY_CASES.values() for rule, _ in expected}
    assert covered == {name for name, _ in RULES}


# --- TLP 2.0 -----------------------------------------------------------------------------

RED_VIA_ALL = (
    "tlp-red-not-named",
    "TLP:RED goes only to countries named one by one in releasable-to; USA is covered only through ALL",
)
RED_VIA_GROUP = (
    "tlp-red-not-named",
    "TLP:RED goes only to countries named one by one in releasable-to; USA is covered only through G7",
)
TLP_CASES = [
    # level, releasable-to, expected denials: only RED asks for the recipient by name;
    # AMBER+STRICT limits what the recipient country does next, not which country receives.
    ("CLEAR", ["ALL"], []),
    ("GREEN", ["ALL"], []),
    ("AMBER", ["ALL"], []),
    ("AMBER+STRICT", ["ALL"], []),
    ("RED", ["ALL"], [RED_VIA_ALL]),
    ("CLEAR", ["G7"], []),
    ("GREEN", ["G7"], []),
    ("AMBER", ["G7"], []),
    ("AMBER+STRICT", ["G7"], []),
    ("RED", ["G7"], [RED_VIA_GROUP]),
    ("CLEAR", ["USA"], []),
    ("GREEN", ["USA"], []),
    ("AMBER", ["USA"], []),
    ("AMBER+STRICT", ["USA"], []),
    ("RED", ["USA"], []),
    ("RED", ["G7", "USA"], []),
]


@pytest.mark.parametrize(("tlp", "releasable_to", "expected"), TLP_CASES)
def test_tlp_levels(tlp: str, releasable_to: list[str], expected: list[tuple[str, str]]) -> None:
    assert denials(POLICY, "KOR", "USA", marks("SECRET", tlp, releasable_to)) == expected


# --- admin deny rules --------------------------------------------------------------------

DENY_CASES = {
    "by-recipient-and-topic": (
        "KOR",
        "NZL",
        marks("RESTRICTED", "GREEN", ["ALL"], ("arms",)),
        [
            (
                "denied-by-rule",
                'blocked by admin rule "nzl-arms-pause": '
                "arms reports to NZL are paused pending the export-control review",
            )
        ],
    ),
    "by-recipient-group-and-tlp": (
        "KOR",
        "FRA",
        marks("RESTRICTED", "RED", ["FRA"]),
        [
            (
                "denied-by-rule",
                'blocked by admin rule "no-red-to-eu": '
                "TLP:RED items do not go to EU members under the current arrangement",
            )
        ],
    ),
    "by-originator-and-classification": (
        "KOR",
        "USA",
        marks("SECRET", "AMBER", ["ALL"]),
        [
            (
                "denied-by-rule",
                'blocked by admin rule "kor-secret-to-g7": '
                "KOR sends SECRET items to G7 partners through the bilateral channel instead",
            )
        ],
    ),
    "below-the-classification-floor": ("KOR", "USA", marks("CONFIDENTIAL", "AMBER", ["ALL"]), []),
    "other-topic": ("KOR", "NZL", marks("RESTRICTED", "GREEN", ["ALL"], ("maritime",)), []),
    "other-tlp": ("KOR", "FRA", marks("RESTRICTED", "AMBER+STRICT", ["FRA"]), []),
    "other-recipient-group": ("KOR", "NZL", marks("RESTRICTED", "RED", ["NZL"]), []),
}


@pytest.mark.parametrize("case", DENY_CASES.values(), ids=list(DENY_CASES))
def test_deny_rules(case: tuple[str, str, Markings, list[tuple[str, str]]]) -> None:
    originator, recipient, markings, expected = case
    assert denials(WITH_DENY_RULES, originator, recipient, markings) == expected


def test_every_matching_deny_rule_is_named() -> None:
    got = denials(WITH_DENY_RULES, "KOR", "FRA", marks("SECRET", "RED", ["FRA"]))
    assert got[-1] == (
        "denied-by-rule",
        'blocked by admin rule "no-red-to-eu": TLP:RED items do not go to EU members under the '
        'current arrangement; blocked by admin rule "kor-secret-to-g7": KOR sends SECRET items to '
        "G7 partners through the bilateral channel instead",
    )


def test_a_deny_rule_with_no_condition_denies_everything() -> None:
    policy = dataclasses.replace(POLICY, deny_rules=(DenyRule("freeze", "all sharing is frozen"),))
    assert denials(policy, "KOR", "USA", marks("UNCLASSIFIED", "CLEAR", ["ALL"])) == [
        ("denied-by-rule", 'blocked by admin rule "freeze": all sharing is frozen')
    ]


def test_a_deny_rule_with_an_unknown_floor_fails_closed() -> None:
    rule = DenyRule("typo", "floor misspelt", classification_at_least="SECERT")
    policy = dataclasses.replace(POLICY, deny_rules=(rule,))
    assert [
        d.rule for d in evaluate(policy, "KOR", "USA", marks("UNCLASSIFIED", "CLEAR", ["ALL"])).denials
    ] == ["denied-by-rule"]


# --- every failed rule, not the first -----------------------------------------------------


def test_multiple_failures_are_all_listed_in_rule_order() -> None:
    got = denials(POLICY, "KOR", "DEU", marks("SECRET", "RED", ["EU"], ("arms",)))
    assert got == [
        ("recipient-not-active", "DEU is suspended and may not receive items"),
        (
            "tlp-red-not-named",
            "TLP:RED goes only to countries named one by one in releasable-to; DEU is covered only through EU",
        ),
        (
            "above-agreement-ceiling",
            "SECRET is above the default agreement's ceiling (UNCLASSIFIED); KOR->DEU has no agreement of its own",
        ),
        (
            "topic-not-agreed",
            "the default agreement does not cover topic arms; KOR->DEU has no agreement of its own",
        ),
    ]


def test_failures_alongside_deny_rules_are_all_listed() -> None:
    got = denials(WITH_DENY_RULES, "KOR", "FRA", marks("SECRET", "RED", ["G7"], ("arms",)))
    assert [rule for rule, _ in got] == [
        "tlp-red-not-named",
        "above-accreditation",
        "above-agreement-ceiling",
        "denied-by-rule",
    ]
    got = denials(WITH_DENY_RULES, "DEU", "NZL", marks("SECRET", "RED", ["FIVE_EYES"], ("cyber",)))
    assert got == [
        ("originator-not-active", "the originator DEU is suspended and may not share items"),
        (
            "tlp-red-not-named",
            "TLP:RED goes only to countries named one by one in releasable-to; NZL is covered only through FIVE_EYES",
        ),
        ("above-accreditation", "SECRET is above NZL's accreditation (RESTRICTED)"),
        (
            "above-agreement-ceiling",
            "SECRET is above the default agreement's ceiling (UNCLASSIFIED); DEU->NZL has no agreement of its own",
        ),
        (
            "topic-not-agreed",
            "the default agreement does not cover topic cyber; DEU->NZL has no agreement of its own",
        ),
    ]


def test_an_unknown_recipient_is_refused_once_not_per_rule() -> None:
    got = denials(POLICY, "KOR", "CHN", marks("SECRET", "AMBER", ["ALL"]))
    assert got == [
        ("recipient-not-active", "CHN is not a member country"),
        (
            "above-agreement-ceiling",
            "SECRET is above the default agreement's ceiling (UNCLASSIFIED); KOR->CHN has no agreement of its own",
        ),
    ]


# --- the ladder is data ------------------------------------------------------------------

NATO_LIKE = ("UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOP_SECRET")


def test_a_configured_ladder_is_used() -> None:
    members = dict(MEMBERS, USA=Member("USA", True, "TOP_SECRET", frozenset({"G7"})))
    agreements = dict(AGREEMENTS)
    agreements["KOR", "USA"] = Agreement("TOP_SECRET")
    policy = PolicySnapshot(members, agreements, DEFAULT, ladder=NATO_LIKE)
    assert denials(policy, "KOR", "USA", marks("TOP_SECRET", "AMBER", ["ALL"])) == []
    assert denials(policy, "KOR", "JPN", marks("TOP_SECRET", "AMBER", ["ALL"])) == [
        ("above-accreditation", "TOP_SECRET is above JPN's accreditation (SECRET)"),
        ("above-agreement-ceiling", "TOP_SECRET is above the KOR->JPN agreement's ceiling (SECRET)"),
    ]


def test_values_off_a_short_ladder_are_refused_and_said() -> None:
    policy = PolicySnapshot(MEMBERS, AGREEMENTS, DEFAULT, ladder=("OFFICIAL", "SECRET"))
    assert denials(policy, "KOR", "NZL", marks("OFFICIAL", "GREEN", ["ALL"], ("maritime",))) == [
        ("above-accreditation", "NZL's accreditation (RESTRICTED) is not on the ladder"),
    ]
    assert denials(policy, "KOR", "FRA", marks("SECRET", "GREEN", ["ALL"])) == [
        ("above-accreditation", "FRA's accreditation (CONFIDENTIAL) is not on the ladder"),
        ("above-agreement-ceiling", "the KOR->FRA agreement's ceiling (RESTRICTED) is not on the ladder"),
    ]
    assert denials(policy, "KOR", "USA", marks("RESTRICTED", "GREEN", ["ALL"])) == [
        ("unknown-classification", "classification RESTRICTED is not on the ladder (OFFICIAL < SECRET)"),
    ]


@pytest.mark.parametrize("ladder", [(), ("SECRET", "SECRET")])
def test_a_ladder_must_be_non_empty_and_unique(ladder: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="ladder"):
        PolicySnapshot(MEMBERS, AGREEMENTS, DEFAULT, ladder=ladder)


def test_the_broker_constructor_still_works() -> None:
    policy = PolicySnapshot(MEMBERS, AGREEMENTS, DEFAULT)
    assert policy.ladder == DEFAULT_LADDER
    assert policy.deny_rules == ()


# --- groups and ALL resolve at evaluation time -------------------------------------------


def test_groups_and_all_follow_membership_at_evaluation_time() -> None:
    item = marks("UNCLASSIFIED", "GREEN", ["EU"])
    assert not evaluate(POLICY, "KOR", "JPN", item).allowed
    joined = dict(MEMBERS, JPN=Member("JPN", True, "SECRET", frozenset({"G7", "EU"})))
    assert evaluate(dataclasses.replace(POLICY, members=joined), "KOR", "JPN", item).allowed

    to_all = marks("UNCLASSIFIED", "GREEN", ["ALL"])
    newcomer = dict(MEMBERS, ITA=Member("ITA", True, "SECRET"))
    assert evaluate(dataclasses.replace(POLICY, members=newcomer), "KOR", "ITA", to_all).allowed
    reinstated = dict(MEMBERS, DEU=Member("DEU", True, "SECRET", frozenset({"G7", "EU"})))
    assert evaluate(dataclasses.replace(POLICY, members=reinstated), "KOR", "DEU", to_all).allowed


# --- preflight, matrix, explanation ------------------------------------------------------


def test_allowed_recipients_lists_partners_and_reasons() -> None:
    allowed, denied = allowed_recipients(
        POLICY, "KOR", marks("RESTRICTED", "AMBER", ["G7", "NZL"], ("arms",))
    )
    assert allowed == ["FRA", "JPN", "NZL", "USA"]
    assert denied == {
        "DEU": (
            Denial("recipient-not-active", "DEU is suspended and may not receive items"),
            Denial(
                "above-agreement-ceiling",
                "RESTRICTED is above the default agreement's ceiling (UNCLASSIFIED); "
                "KOR->DEU has no agreement of its own",
            ),
            Denial(
                "topic-not-agreed",
                "the default agreement does not cover topic arms; KOR->DEU has no agreement of its own",
            ),
        )
    }


def test_sharing_matrix_covers_every_ordered_pair() -> None:
    item = marks("UNCLASSIFIED", "CLEAR", ["ALL"], ("maritime",))
    matrix = sharing_matrix(POLICY, item)
    assert sorted(matrix) == sorted(MEMBERS)
    for originator, row in matrix.items():
        assert sorted(row) == sorted(set(MEMBERS) - {originator})
        for recipient, decision in row.items():
            assert decision == evaluate(POLICY, originator, recipient, item)
    allowed = {(o, r) for o, row in matrix.items() for r, d in row.items() if d.allowed}
    assert allowed == {(o, r) for o in MEMBERS for r in MEMBERS if o != r and "DEU" not in (o, r)}


def test_a_decision_explains_itself_in_one_line() -> None:
    assert (
        evaluate(POLICY, "KOR", "USA", marks("SECRET", "AMBER", ["ALL"])).explain() == "KOR -> USA: allowed"
    )
    decision = evaluate(POLICY, "KOR", "NZL", marks("CONFIDENTIAL", "AMBER", ["JPN"]))
    assert decision.explain() == (
        "KOR -> NZL: denied: [not-releasable] releasable-to (JPN) names neither NZL nor any of its "
        "groups (FIVE_EYES); [above-accreditation] CONFIDENTIAL is above NZL's accreditation (RESTRICTED)"
    )
    assert Decision("KOR", "USA", ()).allowed
