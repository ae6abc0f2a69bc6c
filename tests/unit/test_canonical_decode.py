"""canonical.decode's and encode's orjson fast paths against the reference (stdlib json) decoder: for any
input, the same value or the same refusal (error class and message). The fast path may only
accept; every doubt goes to the reference."""

from __future__ import annotations

import enum
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msmt.core import canonical
from msmt.core.errors import MsmtError

LIMIT = canonical.MAX_SAFE_INTEGER


def outcome(decoder: Any, data: bytes) -> tuple[str, str]:
    try:
        return "value", repr(decoder(data))  # repr: True is not 1, key order shows
    except MsmtError as exc:
        return type(exc).__name__, str(exc)


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


scalars = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["é", "\x7f", "\u2028", "\x1f", "\\", '"', "/", "\U0001f600", "\x00"]),
    st.integers(min_value=-LIMIT - 3, max_value=LIMIT + 3),
    st.sampled_from([LIMIT, -LIMIT, LIMIT + 1, 2**64, -(2**63) - 1, 0, True, False, None]),
    st.sampled_from([Colour.RED, Level.HIGH]),  # what the reference encoder takes as str and int
    st.floats(allow_nan=False, allow_infinity=False),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.text(max_size=3), st.sampled_from(["é", "k", "b", "a"])), inner, max_size=3
        ),
    ),
    max_leaves=12,
)
encodings = st.sampled_from(
    [
        {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False},  # canonical
        {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": True},
        {"sort_keys": False, "separators": (",", ":"), "ensure_ascii": False},
        {"sort_keys": True, "separators": (", ", ": "), "ensure_ascii": False},
    ]
)


@settings(max_examples=2500, deadline=None)
@given(values, encodings)
def test_any_json_decodes_as_the_reference_decodes_it(value: Any, options: dict[str, Any]) -> None:
    data = json.dumps(value, **options).encode("utf-8", "surrogatepass")
    assert outcome(canonical.decode, data) == outcome(canonical.decode_reference, data)


@settings(max_examples=2500, deadline=None)
@given(values, st.data())
def test_a_mutated_canonical_encoding_decodes_as_the_reference_decodes_it(value: Any, data: Any) -> None:
    encoded = bytearray(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        if not encoded:
            break
        at = data.draw(st.integers(0, len(encoded) - 1))
        encoded[at] = data.draw(st.sampled_from(b'{}[]",:\\0123456789aeE-+. \t\n\x00\xc3\xa9\x80'))
    mutated = bytes(encoded)
    assert outcome(canonical.decode, mutated) == outcome(canonical.decode_reference, mutated)


@settings(max_examples=2500, deadline=None)
@given(values)
def test_for_the_profile_both_encoders_emit_the_same_bytes(value: Any) -> None:
    """What the fast path's re-encoding relies on: for every value `_check` admits, orjson and
    the reference encoder agree byte for byte (strings' escapes, key order, integers)."""
    try:
        canonical._check(value)
    except MsmtError:
        return
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == canonical.encode_reference(value)
    assert canonical.encode(value) == canonical.encode_reference(value)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'{"a":1,"a":1}', "DuplicateKey"),
        (b'{"a":1.0}', "NonCanonicalEncoding"),
        (b'{"a":NaN}', "NonCanonicalEncoding"),
        (b'{"a":%d}' % (2**64), "NonCanonicalEncoding"),
        (b'{"a":"\\u0041"}', "NonCanonicalEncoding"),
        (b'{"b":1,"a":2}', "NonCanonicalEncoding"),
        (b'{"a":-0}', "NonCanonicalEncoding"),
        (b'{"a":"\xff"}', "MalformedEnvelope"),
        (b'{"a":', "MalformedEnvelope"),
        (b"[" * 20 + b"]" * 20, "NonCanonicalEncoding"),
    ],
)
def test_refusals_are_the_references(data: bytes, error: str) -> None:
    assert outcome(canonical.decode, data)[0] == error
    assert outcome(canonical.decode, data) == outcome(canonical.decode_reference, data)


def test_a_canonical_header_is_decoded_by_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from msmt.core import Markings, parse, seal
    from msmt.core.keys import EncryptionPrivateKey, SigningPrivateKey

    data = seal(
        b"report",
        content_type="text/markdown",
        markings=Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"]),
        recipients=[(c, EncryptionPrivateKey.generate().public_key) for c in ("USA", "JPN")],
        originator="KOR",
        signing_key=SigningPrivateKey.generate(),
    )
    header = parse(data).header_bytes
    expected = canonical.decode_reference(header)

    def unused(data: bytes) -> Any:
        raise AssertionError("the reference decoder was asked")

    monkeypatch.setattr(canonical, "decode_reference", unused)
    assert canonical.decode(header) == expected
