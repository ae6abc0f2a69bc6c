"""canonical.b64decode (strict unpadded base64url, done in C for the broker's hot path) against
a plain reference: the regular-expression version it replaced. Same bytes, or the same error,
for every input, hostile ones included."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msmt.core import canonical
from msmt.core.errors import InvalidHeader, NonCanonicalEncoding

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}


def reference(text: object) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise InvalidHeader("not unpadded base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    unused = {2: 0b1111, 3: 0b11}.get(len(text) % 4, 0)
    if unused and _VALUE[text[-1]] & unused:
        raise NonCanonicalEncoding("non-zero padding bits")
    return raw


def outcome(decode: object, text: object) -> bytes | type[Exception]:
    try:
        return decode(text)  # type: ignore[operator, no-any-return]
    except (InvalidHeader, NonCanonicalEncoding) as exc:
        return type(exc)


HOSTILE = "+/=\n\r\t .:é\x00\u2028\U0001f600"


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet=_ALPHABET + HOSTILE, max_size=40))
def test_agrees_with_the_reference(text: str) -> None:
    assert outcome(canonical.b64decode, text) == outcome(reference, text)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_round_trips(data: bytes) -> None:
    assert canonical.b64decode(canonical.b64encode(data)) == data


@pytest.mark.parametrize(
    "text",
    [
        "",
        "QQ",
        "QR",
        "QUI",
        "QUJ",
        "QUJD",
        "Q",
        "QUJD=",
        "QQ==",
        "QU+D",
        "QU/D",
        "QU D",
        "QUJD\n",
        "QUé=",
        3,
        None,
        b"QUJD",
    ],
)
def test_edge_cases_agree(text: object) -> None:
    assert outcome(canonical.b64decode, text) == outcome(reference, text)
