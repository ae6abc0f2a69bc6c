"""API tokens: short-lived, single-use EdDSA JWTs signed with the agency's API key."""

from __future__ import annotations

import secrets
import time

import jwt

from .core import ApiPrivateKey

DEFAULT_LIFETIME_S = 120


def mint_token(
    key: ApiPrivateKey,
    issuer: str,
    audience: str,
    *,
    lifetime_s: int = DEFAULT_LIFETIME_S,
    now: float | None = None,
) -> str:
    """A token for one request: `iss` is the country code (or "admin:<name>"), `kid` the key id."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime_s,
        "jti": secrets.token_urlsafe(18),
    }
    return jwt.encode(claims, key.ed_key, algorithm="EdDSA", headers={"kid": key.key_id})
