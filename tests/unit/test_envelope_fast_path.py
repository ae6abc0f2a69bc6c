"""The recipients' fast check (envelope._recipients_fast, a few C calls over all entries) against
the entry-by-entry check it stands in front of (envelope._recipients_one_by_one, which reports
the first fault). The fast check may decline (None) whatever it likes, but whatever it accepts,
the one-by-one check must accept with the same entries: it never lets through an entry the
one-by-one check refuses, and it does take the well-formed entries a real envelope carries."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msmt.core import Markings, canonical, errors, parse, seal
from msmt.core.envelope import Header, _recipients_fast, _recipients_one_by_one

from .conftest import MEMBERS, CountryKeys

FIELDS = ("country", "key_id", "wrapped_key")


@pytest.fixture(scope="module")
def header(countries: dict[str, CountryKeys]) -> dict[str, Any]:
    sealed = seal(
        b"payload",
        content_type="application/stix+json",
        markings=Markings.create("UNCLASSIFIED", "GREEN", ["ALL"]),
        recipients=[(code, countries[code].encryption.public_key) for code in MEMBERS],
        originator="KOR",
        signing_key=countries["KOR"].signing,
    )
    return dict(canonical.decode(parse(sealed).header_bytes))


@pytest.fixture(scope="module")
def recipients(header: dict[str, Any]) -> list[dict[str, Any]]:
    raw = header["recipients"]
    assert isinstance(raw, list) and len(raw) == len(MEMBERS)
    return [dict(entry) for entry in raw]


def outcome(check: Any, raw: list[Any]) -> object:
    try:
        return check(raw)
    except (errors.InvalidHeader, errors.NonCanonicalEncoding) as exc:
        return type(exc)


def agree(raw: list[Any]) -> object:
    """The fast check's answer, after checking it against the one-by-one check's."""
    fast = _recipients_fast(raw)
    slow = outcome(_recipients_one_by_one, raw)
    if fast is not None:
        assert fast == slow, "the fast check accepted what the one-by-one check did not, or differently"
    return fast


def test_a_real_envelopes_recipients_take_the_fast_path(recipients: list[dict[str, Any]]) -> None:
    fast = agree(recipients)
    assert fast is not None
    assert [entry.country for entry in fast] == sorted(MEMBERS)
    assert [entry.wrapped_text for entry in fast] == [entry["wrapped_key"] for entry in recipients]


class Text(str):
    pass


class Object(dict):  # type: ignore[type-arg]
    pass


def _set(field: str, value: object) -> Any:
    def mutate(entry: dict[str, Any]) -> Any:
        entry[field] = value
        return entry

    return mutate


def _edit(field: str, at: int, char: str) -> Any:
    def mutate(entry: dict[str, Any]) -> Any:
        text = entry[field]
        where = at % len(text)
        entry[field] = text[:where] + char + text[where + 1 :]
        return entry

    return mutate


MUTATIONS = {
    "not-an-object": lambda e: list(e.values()),
    "dict-subclass": lambda e: Object(e),
    "extra-field": lambda e: {**e, "note": "x"},
    "missing-field": lambda e: {k: v for k, v in e.items() if k != "key_id"},
    "country-lowercase": _set("country", "usa"),
    "country-two-letters": _set("country", "US"),
    "country-four-letters": _set("country", "USAA"),
    "country-with-comma": _set("country", "A,B"),
    "country-newline": _set("country", "US\n"),
    "country-not-text": _set("country", 840),
    "country-str-subclass": lambda e: _set("country", Text(e["country"]))(e),
    "key-id-uppercase": _edit("key_id", 0, "A"),
    "key-id-short": lambda e: _set("key_id", e["key_id"][:31])(e),
    "key-id-comma": _edit("key_id", 5, ","),
    "key-id-bytes": lambda e: _set("key_id", e["key_id"].encode())(e),
    "wrapped-short": lambda e: _set("wrapped_key", e["wrapped_key"][:-4])(e),
    "wrapped-long": lambda e: _set("wrapped_key", e["wrapped_key"] + "AAAA")(e),
    "wrapped-one-extra": lambda e: _set("wrapped_key", e["wrapped_key"] + "A")(e),
    "wrapped-plus": _edit("wrapped_key", 10, "+"),
    "wrapped-slash": _edit("wrapped_key", 10, "/"),
    "wrapped-padding-char": _edit("wrapped_key", 10, "="),
    "wrapped-non-ascii": _edit("wrapped_key", 10, "é"),
    "wrapped-padding-bits": _edit("wrapped_key", -1, "B"),
    "wrapped-padding-bits-high": _edit("wrapped_key", -1, "R"),
    "wrapped-not-text": _set("wrapped_key", None),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
@pytest.mark.parametrize("at", [0, 5, 10])
def test_a_faulty_entry_is_left_to_the_one_by_one_check(
    recipients: list[dict[str, Any]], name: str, at: int
) -> None:
    raw = copy.deepcopy(recipients)
    raw[at] = MUTATIONS[name](raw[at])
    if name in ("dict-subclass", "country-str-subclass"):  # well formed, not plain: accepted slowly
        assert agree(raw) is None
        assert outcome(_recipients_one_by_one, raw) == _recipients_fast(recipients)
        return
    assert agree(raw) is None
    assert outcome(_recipients_one_by_one, raw) in (errors.InvalidHeader, errors.NonCanonicalEncoding)


def test_a_header_reports_its_first_faulty_entry(
    header: dict[str, Any], recipients: list[dict[str, Any]]
) -> None:
    """Header.from_dict names the first faulty entry by index, as before the fast path."""
    assert Header.from_dict(header).recipients == tuple(_recipients_fast(recipients) or ())
    raw = copy.deepcopy(recipients)
    raw[7]["wrapped_key"] = raw[7]["wrapped_key"][:-1] + "B"
    raw[9]["country"] = "usa"
    with pytest.raises(errors.NonCanonicalEncoding, match=r"recipients\[7\]\.wrapped_key"):
        Header.from_dict({**header, "recipients": raw})
    raw[7] = recipients[7]
    with pytest.raises(errors.InvalidHeader, match=r"recipients\[9\]\.country"):
        Header.from_dict({**header, "recipients": raw})


_ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


@st.composite
def entries(draw: st.DrawFn, base: list[dict[str, Any]]) -> list[Any]:
    raw = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(raw) - 1))
        field = draw(st.sampled_from(FIELDS))
        text = raw[index][field]
        kinds = (
            ["char", "replace", "truncate", "value"]
            if isinstance(text, str) and text
            else ["replace", "value"]
        )
        kind = draw(st.sampled_from(kinds))
        if kind == "char":
            at = draw(st.integers(0, len(text) - 1))
            raw[index][field] = text[:at] + draw(st.characters(codec="utf-8")) + text[at + 1 :]  # at >= 0
        elif kind == "replace":
            raw[index][field] = draw(_ANY_TEXT)
        elif kind == "truncate":
            raw[index][field] = text[: draw(st.integers(0, len(text)))]
        else:
            raw[index][field] = draw(
                st.one_of(st.none(), st.integers(), st.binary(max_size=4), st.booleans())
            )
    return raw


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_fast_check_never_accepts_more(recipients: list[dict[str, Any]], data: st.DataObject) -> None:
    agree(data.draw(entries(recipients)))
