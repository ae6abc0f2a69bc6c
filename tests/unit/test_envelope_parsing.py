"""Structural rejection: framing, canonical bytes, schema and size limits."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from msmt.core import Markings, canonical, errors, parse, seal
from msmt.core.envelope import MAGIC, MAX_HEADER_BYTES, SIGNATURE_SIZE

from .conftest import CountryKeys


@pytest.fixture(scope="module")
def valid(countries: dict[str, CountryKeys]) -> bytes:
    return seal(
        b"payload",
        content_type="application/stix+json",
        markings=Markings.create("UNCLASSIFIED", "GREEN", ["ALL"]),
        recipients=[("USA", countries["USA"].encryption.public_key)],
        originator="KOR",
        signing_key=countries["KOR"].signing,
    )


def with_header_bytes(valid: bytes, header_bytes: bytes) -> bytes:
    env = parse(valid)
    return struct.pack(">4sBI", MAGIC, 1, len(header_bytes)) + header_bytes + env.signature + env.ciphertext


def header(valid: bytes) -> dict[str, Any]:
    return dict(canonical.decode(parse(valid).header_bytes))


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda d: b"", errors.MalformedEnvelope),
        (lambda d: d[:8], errors.MalformedEnvelope),
        (lambda d: b"XMSM" + d[4:], errors.MalformedEnvelope),
        (lambda d: d[:4] + b"\x02" + d[5:], errors.UnsupportedVersion),
        (lambda d: d[:5] + struct.pack(">I", MAX_HEADER_BYTES + 1) + d[9:], errors.OversizedField),
        (lambda d: d[:5] + struct.pack(">I", len(d)) + d[9:], errors.MalformedEnvelope),
        (lambda d: d[: len(d) - len(parse(d).ciphertext) - 1], errors.MalformedEnvelope),
    ],
    ids=[
        "empty",
        "prefix-only",
        "bad-magic",
        "version-2",
        "header-too-large",
        "header-past-end",
        "signature-truncated",
    ],
)
def test_framing(valid: bytes, mangle: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse(mangle(valid))


def test_duplicate_key_rejected(valid: bytes) -> None:
    raw = parse(valid).header_bytes
    duplicated = raw.replace(b'"version":1', b'"version":1,"version":1')
    with pytest.raises(errors.DuplicateKey):
        parse(with_header_bytes(valid, duplicated))


@pytest.mark.parametrize(
    "transform",
    [
        lambda b: b.replace(b":", b": ", 1),  # whitespace
        lambda b: b + b"\n",
        lambda b: (
            b"{" + b[b.index(b'"version"') :].rstrip(b"}") + b"," + b[1 : b.index(b'"version"') - 1] + b"}"
        ),  # keys out of order
        lambda b: b.replace(b'"version":1', b'"version":1.0'),
        lambda b: b.replace(b'"version":1', b'"version":true'),
    ],
    ids=["whitespace", "trailing-newline", "unsorted-keys", "float", "boolean"],
)
def test_non_canonical_rejected(valid: bytes, transform: Any) -> None:
    with pytest.raises((errors.NonCanonicalEncoding, errors.InvalidHeader)) as info:
        parse(with_header_bytes(valid, transform(parse(valid).header_bytes)))
    assert isinstance(info.value, errors.NonCanonicalEncoding) or "version" in str(info.value)


def test_escaped_character_is_non_canonical(valid: bytes) -> None:
    raw = parse(valid).header_bytes.replace(b'"content_type"', b'"content\\u005ftype"')
    with pytest.raises(errors.NonCanonicalEncoding):
        parse(with_header_bytes(valid, raw))


def test_not_json_and_not_utf8(valid: bytes) -> None:
    with pytest.raises(errors.MalformedEnvelope):
        parse(with_header_bytes(valid, b"{not json"))
    with pytest.raises(errors.MalformedEnvelope):
        parse(with_header_bytes(valid, b'{"a":"\xff"}'))
    # unclosed *and* nested far past 16 levels: two defects, so either code (protocol section 3)
    with pytest.raises((errors.MalformedEnvelope, errors.NonCanonicalEncoding)):
        parse(with_header_bytes(valid, b"[" * 100_000))


def test_parser_limits_are_non_canonical_not_malformed(valid: bytes) -> None:
    """An integer past the parser's digit limit, and nesting past its recursion limit, are out
    of the profile (section 3): `non-canonical-encoding`, like any other integer out of range or
    nesting deeper than 16 (issue 10, finding 7)."""
    raw = parse(valid).header_bytes
    created = str(parse(valid).header.created_ms).encode()
    for header_bytes in (
        raw.replace(b'"created_ms":' + created, b'"created_ms":' + b"1" * 5000, 1),
        raw.replace(b'"created_ms":' + created, b'"created_ms":-' + b"1" * 18, 1),
        raw.replace(b'"caveats":[]', b'"caveats":' + b"[" * 5000 + b"]" * 5000, 1),
    ):
        assert header_bytes != raw
        with pytest.raises(errors.NonCanonicalEncoding):
            parse(with_header_bytes(valid, header_bytes))


def test_integer_beyond_2_53_rejected(valid: bytes) -> None:
    h = header(valid)
    raw = canonical.encode(h).replace(str(h["created_ms"]).encode(), str(2**60).encode())
    with pytest.raises(errors.NonCanonicalEncoding):
        parse(with_header_bytes(valid, raw))


def mutate(valid: bytes, change: Any) -> bytes:
    h = header(valid)
    change(h)
    return with_header_bytes(valid, canonical.encode(h))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda h: h.update(extra="x"), errors.InvalidHeader),
        (lambda h: h.pop("payload"), errors.InvalidHeader),
        (lambda h: h.update(version=99), errors.UnsupportedVersion),
        (lambda h: h.update(suite="X"), errors.UnsupportedSuite),
        (lambda h: h.update(item_id="not-an-id"), errors.InvalidHeader),
        (
            lambda h: h.update(item_id="01890a5d-ac96-474e-9b23-9f6c1f2d3e4f"),
            errors.InvalidHeader,
        ),  # v4 marker
        (lambda h: h["originator"].update(country="kor"), errors.InvalidHeader),
        (lambda h: h["originator"].update(extra="x"), errors.InvalidHeader),
        (lambda h: h.update(created_ms=-5), errors.InvalidHeader),
        (lambda h: h.update(content_type="Text/Plain"), errors.InvalidHeader),
        (lambda h: h.update(content_type="a/" + "b" * 200), errors.OversizedField),
        (lambda h: h["markings"].update(tlp="PURPLE"), errors.InvalidHeader),
        (lambda h: h["markings"].update(releasable_to=[]), errors.InvalidHeader),
        (lambda h: h["markings"].update(releasable_to=["USA", "JPN"]), errors.InvalidHeader),  # unsorted
        (lambda h: h["markings"].update(topics=["t"] * 17), errors.OversizedField),
        (lambda h: h["markings"].update(classification="secret"), errors.InvalidHeader),
        (lambda h: h.update(recipients=[]), errors.InvalidHeader),
        (lambda h: h.update(recipients=h["recipients"] * 300), errors.OversizedField),
        (lambda h: h["recipients"][0].update(wrapped_key="AAAA"), errors.InvalidHeader),
        (lambda h: h["recipients"][0].update(wrapped_key="!!"), errors.InvalidHeader),
        (lambda h: h["payload"].update(size=2**40), errors.OversizedField),
        (lambda h: h["payload"].update(sha256="AAAA"), errors.InvalidHeader),
        (lambda h: h.update(key_commitment="AB"), errors.NonCanonicalEncoding),  # non-zero padding bits
        (lambda h: h.update(expires_ms=h["created_ms"]), errors.InvalidHeader),
        (lambda h: h.update(supersedes="x"), errors.InvalidHeader),
        (lambda h: h.update(supersedes=h["item_id"]), errors.InvalidHeader),
        (lambda h: h.update(content_type=5), errors.InvalidHeader),
        # a trailing newline must not slip past a pattern check ("$" matches before "\n")
        (lambda h: h["originator"].update(country="KOR\n"), errors.InvalidHeader),
        (lambda h: h["originator"].update(key_id=h["originator"]["key_id"] + "\n"), errors.InvalidHeader),
        (lambda h: h.update(content_type="text/plain\n"), errors.InvalidHeader),
        (lambda h: h.update(item_id=h["item_id"] + "\n"), errors.InvalidHeader),
        (lambda h: h["markings"].update(classification="SECRET\n"), errors.InvalidHeader),
        (lambda h: h["markings"].update(topics=["arms\n"]), errors.InvalidHeader),
        (lambda h: h["recipients"][0].update(country="USA\n"), errors.InvalidHeader),
    ],
)
def test_schema(valid: bytes, change: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse(mutate(valid, change))


def test_oversized_ciphertext_rejected(valid: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from msmt.core import envelope

    monkeypatch.setattr(envelope, "MAX_PAYLOAD_BYTES", 4)
    with pytest.raises(errors.OversizedField):
        parse(valid + b"\x00" * 64)


def test_signature_size_is_fixed() -> None:
    assert SIGNATURE_SIZE == 3373
