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


# canonical.check_b64: what the broker runs on the wrapped keys instead of decoding them. It must
# refuse exactly what decoding followed by a length check refuses, with the same error class.


def decode_then_size(size: int) -> object:
    def run(text: object) -> str:
        raw = canonical.b64decode(text)  # type: ignore[arg-type]
        if len(raw) != size:
            raise InvalidHeader("wrong size")
        return text  # type: ignore[return-value]

    return run


def check_of(size: int) -> object:
    return lambda text: canonical.check_b64(text, size)


@settings(max_examples=1500, deadline=None)
@given(st.integers(min_value=0, max_value=30), st.text(alphabet=_ALPHABET + HOSTILE, max_size=40))
def test_check_agrees_with_decoding(size: int, text: str) -> None:
    assert outcome(check_of(size), text) == outcome(decode_then_size(size), text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_check_accepts_every_encoding_and_only_its_size(data: bytes) -> None:
    text = canonical.b64encode(data)
    assert canonical.check_b64(text, len(data)) == text
    for other in (len(data) - 1, len(data) + 1):
        if other >= 0:
            with pytest.raises(InvalidHeader):
                canonical.check_b64(text, other)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 1168])
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
        "QQ==",
        "QU+D",
        "QUé=",
        "A" * 1558,
        "A" * 1557 + "B",
        3,
        None,
    ],
)
def test_check_edge_cases_agree(size: int, text: object) -> None:
    assert outcome(check_of(size), text) == outcome(decode_then_size(size), text)
