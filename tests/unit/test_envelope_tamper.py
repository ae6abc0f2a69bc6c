"""The tamper matrix: every change to a valid envelope is rejected with a specific error.

Broker-side `verify` rejects everything detectable with public keys; what only a private
key can reveal (a validly re-signed envelope, a malicious originator's inconsistent keys)
is rejected by `open_envelope`.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable
from typing import Any

import pytest

from msmt.core import (
    Markings,
    SigningPublicKey,
    canonical,
    errors,
    new_item_id,
    open_envelope,
    parse,
    seal,
    verify,
)
from msmt.core.envelope import MAGIC, SIGNATURE_CONTEXT, Envelope

from .conftest import CountryKeys

RECIPIENTS = ("USA", "JPN", "GBR")
MARKINGS = Markings.create("CONFIDENTIAL", "AMBER", ["G7"], caveats=["ORCON"], topics=["arms"])


def seal_from(
    origin: CountryKeys, countries: dict[str, CountryKeys], payload: bytes = b"report", **extra: Any
) -> bytes:
    return seal(
        payload,
        content_type="text/markdown",
        markings=MARKINGS,
        recipients=[(c, countries[c].encryption.public_key) for c in RECIPIENTS],
        originator=origin.country,
        signing_key=origin.signing,
        **extra,
    )


def header_dict(data: bytes) -> dict[str, Any]:
    return dict(canonical.decode(parse(data).header_bytes))


def rebuild(
    data: bytes, header: dict[str, Any], *, signature: bytes | None = None, ciphertext: bytes | None = None
) -> bytes:
    env = parse(data)
    header_bytes = canonical.encode(header)
    return (
        struct.pack(">4sBI", MAGIC, 1, len(header_bytes))
        + header_bytes
        + (env.signature if signature is None else signature)
        + (env.ciphertext if ciphertext is None else ciphertext)
    )


def resign(
    data: bytes, header: dict[str, Any], signer: CountryKeys, ciphertext: bytes | None = None
) -> bytes:
    header_bytes = canonical.encode(header)
    return rebuild(
        data, header, signature=signer.signing.sign(header_bytes, SIGNATURE_CONTEXT), ciphertext=ciphertext
    )


@pytest.fixture(scope="module")
def directory(countries: dict[str, CountryKeys]) -> Callable[[str, str], SigningPublicKey | None]:
    keys = {(c, k.signing.key_id): k.signing.public_key for c, k in countries.items()}
    return lambda country, key_id: keys.get((country, key_id))


@pytest.fixture(scope="module")
def valid(countries: dict[str, CountryKeys]) -> bytes:
    return seal_from(countries["KOR"], countries)


def flip_b64(value: str) -> str:
    raw = bytearray(canonical.b64decode(value))
    raw[len(raw) // 2] ^= 0x01
    return canonical.b64encode(bytes(raw))


HEADER_MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], type[errors.EnvelopeError]]] = {
    "version": (lambda h: h.update(version=2), errors.UnsupportedVersion),
    "suite": (
        lambda h: h.update(suite="MSMT-v1/X25519+HKDF-SHA256+AES-256-GCM/Ed25519"),
        errors.UnsupportedSuite,
    ),
    "item_id": (lambda h: h.update(item_id=new_item_id(h["created_ms"])), errors.BadSignature),
    "item_id with another time": (
        lambda h: h.update(item_id=new_item_id(h["created_ms"] + 1)),
        errors.InvalidHeader,
    ),
    "originator.country": (lambda h: h["originator"].update(country="USA"), errors.UnknownSigningKey),
    "originator.key_id": (lambda h: h["originator"].update(key_id="0" * 32), errors.UnknownSigningKey),
    "created_ms": (
        lambda h: h.update(created_ms=h["created_ms"] + 1, item_id=new_item_id(h["created_ms"] + 1)),
        errors.BadSignature,
    ),
    "created_ms alone": (lambda h: h.update(created_ms=h["created_ms"] + 1), errors.InvalidHeader),
    "markings.classification": (
        lambda h: h["markings"].update(classification="UNCLASSIFIED"),
        errors.BadSignature,
    ),
    "markings.tlp": (lambda h: h["markings"].update(tlp="CLEAR"), errors.BadSignature),
    "markings.releasable_to": (lambda h: h["markings"].update(releasable_to=["ALL"]), errors.BadSignature),
    "markings.caveats": (lambda h: h["markings"].update(caveats=[]), errors.BadSignature),
    "markings.topics": (lambda h: h["markings"].update(topics=["arms", "cyber"]), errors.BadSignature),
    "content_type": (lambda h: h.update(content_type="text/plain"), errors.BadSignature),
    "recipients[0].country": (lambda h: h["recipients"][0].update(country="AUS"), errors.BadSignature),
    "recipients[1].key_id": (lambda h: h["recipients"][1].update(key_id="f" * 32), errors.BadSignature),
    "recipients[2].wrapped_key": (
        lambda h: h["recipients"][2].update(wrapped_key=flip_b64(h["recipients"][2]["wrapped_key"])),
        errors.BadSignature,
    ),
    "recipients dropped": (lambda h: h["recipients"].pop(), errors.BadSignature),
    "recipients swapped wrapped keys": (
        lambda h: h["recipients"][0].update(wrapped_key=h["recipients"][1]["wrapped_key"]),
        errors.BadSignature,
    ),
    "payload.size": (lambda h: h["payload"].update(size=h["payload"]["size"] + 1), errors.BadSignature),
    "payload.sha256": (
        lambda h: h["payload"].update(sha256=flip_b64(h["payload"]["sha256"])),
        errors.BadSignature,
    ),
    "key_commitment": (lambda h: h.update(key_commitment=flip_b64(h["key_commitment"])), errors.BadSignature),
    "supersedes added": (lambda h: h.update(supersedes=new_item_id()), errors.BadSignature),
    "in_reply_to added": (lambda h: h.update(in_reply_to=new_item_id()), errors.BadSignature),
    "expires_ms added": (lambda h: h.update(expires_ms=h["created_ms"] + 1), errors.BadSignature),
}


@pytest.mark.parametrize("name", sorted(HEADER_MUTATIONS))
def test_changing_any_header_field_is_rejected_by_verify(
    name: str, valid: bytes, directory: Callable[[str, str], SigningPublicKey | None]
) -> None:
    mutate, expected = HEADER_MUTATIONS[name]
    header = copy.deepcopy(header_dict(valid))
    mutate(header)
    with pytest.raises(expected):
        verify(rebuild(valid, header), directory)


@pytest.mark.parametrize("offset", [0, 1000, 3308, 3309, 3372], ids=lambda o: f"byte{o}")
def test_signature_bit_flip_is_rejected(offset: int, valid: bytes, countries: dict[str, CountryKeys]) -> None:
    signature = bytearray(parse(valid).signature)
    signature[offset] ^= 0x80
    with pytest.raises(errors.BadSignature):
        verify(
            rebuild(valid, header_dict(valid), signature=bytes(signature)),
            countries["KOR"].signing.public_key,
        )


@pytest.mark.parametrize("half", ["mldsa", "ed25519"])
def test_each_signature_half_is_required(half: str, valid: bytes, countries: dict[str, CountryKeys]) -> None:
    """A signature whose other half comes from a different valid signature must fail."""
    other = seal_from(countries["KOR"], countries)
    mine, theirs = parse(valid).signature, parse(other).signature
    mixed = mine[:3309] + theirs[3309:] if half == "ed25519" else theirs[:3309] + mine[3309:]
    with pytest.raises(errors.BadSignature):
        verify(rebuild(valid, header_dict(valid), signature=mixed), countries["KOR"].signing.public_key)


@pytest.mark.parametrize("change", ["flip", "truncate", "extend", "empty"])
def test_ciphertext_tampering_is_rejected_by_verify(
    change: str, valid: bytes, countries: dict[str, CountryKeys]
) -> None:
    ciphertext = bytearray(parse(valid).ciphertext)
    if change == "flip":
        ciphertext[0] ^= 1
    elif change == "truncate":
        del ciphertext[-1]
    elif change == "extend":
        ciphertext += b"\x00"
    else:
        ciphertext = bytearray()
    with pytest.raises(errors.PayloadMismatch):
        verify(
            rebuild(valid, header_dict(valid), ciphertext=bytes(ciphertext)),
            countries["KOR"].signing.public_key,
        )


def test_swapping_between_two_valid_envelopes(
    countries: dict[str, CountryKeys], directory: Callable[[str, str], SigningPublicKey | None]
) -> None:
    kor = seal_from(countries["KOR"], countries, b"from KOR", created_ms=1_800_000_000_000)
    jpn = seal_from(countries["FRA"], countries, b"from FRA", created_ms=1_800_000_000_000)
    kh, jh = header_dict(kor), header_dict(jpn)

    swapped_recipients = copy.deepcopy(kh)
    swapped_recipients["recipients"] = jh["recipients"]
    with pytest.raises(errors.BadSignature):
        verify(rebuild(kor, swapped_recipients), directory)

    one_entry = copy.deepcopy(kh)
    one_entry["recipients"][0] = jh["recipients"][0]
    with pytest.raises(errors.BadSignature):
        verify(rebuild(kor, one_entry), directory)

    swapped_ids = copy.deepcopy(kh)
    swapped_ids["item_id"] = jh["item_id"]
    with pytest.raises(errors.BadSignature):
        verify(rebuild(kor, swapped_ids), directory)

    swapped_originator = copy.deepcopy(kh)
    swapped_originator["originator"] = jh["originator"]
    with pytest.raises(errors.BadSignature):
        verify(rebuild(kor, swapped_originator), directory)

    with pytest.raises(errors.PayloadMismatch):
        verify(rebuild(kor, kh, ciphertext=parse(jpn).ciphertext), directory)

    with pytest.raises(errors.BadSignature):  # header of one, signature of the other
        verify(rebuild(kor, kh, signature=parse(jpn).signature), directory)


def test_non_recipient_cannot_open(valid: bytes, countries: dict[str, CountryKeys]) -> None:
    nzl = countries["NZL"]
    with pytest.raises(errors.NotARecipient):
        open_envelope(
            valid,
            recipient="NZL",
            private_key=nzl.encryption,
            originator_key=countries["KOR"].signing.public_key,
        )
    # NZL posing as a recipient with its own key is caught before any decryption.
    with pytest.raises(errors.RecipientKeyMismatch):
        open_envelope(
            valid,
            recipient="USA",
            private_key=nzl.encryption,
            originator_key=countries["KOR"].signing.public_key,
        )


def test_restamped_by_another_country_is_rejected_by_recipient(
    valid: bytes, countries: dict[str, CountryKeys], directory: Callable[[str, str], SigningPublicKey | None]
) -> None:
    """Strip KOR's signature, claim the item as FRA's and sign it validly with FRA's key."""
    fra = countries["FRA"]
    header = copy.deepcopy(header_dict(valid))
    header["originator"] = {"country": "FRA", "key_id": fra.signing.key_id}
    forged = resign(valid, header, fra)
    verify(forged, directory)  # a valid FRA signature: the broker cannot tell
    with pytest.raises(errors.KeyUnwrapFailed):
        open_envelope(
            forged, recipient="USA", private_key=countries["USA"].encryption, originator_key=directory
        )


