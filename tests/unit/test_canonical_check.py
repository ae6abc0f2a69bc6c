"""canonical.encode's value check (with fast paths for exact str and int, and for the exact str
and int members of exact lists and dicts) against the plain version it replaced, kept here as
the reference: same verdict for every value, at every depth up to and past the limit."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msmt.core import canonical
from msmt.core.errors import NonCanonicalEncoding


def reference(value: Any, depth: int = 0) -> None:
    if depth > 16:
        raise NonCanonicalEncoding("too deep")
    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise NonCanonicalEncoding("type")
    if isinstance(value, int):
        if abs(value) > canonical.MAX_SAFE_INTEGER:
            raise NonCanonicalEncoding("range")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NonCanonicalEncoding("surrogate") from exc
    elif isinstance(value, list):
        for item in value:
            reference(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise NonCanonicalEncoding("key")
            reference(item, depth + 1)
    else:
        raise NonCanonicalEncoding("type")


def verdict(check: Any, value: Any) -> bool:
    try:
        check(value)
    except NonCanonicalEncoding:
        return False
    return True


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Mapping(dict[str, Any]):
    pass


LIMIT = canonical.MAX_SAFE_INTEGER
scalars = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["\ud800", "é", "plain", "", Colour.RED, "\U0001f600x\udfff"]),
    st.integers(min_value=-LIMIT - 3, max_value=LIMIT + 3),
    st.sampled_from([LIMIT, -LIMIT, LIMIT + 1, -LIMIT - 1, 0, True, False, Level.HIGH]),
    st.none(),
    st.floats(allow_nan=False),
    st.binary(max_size=2),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.text(max_size=3), st.sampled_from(["é", "k", "\ud800", Colour.RED])),
            inner,
            max_size=3,
        ),
        st.dictionaries(st.text(max_size=3), inner, max_size=2).map(Mapping),  # a dict, not exactly
    ),
    max_leaves=12,
)


@settings(max_examples=1500, deadline=None)
@given(values)
def test_agrees_with_the_reference(value: Any) -> None:
    assert verdict(canonical._check, value) == verdict(reference, value)


def nested(depth: int, leaf: Any, container: str) -> Any:
    for _ in range(depth):
        leaf = [leaf] if container == "list" else {"k": leaf}
    return leaf


@pytest.mark.parametrize("container", ["list", "dict"])
@pytest.mark.parametrize("depth", [15, 16, 17, 18])
@pytest.mark.parametrize("leaf", ["ascii", 7, "é", LIMIT + 1, [], {}, ["ascii", 7]])
def test_depth_limit_agrees(depth: int, leaf: Any, container: str) -> None:
    value = nested(depth, leaf, container)
    assert verdict(canonical._check, value) == verdict(reference, value)
