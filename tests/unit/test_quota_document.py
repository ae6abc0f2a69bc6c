"""The policy document's `[quotas]` (issue 10, finding 4): defaults for every member, a
member's own overrides, strict validation, a readable rendering, and changes in the plan."""

from __future__ import annotations

import pytest

from broker import policydoc
from broker.policydoc import GiB, KiB, MiB
from broker.services.quota import Quotas
from broker.settings import Settings

BASE = """
ladder = ["UNCLASSIFIED", "RESTRICTED"]
default_agreement = { ceiling = "RESTRICTED" }

[countries.KOR]
name = "Republic of Korea"
accreditation = "RESTRICTED"

[countries.NZL]
name = "New Zealand"
accreditation = "RESTRICTED"
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(policydoc.PolicyDocumentError) as info:
        policydoc.parse(BASE + text)
    return info.value.errors


def test_a_document_without_quotas_gets_the_defaults() -> None:
    quotas = policydoc.parse(BASE).quotas
    assert (quotas.requests_per_second, quotas.burst, quotas.long_polls) == (100, 200, 20)
    assert (quotas.stored_bytes, quotas.largest_envelope) == (20 * GiB, 16 * MiB)
    assert quotas.countries == {}
    # the defaults stay within what the broker accepts at all, and what a process holds
    assert quotas.largest_envelope < Settings.model_fields["max_envelope_bytes"].default
    assert quotas.long_polls <= Settings.model_fields["inbox_max_waiting_per_member"].default


def test_defaults_and_a_members_own_quotas() -> None:
    doc = policydoc.parse(
        BASE
        + """
[quotas]
requests_per_second = 2.5
burst = 5
stored_bytes = "1.5 GiB"
largest_envelope = 4096

[quotas.countries.NZL]
long_polls = 2
largest_envelope = "512 KiB"
"""
    )
    quotas = Quotas(doc.quotas)
    nzl, kor = quotas.of("NZL"), quotas.of("KOR")
    assert (nzl.requests_per_second, nzl.burst, nzl.long_polls) == (2.5, 5, 2)
    assert (nzl.stored_bytes, nzl.largest_envelope) == (3 * GiB // 2, 512 * KiB)
    assert (kor.long_polls, kor.largest_envelope) == (20, 4096)


def test_the_rendering_is_readable_and_round_trips() -> None:
    doc = policydoc.parse(
        BASE
        + """
[quotas]
requests_per_second = 50
stored_bytes = 1073741824
largest_envelope = 1000

[quotas.countries.NZL]
stored_bytes = "2 MiB"

[quotas.countries.KOR]
"""
    )
    text = policydoc.render(doc)
    assert "[quotas]\nrequests_per_second = 50\nburst = 200\nlong_polls = 20\n" in text
    assert 'stored_bytes = "1 GiB"' in text
    assert "largest_envelope = 1000\n" in text  # no unit divides it: bytes
    assert '[quotas.countries.NZL]\nstored_bytes = "2 MiB"' in text
    assert "quotas.countries.KOR" not in text  # an override that sets nothing is dropped
    assert policydoc.parse(text) == doc.normalized()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[quotas]\nrequests_per_second = -1\n",
            "quotas.requests_per_second: Input should be greater than 0",
        ),
        ("[quotas]\nrequests_per_second = 0\n", "quotas.requests_per_second: Input should be greater than 0"),
        ("[quotas]\nburst = 0\n", "quotas.burst: Input should be greater than or equal to 1"),
        ("[quotas]\nlong_polls = -2\n", "quotas.long_polls: Input should be greater than or equal to 0"),
        ("[quotas]\nstored_bytes = -5\n", "quotas.stored_bytes: Input should be greater than or equal to 0"),
        ("[quotas]\nlong_polls = true\n", "quotas.long_polls: Input should be a valid integer"),
        ("[quotas]\nburst = 2.5\n", "quotas.burst: Input should be a valid integer"),
        (
            '[quotas]\nrequests_per_second = "5"\n',
            "quotas.requests_per_second: Input should be a valid number",
        ),
        ('[quotas]\nstored_bytes = "2 GB"\n', "quotas.stored_bytes: '2 GB' is not a size"),
        ('[quotas]\nstored_bytes = "-2 GiB"\n', "quotas.stored_bytes: '-2 GiB' is not a size"),
        ('[quotas]\nstored_bytes = "0.5 B"\n', "quotas.stored_bytes: '0.5 B' is not a whole number of bytes"),
        ("[quotas]\nrequests_per_minute = 5\n", "quotas.requests_per_minute: Extra inputs are not permitted"),
        ("[quotas.countries.NZL]\nbytes = 5\n", "quotas.countries.NZL.bytes: Extra inputs are not permitted"),
        (
            "[quotas.countries.NZL]\nburst = -1\n",
            "quotas.countries.NZL.burst: Input should be greater than or equal to 1",
        ),
        ("[quotas.countries.USA]\nburst = 5\n", "quotas.countries.USA: USA is not in countries"),
        ("[quotas]\nlargest_envelope = 0\n", "quotas.largest_envelope: 0 B is outside 1 B .. 66 MiB"),
    ],
)
def test_invalid_quotas_are_refused_with_a_clear_message(text: str, expected: str) -> None:
    errors = errors_of(text)
    assert any(e.startswith(expected) for e in errors), errors


def test_largest_envelope_above_the_brokers_body_limit_is_refused() -> None:
    limit = Settings.model_fields["max_envelope_bytes"].default
    assert limit == policydoc.LARGEST_ENVELOPE_LIMIT  # the limit the document is checked against
    policydoc.parse(BASE + f"[quotas]\nlargest_envelope = {limit}\n")  # at the limit: fine
    for text in (
        f"[quotas]\nlargest_envelope = {limit + 1}\n",
        '[quotas.countries.NZL]\nlargest_envelope = "100 MiB"\n',
    ):
        (error,) = errors_of(text)
        assert "largest_envelope" in error and "MSMT_MAX_ENVELOPE_BYTES" in error and "66 MiB" in error


def test_every_problem_is_reported_at_once() -> None:
    errors = errors_of("[quotas]\nburst = 0\nlong_polls = -1\n[quotas.countries.NZL]\nburst = 0\n")
    assert len(errors) == 3, errors


def test_the_plan_shows_quota_changes() -> None:
    current = policydoc.parse(BASE + "[quotas.countries.KOR]\nlong_polls = 4\n")
    proposed = policydoc.parse(
        BASE
        + """
[quotas]
requests_per_second = 10
stored_bytes = "1 GiB"

[quotas.countries.NZL]
burst = 3
largest_envelope = "1 MiB"
"""
    )
    plan = policydoc.plan(current, proposed, with_access=False)
    assert plan.changes == [
        "quotas: requests_per_second 100 -> 10",
        "quotas: stored_bytes 20 GiB -> 1 GiB",
        "quotas of KOR: long_polls 4 -> 20 (default)",
        "quotas of NZL: burst 200 (default) -> 3; largest_envelope 16 MiB (default) -> 1 MiB",
    ]
    assert not plan.errors
    assert policydoc.plan(proposed, proposed).empty


def test_only_quotas_changing_change_no_access() -> None:
    current = policydoc.parse(BASE)
    plan = policydoc.plan(current, policydoc.parse(BASE + "[quotas]\nburst = 10\n"))
    assert plan.changes == ["quotas: burst 200 -> 10"] and plan.access == []