def test_inconsistent_content_keys_are_rejected_by_recipient(
    countries: dict[str, CountryKeys], directory: Callable[[str, str], SigningPublicKey | None]
) -> None:
    """A malicious originator gives USA a different content key than the committed one."""
    kor = countries["KOR"]
    created = 1_800_000_000_000
    item_id = new_item_id(created)
    first = seal_from(kor, countries, b"what JPN sees", item_id=item_id, created_ms=created)
    second = seal_from(kor, countries, b"what USA sees", item_id=item_id, created_ms=created)
    header = copy.deepcopy(header_dict(first))
    usa_index = [r["country"] for r in header["recipients"]].index("USA")
    header["recipients"][usa_index] = header_dict(second)["recipients"][usa_index]
    forged = resign(first, header, kor)
    verify(forged, directory)
    with pytest.raises(errors.KeyCommitmentMismatch):
        open_envelope(
            forged, recipient="USA", private_key=countries["USA"].encryption, originator_key=directory
        )
    opened = open_envelope(
        forged, recipient="JPN", private_key=countries["JPN"].encryption, originator_key=directory
    )
    assert opened.payload == b"what JPN sees"


def test_ciphertext_under_another_key_is_rejected_by_recipient(
    countries: dict[str, CountryKeys], directory: Callable[[str, str], SigningPublicKey | None]
) -> None:
    import base64
    import hashlib

    kor = countries["KOR"]
    created = 1_800_000_000_000
    item_id = new_item_id(created)
    first = seal_from(kor, countries, b"one", item_id=item_id, created_ms=created)
    other_ciphertext = parse(
        seal_from(kor, countries, b"two", item_id=item_id, created_ms=created)
    ).ciphertext
    header = copy.deepcopy(header_dict(first))
    header["payload"] = {
        "size": len(other_ciphertext),
        "sha256": base64.urlsafe_b64encode(hashlib.sha256(other_ciphertext).digest()).rstrip(b"=").decode(),
    }
    forged = resign(first, header, kor, ciphertext=other_ciphertext)
    verify(forged, directory)
    with pytest.raises(errors.PayloadDecryptionFailed):
        open_envelope(
            forged, recipient="USA", private_key=countries["USA"].encryption, originator_key=directory
        )


def test_unknown_originator_key(valid: bytes, countries: dict[str, CountryKeys]) -> None:
    with pytest.raises(errors.UnknownSigningKey):
        verify(valid, lambda country, key_id: None)
    with pytest.raises(errors.UnknownSigningKey):
        verify(valid, countries["USA"].signing.public_key)


def test_envelope_to_bytes_round_trips(valid: bytes) -> None:
    assert parse(valid).to_bytes() == valid
    assert isinstance(parse(valid), Envelope)
