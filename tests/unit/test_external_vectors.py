"""Cross-checks against other implementations' vectors in ../shared/vectors/."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from msmt.core import EncryptionPrivateKey, SigningPrivateKey, SigningPublicKey, errors
from msmt.core.keys import MLDSA65_SIGNATURE_SIZE, composite_message

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
COPIES = Path(__file__).resolve().parents[1] / "vectors" / "external"
MERKLE = sorted(path.relative_to(COPIES).as_posix() for path in (COPIES / "merkle").rglob("*.json"))
NAMES = ["hpke-xwing.json", "composite-mldsa65-ed25519.json", *MERKLE]


def load(name: str) -> Any:
    return json.loads((COPIES / name).read_text())


@pytest.mark.parametrize("name", NAMES)
def test_copies_match_the_shared_vectors(name: str) -> None:
    shared = SHARED / name
    if not shared.exists():
        pytest.skip(f"no shared vectors folder at {SHARED} (the copies in {COPIES} are used)")
    assert (COPIES / name).read_bytes() == shared.read_bytes()


def test_merkle_copies_are_all_the_shared_merkle_vectors() -> None:
    if not (SHARED / "merkle").exists():
        pytest.skip(f"no shared vectors folder at {SHARED} (the copies in {COPIES} are used)")
    shared = sorted(path.relative_to(SHARED).as_posix() for path in (SHARED / "merkle").rglob("*.json"))
    assert shared == MERKLE


def test_xwing_public_key_from_seed() -> None:
    vectors = [v for v in load("hpke-xwing.json") if v["kem_id"] == 0x647A]
    assert vectors
    for vector in vectors:
        key = EncryptionPrivateKey.from_seed(bytes.fromhex(vector["skRm"]))
        assert key.public_key.raw.hex() == vector["pkRm"]


@pytest.fixture(scope="module")
def composite() -> dict[str, Any]:
    data = load("composite-mldsa65-ed25519.json")
    (test,) = [t for t in data["tests"] if t["tcId"] == "id-MLDSA65-Ed25519-SHA512"]
    return {
        "m": base64.b64decode(data["m"]),
        "ctx": base64.b64decode(data["ctx"]),
        "pk": base64.b64decode(test["pk"]),
        "sk": base64.b64decode(test["sk"]),
        "s": base64.b64decode(test["s"]),
        "sWithContext": base64.b64decode(test["sWithContext"]),
    }


def test_composite_vector_signatures_verify(composite: dict[str, Any]) -> None:
    public = SigningPublicKey.from_bytes(composite["pk"])
    public.verify(composite["s"], composite["m"], b"")
    public.verify(composite["sWithContext"], composite["m"], composite["ctx"])
    with pytest.raises(errors.BadSignature):
        public.verify(composite["s"], composite["m"], composite["ctx"])
    with pytest.raises(errors.BadSignature):
        public.verify(composite["sWithContext"], composite["m"] + b".", composite["ctx"])


def test_composite_private_key_matches_and_ed25519_half_is_identical(composite: dict[str, Any]) -> None:
    private = SigningPrivateKey.from_seed(composite["sk"])
    assert private.public_key.raw == composite["pk"]
    for ctx, expected in ((b"", composite["s"]), (composite["ctx"], composite["sWithContext"])):
        mine = private.sign(composite["m"], ctx)
        assert mine[MLDSA65_SIGNATURE_SIZE:] == expected[MLDSA65_SIGNATURE_SIZE:]
        private.public_key.verify(mine, composite["m"], ctx)


def test_ed25519_half_alone_checks_m_prime(composite: dict[str, Any]) -> None:
    ed = ed25519.Ed25519PublicKey.from_public_bytes(composite["pk"][1952:])
    ed.verify(composite["s"][MLDSA65_SIGNATURE_SIZE:], composite_message(composite["m"], b""))
