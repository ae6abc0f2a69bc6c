"""canonical.b64decode (strict unpadded base64url, done in C for the broker's hot path) against
a plain reference: the regular-expression version it replaced. Same bytes, or the same error,
for every input, hostile ones included — through pybase64 (SIMD, when installed) and through
the standard library's binascii alike."""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Callable, Iterator

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


@contextlib.contextmanager
def _without_pybase64() -> Iterator[None]:
    saved, canonical._pybase64 = canonical._pybase64, None
    try:
        yield
    finally:
        canonical._pybase64 = saved


@contextlib.contextmanager
def _pybase64_for_any_size() -> Iterator[None]:
    saved, canonical.SIMD_MIN_BYTES = canonical.SIMD_MIN_BYTES, 0
    try:
        yield
    finally:
        canonical.SIMD_MIN_BYTES = saved


def on_both_paths(run: Callable[[], object]) -> list[object]:
    """`run()` with pybase64 (the test environment installs it), whatever the value's size, and
    with binascii alone."""
    assert canonical._pybase64 is not None, "the broker's environment installs pybase64"
    with _pybase64_for_any_size():
        fast = run()
    with _without_pybase64():
        return [fast, run()]


def decoded(text: object) -> list[object]:
    return on_both_paths(lambda: outcome(canonical.b64decode, text))


HOSTILE = "+/=\n\r\t .:é\x00\u2028\U0001f600"


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet=_ALPHABET + HOSTILE, max_size=40))
def test_agrees_with_the_reference(text: str) -> None:
    assert decoded(text) == [outcome(reference, text)] * 2


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_round_trips(data: bytes) -> None:
    encoded = on_both_paths(lambda: canonical.b64encode(data))
    assert encoded == [base64.urlsafe_b64encode(data).rstrip(b"=").decode()] * 2
    assert on_both_paths(lambda: canonical.b64decode(encoded[0])) == [data, data]


def test_an_envelope_sized_value_round_trips() -> None:  # SIMD paths differ by length
    data = bytes(range(256)) * 90 + b"\x01\x02"
    text = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert on_both_paths(lambda: canonical.b64encode(data)) == [text, text]
    assert decoded(text) == [data, data]
    assert decoded(text[:1000] + "+" + text[1001:]) == [InvalidHeader] * 2
    assert decoded(text[:5000] + "\n" + text[5001:]) == [InvalidHeader] * 2


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
    assert decoded(text) == [outcome(reference, text)] * 2


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
