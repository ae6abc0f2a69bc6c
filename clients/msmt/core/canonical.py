"""Canonical JSON: the one byte encoding that signatures and key files cover.

The profile is RFC 8785 (JCS) restricted to what the protocol needs: objects with ASCII
keys, arrays, strings and integers of at most 2^53 - 1 in magnitude. No floats, booleans
or nulls appear in any signed structure, so for this profile JCS output is exactly
`json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.

Decoding is strict: duplicate keys, floats, constants, invalid UTF-8 and any input that
does not re-encode to the identical bytes are rejected.

With orjson installed (the broker installs it; the client does not need it), `decode` first
tries it: it accepts only what orjson parses, `_check` admits and orjson re-encodes to the very
same bytes, for which the reference (stdlib json) answer is the same value (for this profile
both encoders emit identical bytes: tests/unit/test_canonical_decode.py). Anything else, errors
included, goes to the reference path, which alone says why it is refused. An envelope header
(~18 KB for 11 recipients) decodes in ~30 µs instead of ~105 µs. `encode` uses it likewise,
after `_check`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .errors import DuplicateKey, InvalidHeader, MalformedEnvelope, NonCanonicalEncoding

_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # optional: a speed-up only, the answers are the same without it
    _orjson = None
_pybase64: Any
try:
    import pybase64 as _pybase64
except ImportError:  # optional likewise: base64url through the standard library's binascii
    _pybase64 = None

MAX_SAFE_INTEGER = 2**53 - 1
_B64URL_VALUE = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}

JsonValue = Any  # str | int | list[JsonValue] | dict[str, JsonValue]


def _check(value: JsonValue, depth: int = 0) -> None:
    if depth > 16:
        raise NonCanonicalEncoding("structure is nested more than 16 levels deep")
    # Exact types first, cheapest test first: a header or log leaf is mostly short ASCII strings
    # and small integers (isascii() reads a flag; an ASCII string cannot hold a surrogate).
    kind = type(value)
    if kind is str and value.isascii():
        return
    if kind is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return
    if depth < 16 and (kind is dict or kind is list):
        # A container's members are mostly such strings and integers: admitted here as the call
        # for them would admit them (at depth + 1 <= 16, within the limit), without the call,
        # which was most of the work (an envelope's header holds ~200 members, an item leaf
        # ~40). Anything else takes the call.
        members = value
        if kind is dict:
            for key in value:
                if not isinstance(key, str) or not key.isascii():
                    raise NonCanonicalEncoding("object keys must be ASCII strings")
            members = value.values()
        for item in members:
            sort = type(item)
            if not (
                (sort is str and item.isascii())
                or (sort is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER)
            ):
                _check(item, depth + 1)
        return
    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise NonCanonicalEncoding(f"value of type {type(value).__name__} is not allowed")
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise NonCanonicalEncoding("integer outside the range +/-(2^53 - 1)")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NonCanonicalEncoding("string is not valid Unicode (lone surrogate)") from exc
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise NonCanonicalEncoding("object keys must be ASCII strings")
            _check(item, depth + 1)
    else:
        raise NonCanonicalEncoding(f"value of type {type(value).__name__} is not allowed")


def encode(value: JsonValue) -> bytes:
    """Encode `value` canonically. Raises NonCanonicalEncoding for values outside the profile."""
    _check(value)
    if _orjson is not None:  # for what _check admits, the very bytes of encode_reference
        return bytes(_orjson.dumps(value, option=_orjson.OPT_SORT_KEYS))
    return encode_reference(value)


def encode_reference(value: JsonValue) -> bytes:
    """`encode` with the standard library's json alone (the caller has run `_check`)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def _reject_duplicates(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    result: dict[str, JsonValue] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(f"object key {key!r} appears more than once")
        result[key] = value
    return result


def _reject_float(text: str) -> float:
    raise NonCanonicalEncoding(f"number {text[:20]!r} is not an integer")


def _reject_constant(text: str) -> float:
    raise NonCanonicalEncoding(f"constant {text!r} is not allowed")


# 2^53 - 1 has 16 digits: a longer integer is out of the profile's range whatever its value, and
# is refused before the parser's own digit limit (4,300 in Python) turns it into a syntax error.
_MAX_INT_CHARS = 17  # a sign and 16 digits


def _parse_int(text: str) -> int:
    if len(text) > _MAX_INT_CHARS:
        raise NonCanonicalEncoding(f"integer of {len(text.lstrip('-'))} digits is out of range")
    return int(text)


def decode(data: bytes) -> JsonValue:
    """Decode canonical bytes; anything that is not the canonical encoding is rejected."""
    if _orjson is not None:
        try:
            value = _orjson.loads(data)
            _check(value)
            if _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS) == data:
                return value
        except (ValueError, TypeError, NonCanonicalEncoding, RecursionError):
            pass  # the reference decides, and says why
    return decode_reference(data)


