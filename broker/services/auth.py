"""API authentication: short-lived, single-use EdDSA JWTs signed with a registered key.

Token rules: header `alg` EdDSA and `kid` = the key id of one of the caller's registered
API keys (admin keys for admins); claims `iss` = the key's owner, `aud` = this broker (one
string, not a list), `iat`, `exp` (after `iat`, at most `token_max_lifetime_s` after it) and a
unique `jti`. No name may repeat in the header or in the claims. A key that is revoked or past
its validity is refused from the next request on; a `jti` is accepted once. Times are judged by
the broker's clock; when a token or its key starts after the broker's "now", the answer says
so, so that a wrong clock is not mistaken for a wrong key.
"""

from __future__ import annotations

import binascii
import heapq
import json
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

import jwt
from jwt.utils import base64url_decode
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from msmt.core import canonical
from msmt.core.errors import MsmtError

from ..problems import Problem, forbidden, unauthorized
from ..settings import Settings
from ..store import queries
from ..store.db import transaction
from ..store.models import UsedToken
from .registry import ADMIN_PREFIX, Registry, RegistryCache, api_public_key

JTI_RE = re.compile(r"[A-Za-z0-9._~+/=-]{8,64}")


@dataclass(frozen=True)
class Caller:
    owner: str  # country code, or "admin:<name>"
    key_id: str
    body_sha256: str | None = None  # the `bh` claim of a bound token: the body must match it

    @property
    def is_admin(self) -> bool:
        return self.owner.startswith(ADMIN_PREFIX)


@dataclass(frozen=True)
class Target:
    """The request a token is presented with: a bound token names exactly this."""

    method: str
    path: str  # path and query as sent ("/v1/inbox?after=3"), undecoded
    # replays of this request are refused across broker processes, not only in this one
    # (admin routes and governance: repeating them could undo a later change)
    shared_replay_check: bool = False


class ReplayCache:
    """The `jti`s of bound tokens this process accepted, until they expire (at most the
    token lifetime plus leeway). A bound token can only repeat its own request, and every
    request it can be bound to without the shared check is one that is safe to repeat, so a
    replay to another broker process changes nothing; within this process it is refused."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._expiry: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def add(self, jti: str, expires_ms: int, now_ms: int) -> bool:
        """Record `jti`; False if it was already there."""
        with self._lock:
            while self._expiry and self._expiry[0][0] < now_ms:
                _, old = heapq.heappop(self._expiry)
                if self._seen.get(old, now_ms) < now_ms:
                    del self._seen[old]
            if jti in self._seen:
                return False
            self._seen[jti] = expires_ms
            heapq.heappush(self._expiry, (expires_ms, jti))
            return True

    def __len__(self) -> int:
        return len(self._seen)


class NeedsDatabase(Exception):
    """`authenticate(..., registry=..., may_write=False)`: this token's check writes to the
    database (a token not bound to its request, an admin's, or one whose replay check is shared
    between processes): authenticate it again with `may_write=True`, off the event loop."""


class _Repeated(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for name, value in pairs:
        if name in seen:
            raise _Repeated(name)
        seen[name] = value
    return seen


def _segment(text: str, what: str) -> dict[str, Any]:
    """One JSON object of a compact JWS, parsed with every name at most once."""
    try:
        value = json.loads(base64url_decode(text.encode("ascii")), object_pairs_hook=_no_repeats)
    except _Repeated as exc:
        raise unauthorized("invalid-token", f"the token's {what} repeats {exc.name!r}") from exc
    except (ValueError, binascii.Error, UnicodeError) as exc:
        code = "malformed-token" if what == "header" else "invalid-token"
        raise unauthorized(code, f"the token's {what} is not base64url JSON") from exc
    if not isinstance(value, dict):
        code = "malformed-token" if what == "header" else "invalid-token"
        raise unauthorized(code, f"the token's {what} is not a JSON object")
    return value


def _is_time(value: object) -> TypeGuard[int | float]:
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < 2**40


def _utc(ms: float) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):  # past year 9999
        return f"Unix time {ms / 1000:.0f}"


def _precheck(token: str, settings: Settings, now_ms: int) -> dict[str, Any]:
    """Checks on the token's shape and times that need no key: return its header."""
    parts = token.split(".")
    if len(parts) != 3:
        raise unauthorized("malformed-token", "the bearer token is not a JWT")
    header = _segment(parts[0], "header")
    claims = _segment(parts[1], "claims")
    if "aud" in claims and not isinstance(claims["aud"], str):
        raise unauthorized(
            "invalid-token", f"aud must be one string, this broker's identity ({settings.audience})"
        )
    iat, exp = claims.get("iat"), claims.get("exp")
    if not _is_time(iat):
        return header  # refused below, once the signature is known good
    if _is_time(exp) and exp <= iat:
        raise unauthorized("invalid-token", "the token's exp must come after its iat")
    if iat * 1000 > now_ms + settings.token_leeway_s * 1000:
        raise unauthorized(
            "invalid-token",
            f"the token was issued at {_utc(iat * 1000)} but the broker's clock says {_utc(now_ms)}: "
            "check both clocks",
        )
    return header


