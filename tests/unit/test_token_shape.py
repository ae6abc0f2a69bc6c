"""The authentication's shortcut past PyJWT's `get_unverified_header` (broker/services/auth.py,
`_plainly_well_formed`): it may only skip PyJWT where PyJWT would accept the token's shape,
so that every token PyJWT refuses is still refused as `malformed-token`."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from broker.problems import Problem
from broker.services.auth import _plainly_well_formed, _precheck, authenticate
from broker.settings import Settings
from msmt.agency import AgencyKeys
from msmt.auth import mint_token

KEYS = AgencyKeys.generate("USA")
SETTINGS = Settings(audience="https://broker.test")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token() -> str:
    return mint_token(KEYS.api, "USA", SETTINGS.audience, method="GET", target="/v1/inbox")


def _with_header(token: str, **changes: object) -> str:
    head, claims, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header.update(changes)
    return ".".join([_b64(json.dumps(header).encode()), claims, signature])


def _last_char_flipped(segment: str) -> str:
    """The same bytes, but with non-zero unused bits in the last character (non-canonical)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) | 1]


def _shapes() -> dict[str, str]:
    token = _token()
    # One signature in ~15 has no '-' or '_' (86 characters, 2 of 64 each): its standard-alphabet
    # form would be the very same text. Mint until it differs.
    while not {"-", "_"} & set(token.rsplit(".", 1)[1]):
        token = _token()
    head, claims, signature = token.split(".")
    assert len(signature) % 4 != 0  # 64 bytes: 86 characters, so the last one has unused bits
    return {
        "as minted": token,
        "padded signature": f"{head}.{claims}.{signature}==",
        "junk in the signature": f"{head}.{claims}.{signature[:-2]}!!",
        "non-canonical signature": f"{head}.{claims}.{_last_char_flipped(signature)}",
        "standard alphabet": f"{head}.{claims}.{signature.replace('-', '+').replace('_', '/')}",
        "kid not a string": _with_header(token, kid=7),
        "crit header": _with_header(token, crit=["exp"]),
        "b64 header": _with_header(token, b64=False),
    }


@pytest.mark.parametrize("name", list(_shapes()))
def test_the_shortcut_is_taken_only_where_pyjwt_accepts_the_shape(name: str) -> None:
    token = _shapes()[name]
    header = _precheck(token, SETTINGS, int(time.time() * 1000))
    try:
        jwt.get_unverified_header(token)
        accepted = True
    except jwt.PyJWTError:
        accepted = False
    if _plainly_well_formed(token, header):
        assert accepted, f"{name}: skipped PyJWT, which refuses it"
    if name == "as minted":
        assert _plainly_well_formed(token, header)  # the shortcut is the common case
    else:
        assert not _plainly_well_formed(token, header), name


@pytest.mark.parametrize("name", ["junk in the signature", "non-canonical signature", "standard alphabet"])
def test_a_shape_pyjwt_refuses_is_a_malformed_token_before_any_key_is_looked_up(name: str) -> None:
    """401 `malformed-token`, raised before the registry is read (no factory or cache is
    given: reaching them would fail otherwise)."""
    with pytest.raises(Problem) as refused:
        authenticate(None, None, SETTINGS, _shapes()[name], int(time.time() * 1000))  # type: ignore[arg-type]
    assert (refused.value.status, refused.value.code) == (401, "malformed-token")
