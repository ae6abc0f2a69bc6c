"""API tokens: short-lived, single-use EdDSA JWTs signed with the agency's API key."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from urllib.parse import urlsplit

import jwt

from .core import ApiPrivateKey

DEFAULT_LIFETIME_S = 120


DEFAULT_PORTS = {"http": 80, "https": 443}


def audience_of(url: str) -> str:
    """A broker's identity in tokens (`aud`): its base URL as members reach it, normalised
    (scheme and host in lower case, no default port, no trailing slash), so that a token made
    for one broker is refused by every other deployment."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    port = parts.port
    netloc = host if port is None or DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def body_hash(body: bytes) -> str:
    """The `bh` claim: unpadded base64url of the body's SHA-256."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()


def mint_token(
    key: ApiPrivateKey,
    issuer: str,
    audience: str,
    *,
    lifetime_s: int = DEFAULT_LIFETIME_S,
    now: float | None = None,
    method: str | None = None,
    target: str | None = None,
    body: bytes = b"",
) -> str:
    """A token for one request: `iss` is the country code (or "admin:<name>"), `kid` the key id.

    With `method` and `target` (path and query exactly as sent) the token is bound to that
    one request and its body (claims `htm`, `htu`, `bh`, docs/protocol.md): it is good for
    nothing else, so the broker need not record it in its database to refuse a replay."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, str | int] = {
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime_s,
        "jti": secrets.token_urlsafe(18),
    }
    if method is not None and target is not None:
        claims.update(htm=method.upper(), htu=target, bh=body_hash(body))
    return jwt.encode(claims, key.ed_key, algorithm="EdDSA", headers={"kid": key.key_id})