def decode_reference(data: bytes) -> JsonValue:
    """`decode` with the standard library's json alone: the definition of what is accepted."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEnvelope("header is not valid UTF-8") from exc
    try:
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except (DuplicateKey, NonCanonicalEncoding):
        raise
    except RecursionError as exc:  # far deeper than the profile's 16 levels (section 3)
        raise NonCanonicalEncoding("header nests deeper than 16 levels") from exc
    except ValueError as exc:
        raise MalformedEnvelope(f"header is not valid JSON: {exc}") from exc
    _check(value)
    if encode_reference(value) != data:
        raise NonCanonicalEncoding("header bytes are not in canonical form (RFC 8785 profile)")
    return value


# pybase64 lets go of the GIL for every call, however short, and a thread that lets go of it
# while another runs Python waits up to the switch interval (5 ms) to have it back: a
# 43-character digest took ~200 us through pybase64 beside one busy thread, against 0.4 us
# through binascii, which keeps the GIL (bench/README.md, seventeenth session). In the broker
# each envelope's parse decodes two such fields, on threads that share the process with the
# writer and the other requests; SIMD pays only on values of envelope size.
SIMD_MIN_BYTES = 4096


def b64encode(data: bytes) -> str:
    """base64url without padding (RFC 4648 section 5)."""
    # pybase64: the same bytes (tests/unit/test_base64url.py), ~8x faster on an envelope
    if _pybase64 is not None and len(data) >= SIMD_MIN_BYTES:
        return str(_pybase64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii"))
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")  # by len(text) % 4 (1 is never valid)


def b64decode(text: str, what: str = "value") -> bytes:
    """Strict base64url without padding; non-canonical encodings are rejected.

    On the broker's hot path (13 fields per envelope for 11 recipients), so done in C: the
    standard alphabet's "+", "/" and "=" are refused first, the rest is translated to the
    standard alphabet and decoded in strict mode, which refuses any other character."""
    if not isinstance(text, str) or len(text) % 4 == 1 or "+" in text or "/" in text or "=" in text:
        raise InvalidHeader(f"{what} is not unpadded base64url")
    raw: bytes
    try:
        # SIMD for an envelope of an inbox page: ~10 us instead of ~230 us
        if _pybase64 is not None and len(text) >= SIMD_MIN_BYTES:
            # "-_" as the alphabet's last two; validate: any other character is refused ("+" and
            # "/", which it would also take, are refused above)
            raw = _pybase64.b64decode(
                text.encode("ascii") + _PADDING[len(text) % 4], altchars=b"-_", validate=True
            )
        else:
            standard = text.encode("ascii").translate(_TO_STANDARD) + _PADDING[len(text) % 4]
            raw = binascii.a2b_base64(standard, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise InvalidHeader(f"{what} is not unpadded base64url") from exc
    # Canonical iff the unused low bits of the last character are zero (RFC 4648 §3.5):
    # 4 bits when the text ends 2 characters into a quantum, 2 bits when it ends 3 into one.
    unused = {2: 0b1111, 3: 0b11}.get(len(text) % 4, 0)
    if unused and _B64URL_VALUE[text[-1]] & unused:
        raise NonCanonicalEncoding(f"{what} is not canonical base64url (non-zero padding bits)")
    return raw


B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64_length(size: int) -> int:
    """Characters of the unpadded base64url text of `size` bytes."""
    return (4 * size + 2) // 3


def check_b64(text: object, size: int, what: str = "value") -> str:
    """Check that `text` is the canonical unpadded base64url text of exactly `size` bytes,
    without decoding it; return it. Refuses exactly what `b64decode` followed by a length
    check refuses, with the same errors (tests/unit/test_base64url.py compares the two).

    For the broker, which passes the wrapped keys on but never opens them: decoding 11 of
    them cost a fifth of an envelope's signature verification; checking them costs a tenth of
    that (the alphabet by one C-level translate, the length, the unused bits of the last
    character)."""
    if not isinstance(text, str) or not text.isascii() or len(text) % 4 == 1:
        raise InvalidHeader(f"{what} is not unpadded base64url")
    if text.encode("ascii").translate(None, B64URL_ALPHABET):
        raise InvalidHeader(f"{what} is not unpadded base64url")
    unused = {2: 0b1111, 3: 0b11}.get(len(text) % 4, 0)
    if unused and _B64URL_VALUE[text[-1]] & unused:
        raise NonCanonicalEncoding(f"{what} is not canonical base64url (non-zero padding bits)")
    if len(text) != b64_length(size):
        raise InvalidHeader(f"{what} is {(3 * len(text)) // 4} bytes, not {size}")
    return text