def replay_checked_here(token: str, target: Target | None, replays: ReplayCache | None) -> bool:
    """Whether the token's replay check may be this process's own (ReplayCache), not a row
    in the database: the token claims a binding to its request, and the route's replay check
    is not shared between processes. (What the claims say is verified after; admins' tokens,
    which always take the database, are known once the key is.)"""
    if target is None or replays is None or target.shared_replay_check:
        return False
    parts = token.split(".")
    if len(parts) != 3:
        return False  # refused the long way, with the code it has always had
    try:
        return "bh" in _segment(parts[1], "claims")
    except Problem:
        return False


def _plainly_well_formed(token: str, header: dict[str, Any]) -> bool:
    """Whether PyJWT's `get_unverified_header` would surely accept the token, so that it need
    not be asked (it reads every segment again, a character at a time in Python: a sixth of an
    authentication's CPU): each segment canonical unpadded base64url (checked in C), a string
    `kid`, and none of the header parameters PyJWT treats specially (`crit`, `b64`). Anything
    else is left to PyJWT, so a refusal keeps its code."""
    if not isinstance(header.get("kid"), str) or "crit" in header or "b64" in header:
        return False
    try:
        for segment in token.split("."):
            canonical.b64decode(segment, "token segment")
    except MsmtError:
        return False
    return True


BINDING_CLAIMS = ("htm", "htu", "bh")
B64URL_SHA256 = re.compile(r"[A-Za-z0-9_-]{43}")


def _binding(claims: dict[str, Any], target: Target | None) -> str | None:
    """Check a bound token against the request: its `bh` if bound, None if not bound."""
    present = [name for name in BINDING_CLAIMS if name in claims]
    if not present:
        return None
    if len(present) != len(BINDING_CLAIMS):
        raise unauthorized("invalid-token", "a bound token carries all of htm, htu and bh")
    htm, htu, bh = claims["htm"], claims["htu"], claims["bh"]
    if not (isinstance(htm, str) and isinstance(htu, str) and isinstance(bh, str)):
        raise unauthorized("invalid-token", "htm, htu and bh must be strings")
    if not B64URL_SHA256.fullmatch(bh):
        raise unauthorized("invalid-token", "bh must be the unpadded base64url SHA-256 of the body")
    if target is None:
        return bh
    if htm != target.method or htu != target.path:
        raise unauthorized(
            "token-binding",
            f"the token was minted for {htm} {htu[:200]}, not {target.method} {target.path[:200]}",
        )
    return bh


