"""The HPKE vector in the product's own suite (tests/vectors/envelope-v1/hpke.json; protocol
sections 2.4 and 9): X-Wing (0x647A), HKDF-SHA256 (0x0001), AES-256-GCM (0x0002), base mode.
The published X-Wing vectors use other KDF/AEAD pairs; this one pins the suite MSMT uses."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import hpke

from msmt.core import EncryptionPrivateKey, parse

VECTORS = Path(__file__).parent / "envelope-v1"
DOC = json.loads((VECTORS / "hpke.json").read_text())


def test_the_vector_names_the_msmt_suite() -> None:
    assert (DOC["mode"], DOC["kem_id"], DOC["kdf_id"], DOC["aead_id"]) == (0, 0x647A, 0x0001, 0x0002)
    assert len(DOC["cases"]) >= 3


def test_every_case_opens_to_its_content_key() -> None:
    suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    for case in DOC["cases"]:
        key = EncryptionPrivateKey.from_seed(bytes.fromhex(case["encryption_seed"]))
        enc, ct = bytes.fromhex(case["enc"]), bytes.fromhex(case["ct"])
        assert (len(enc), len(ct)) == (1120, 48)  # Nenc, then the 32-byte key and its 16-byte tag
        opened = suite.decrypt(enc + ct, key.hpke_key, info=bytes.fromhex(case["info"]))
        assert opened.hex() == case["pt"] and len(opened) == 32


def test_the_cases_are_the_wraps_of_the_source_envelope() -> None:
    header = parse((VECTORS / DOC["source"]).read_bytes()).header
    wraps = {r.country: r.wrapped_key.hex() for r in header.recipients}
    assert {c["recipient"]: c["enc"] + c["ct"] for c in DOC["cases"]} == wraps
