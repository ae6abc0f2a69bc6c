"""Public key import is strict: non-canonical and low-order Ed25519 and X25519 keys are refused
with a code, never accepted and never left to fail later as an uncoded ValueError.

The lists below are the well-known 8-torsion encodings (the libsodium and ed25519-dalek
blacklists); each entry is also checked here by arithmetic, independently of the code under test.
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from msmt.core import (
    ApiPrivateKey,
    EncryptionPrivateKey,
    KeyKind,
    Markings,
    SigningPrivateKey,
    canonical,
    compute_key_id,
    errors,
    parse_public_key_document,
    public_key_document,
    seal,
)
from msmt.core.keys import ApiPublicKey, EncryptionPublicKey, SigningPublicKey

P = 2**255 - 19
D = (-121665 * pow(121666, -1, P)) % P


def _le(value: int) -> bytes:
    return value.to_bytes(32, "little")


def _signed(value: int) -> bytes:
    """The encoding of y = value with the x sign bit set."""
    return _le(value | 1 << 255)


# --- Ed25519 -------------------------------------------------------------------------------

ED_ORDER8_Y = 2707385501144840649318225287225658788936804267575313519463743609750303402022

# canonical encodings of the 8 points of the 8-torsion subgroup (identity included)
ED_SMALL_ORDER_CANONICAL = {
    "identity": bytes.fromhex("0100000000000000000000000000000000000000000000000000000000000000"),
    "order-2": bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    "order-4": bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000000"),
    "order-4-neg": bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000080"),
    "order-8-a": bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    "order-8-a-neg": bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
    "order-8-b": bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    "order-8-b-neg": bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
}
# the same points written other ways: x = 0 with the sign bit, and y + p for y = 0 and y = 1
ED_SMALL_ORDER_NONCANONICAL = {
    "identity-neg-zero": _signed(1),
    "order-2-neg-zero": _signed(P - 1),
    "order-4-y-p": _le(P),
    "order-4-y-p-neg": _signed(P),
    "identity-y-p-plus-1": _le(P + 1),
    "identity-y-p-plus-1-neg": _signed(P + 1),
}
ED_SMALL_ORDER = {**ED_SMALL_ORDER_CANONICAL, **ED_SMALL_ORDER_NONCANONICAL}


def _ed_decode(raw: bytes) -> tuple[int, int] | None:
    """RFC 8032 5.1.3 without the y < p check (y is reduced), or None off the curve."""
    value = int.from_bytes(raw, "little")
    sign, y = value >> 255, (value & ((1 << 255) - 1)) % P
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x2 = u * pow(v, -1, P) % P
    if x2 == 0:
        return (0, y)
    x = pow(x2, (P + 3) // 8, P)
    if x * x % P != x2:
        x = x * pow(2, (P - 1) // 4, P) % P
    if x * x % P != x2:
        return None
    return ((P - x) % P if x & 1 != sign else x, y)


def _ed_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return (
        (x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P,
        (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P,
    )


def _ed_times8(point: tuple[int, int]) -> tuple[int, int]:
    for _ in range(3):
        point = _ed_add(point, point)
    return point


@pytest.mark.parametrize("raw", list(ED_SMALL_ORDER.values()), ids=list(ED_SMALL_ORDER))
def test_blacklist_entries_are_small_order_points(raw: bytes) -> None:
    point = _ed_decode(raw)
    assert point is not None
    assert _ed_times8(point) == (0, 1)


def test_blacklist_covers_the_whole_8_torsion_subgroup() -> None:
    points = {_ed_decode(raw) for raw in ED_SMALL_ORDER_CANONICAL.values()}
    assert len(points) == 8
    assert (0, 1) in points
    assert any(p is not None and p[1] == ED_ORDER8_Y for p in points)


@pytest.mark.parametrize("raw", list(ED_SMALL_ORDER.values()), ids=list(ED_SMALL_ORDER))
def test_small_order_api_keys_refused(raw: bytes) -> None:
    with pytest.raises(errors.InvalidPublicKey) as info:
        ApiPublicKey.from_bytes(raw)
    assert info.value.code == "small-order-public-key"
    assert "order" in info.value.detail


@pytest.mark.parametrize("raw", list(ED_SMALL_ORDER.values()), ids=list(ED_SMALL_ORDER))
def test_small_order_ed25519_half_of_signing_key_refused(raw: bytes) -> None:
    good = SigningPrivateKey.generate().public_key.raw
    with pytest.raises(errors.InvalidPublicKey) as info:
        SigningPublicKey.from_bytes(good[:1952] + raw)
    assert info.value.code == "small-order-public-key"


def _noncanonical_on_curve() -> list[bytes]:
    """Encodings with p <= y < 2**255 that do decode to a point of large order."""
    found = []
    for y in range(P, 2**255):
        for raw in (_le(y), _signed(y)):
            point = _ed_decode(raw)
            if point is not None and _ed_times8(point) != (0, 1):
                found.append(raw)
    return found


NONCANONICAL = _noncanonical_on_curve()


def test_there_are_noncanonical_encodings_of_large_order_points() -> None:
    assert len(NONCANONICAL) >= 4


@pytest.mark.parametrize("raw", NONCANONICAL, ids=lambda raw: raw[:1].hex() + "-" + raw[-1:].hex())
def test_noncanonical_ed25519_keys_refused(raw: bytes) -> None:
    with pytest.raises(errors.InvalidPublicKey) as info:
        ApiPublicKey.from_bytes(raw)
    assert info.value.code == "non-canonical-public-key"
    good = SigningPrivateKey.generate().public_key.raw
    with pytest.raises(errors.InvalidPublicKey) as info:
        SigningPublicKey.from_bytes(good[:1952] + raw)
    assert info.value.code == "non-canonical-public-key"


def test_ed25519_key_off_the_curve_refused() -> None:
    raw = next(_le(y) for y in range(2, 1000) if _ed_decode(_le(y)) is None)
    with pytest.raises(errors.InvalidPublicKey) as info:
        ApiPublicKey.from_bytes(raw)
    assert info.value.code == "invalid-public-key"
    assert "curve" in info.value.detail


def test_public_key_document_with_small_order_key_refused() -> None:
    document = json.loads(public_key_document("JPN", ApiPrivateKey.generate().public_key))
    raw = ED_SMALL_ORDER["identity"]
    document["public_key"] = canonical.b64encode(raw)
    document["key_id"] = compute_key_id(KeyKind.API, raw)
    with pytest.raises(errors.InvalidPublicKey) as info:
        parse_public_key_document(json.dumps(document).encode())
    assert info.value.code == "small-order-public-key"


# --- X25519 half of X-Wing ------------------------------------------------------------------

X_LOW_ORDER_CANONICAL = {
    "zero": bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000000"),
    "one": bytes.fromhex("0100000000000000000000000000000000000000000000000000000000000000"),
    "order-8-a": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    "order-8-b": bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    "p-minus-1": bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
}
X_LOW_ORDER = {
    **X_LOW_ORDER_CANONICAL,
    "p": _le(P),  # 0 + p
    "p-plus-1": _le(P + 1),  # 1 + p
    # X25519 ignores the top bit (RFC 7748): each value with it set is the same point
    **{f"{name}-top-bit": raw[:31] + bytes([raw[31] | 0x80]) for name, raw in X_LOW_ORDER_CANONICAL.items()},
    "p-top-bit": _le(P)[:31] + b"\xff",
    "p-plus-1-top-bit": _le(P + 1)[:31] + b"\xff",
}


@pytest.mark.parametrize("raw", list(X_LOW_ORDER.values()), ids=list(X_LOW_ORDER))
def test_x25519_list_entries_give_an_all_zero_shared_secret(raw: bytes) -> None:
    peer = x25519.X25519PublicKey.from_public_bytes(raw)
    with pytest.raises(ValueError):
        x25519.X25519PrivateKey.generate().exchange(peer)


@pytest.mark.parametrize("raw", list(X_LOW_ORDER.values()), ids=list(X_LOW_ORDER))
def test_low_order_x25519_half_refused_and_never_sealed_to(raw: bytes) -> None:
    good = EncryptionPrivateKey.generate().public_key.raw
    signer = SigningPrivateKey.generate()
    with pytest.raises(errors.MsmtError) as info:  # a ValueError here would escape uncoded
        key = EncryptionPublicKey.from_bytes(good[:1184] + raw)
        seal(
            b"report",
            content_type="text/plain",
            markings=Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"]),
            recipients=[("USA", key)],
            originator="KOR",
            signing_key=signer,
        )
    assert isinstance(info.value, errors.InvalidPublicKey)
    assert info.value.code == "small-order-public-key"


def test_noncanonical_x25519_half_refused() -> None:
    good = EncryptionPrivateKey.generate().public_key.raw
    for u in (P + 2, P + 5, 2**255 - 1):
        with pytest.raises(errors.InvalidPublicKey) as info:
            EncryptionPublicKey.from_bytes(good[:1184] + _le(u))
        assert info.value.code == "non-canonical-public-key"
    real = good[1184:]
    with pytest.raises(errors.InvalidPublicKey) as info:
        EncryptionPublicKey.from_bytes(good[:1184] + real[:31] + bytes([real[31] | 0x80]))
    assert info.value.code == "non-canonical-public-key"


# --- real keys are still accepted -----------------------------------------------------------


def test_random_keys_still_accepted() -> None:
    for _ in range(50):
        api = ApiPrivateKey.generate().public_key
        assert ApiPublicKey.from_bytes(api.raw).key_id == api.key_id
    for _ in range(10):
        signing = SigningPrivateKey.generate().public_key
        assert SigningPublicKey.from_bytes(signing.raw).key_id == signing.key_id
        encryption = EncryptionPrivateKey.generate().public_key
        assert EncryptionPublicKey.from_bytes(encryption.raw).key_id == encryption.key_id


def test_the_codes_are_invalid_public_key_codes() -> None:
    assert issubclass(errors.SmallOrderPublicKey, errors.InvalidPublicKey)
    assert issubclass(errors.NonCanonicalPublicKey, errors.InvalidPublicKey)