def authenticate(
    factory: sessionmaker[Session],
    registry_cache: RegistryCache,
    settings: Settings,
    token: str,
    now_ms: int,
    target: Target | None = None,
    replays: ReplayCache | None = None,
    *,
    registry: Registry | None = None,
    may_write: bool = True,
) -> Caller:
    """The caller a bearer token authenticates, or the Problem that refuses it. `registry`: the
    registry as of now, already read (RegistryCache.quick), else it is read here. Without
    `may_write`, raises NeedsDatabase before writing anything (the event loop's fast path:
    api/deps.py)."""
    header = _precheck(token, settings, now_ms)
    if not _plainly_well_formed(token, header):
        try:  # PyJWT's own reading decides, and its refusal is a malformed token
            jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthorized("malformed-token", "the bearer token is not a JWT") from exc
    if header.get("alg") != "EdDSA":
        raise unauthorized("bad-token-algorithm", "tokens must be signed with EdDSA (Ed25519)")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise unauthorized("unknown-key", "the token has no key id (kid)")

    if registry is None:
        registry = registry_cache.fresh(factory)
    record = registry.keys.get(kid)
    if (
        record is not None
        and record.kind in ("api", "admin")
        and record.valid_from_ms > now_ms
        and (record.revoked_ms is None or record.revoked_ms > now_ms)
    ):
        raise unauthorized(
            "key-not-yet-valid",
            f"the token's key is valid from {_utc(record.valid_from_ms)} but the broker's clock says "
            f"{_utc(now_ms)}: check both clocks",
        )
    if record is None or record.kind not in ("api", "admin") or not record.usable(now_ms):
        raise unauthorized("unknown-key", "the token's key is unknown, revoked or expired")
    owner = record.owner
    active = registry.owner_active(owner)
    public = api_public_key(record.raw)

    if not settings.audience:
        raise unauthorized(
            "wrong-audience",
            "this broker has no identity to check tokens against: its operator must set MSMT_AUDIENCE "
            "to the URL members reach it at",
        )
    try:
        claims = jwt.decode(
            token,
            key=public.ed_key,
            algorithms=["EdDSA"],
            audience=settings.audience,
            issuer=owner,
            # Times are checked below against the broker's clock, not the library's.
            options={
                "require": ["exp", "iat", "jti", "iss", "aud"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.ExpiredSignatureError as exc:
        raise unauthorized("expired-token", "the token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise unauthorized(
            "wrong-audience", f"the token is not for this broker ({settings.audience})"
        ) from exc
    except jwt.InvalidIssuerError as exc:
        raise unauthorized("wrong-issuer", "the token's issuer is not the owner of its key") from exc
    except jwt.PyJWTError as exc:
        raise unauthorized("invalid-token", f"the token is not valid: {exc}") from exc

    iat, exp, jti = claims["iat"], claims["exp"], claims["jti"]
    for value in (iat, exp):
        if not _is_time(value):
            raise unauthorized("invalid-token", "iat and exp must be Unix times in seconds")
    if exp <= iat:
        raise unauthorized("invalid-token", "the token's exp must come after its iat")
    if not isinstance(claims["aud"], str):
        raise unauthorized(
            "invalid-token", f"aud must be one string, this broker's identity ({settings.audience})"
        )
    leeway_ms = settings.token_leeway_s * 1000
    if exp * 1000 + leeway_ms <= now_ms:
        raise unauthorized("expired-token", "the token has expired")
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int | float) or nbf * 1000 > now_ms + leeway_ms):
        raise unauthorized("invalid-token", "the token is not valid yet (nbf)")
    if exp - iat > settings.token_max_lifetime_s:
        raise unauthorized("token-lifetime", f"tokens may live at most {settings.token_max_lifetime_s} s")
    if iat * 1000 > now_ms + leeway_ms:
        raise unauthorized(
            "invalid-token",
            f"the token was issued at {_utc(iat * 1000)} but the broker's clock says {_utc(now_ms)}: "
            "check both clocks",
        )
    if not isinstance(jti, str) or not JTI_RE.fullmatch(jti):
        raise unauthorized("invalid-token", "jti must be 8 to 64 characters of A-Z a-z 0-9 . _ ~ + / = -")
    if not active:
        raise forbidden("suspended", f"{owner} is suspended and may not use the broker")
    bh = _binding(claims, target)

    expires_ms = int((exp + settings.token_leeway_s) * 1000)
    cheap = (
        bh is not None
        and replays is not None
        and target is not None
        and not target.shared_replay_check
        and not owner.startswith(ADMIN_PREFIX)
    )
    if cheap:
        assert replays is not None
        if not replays.add(f"{kid}:{jti}", expires_ms, now_ms):
            raise unauthorized("replayed-token", "this token was already used; mint a new one per request")
        return Caller(owner, kid, bh)
    if not may_write:
        raise NeedsDatabase
    try:
        with transaction(factory) as session:
            session.add(UsedToken(jti=f"{kid}:{jti}", key_id=kid, expires_ms=expires_ms))
            if secrets.randbelow(100) == 0:  # expired ids can never be replayed: prune now and then
                queries.purge_used_tokens(session, now_ms)
    except IntegrityError as exc:
        raise unauthorized(
            "replayed-token", "this token was already used; mint a new one per request"
        ) from exc
    return Caller(owner, kid, bh)
