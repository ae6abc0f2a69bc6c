"""The gateway's configuration file (TOML) and its users' credentials.

    broker_url = "https://broker.example:8443"
    keys = "/var/lib/msmt-gateway/keys"          # the agency's key folder (`msmt keys init`)
    trust = "/var/lib/msmt-gateway/trust"        # the pinned root (default: <keys>/trust)
    database_url = "sqlite:////var/lib/msmt-gateway/gateway.db"
    listen = "127.0.0.1:8600"
    # audience = "https://broker.example:8443"  # only if the broker's MSMT_AUDIENCE is not its URL
    keep_withdrawn = false                       # true: keep withdrawn TLP:RED items' plaintext

    [users]                                      # HTTP Basic; `msmt-gateway hash-password`
    analyst = "scrypt$16384$8$1$<salt>$<hash>"

    [tokens]                                     # API tokens (Authorization: Bearer/Token)
    opencti = "sha256$<hex of sha256(token)>"

    [send.partners]                              # a writable TAXII collection: what is POSTed
    classification = "RESTRICTED"                # to it is sealed and sent under these markings
    tlp = "AMBER"                                # or "bundle": its strictest object's TLP
    releasable_to = ["ALL"]
    topics = ["cyber"]
    # caveats = ["ORCON"]
    # recipients = ["USA", "JPN"]                # default: every partner the markings allow
    writers = ["analyst"]                        # who may POST (users or token names)

Passwords are stored as scrypt hashes (hashlib.scrypt, per-user salt), API tokens as SHA-256
digests (they are random and long); both are compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import MsmtError
from ..core.markings import TLP_LEVELS, Markings
from ..errors import ClientError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
DEFAULT_LISTEN = "127.0.0.1:8600"


class ConfigError(ClientError):
    code = "gateway-config"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    maxmem = 256 * n * r * p + 32 * 1024 * 1024  # room above the 128*N*r*p scrypt needs
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=32)


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def check_password_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ConfigError("a user's password must be 'scrypt$N$r$p$salt$hash' (msmt-gateway hash-password)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError as exc:
        raise ConfigError(f"a user's password hash is malformed: {exc}") from exc
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or len(salt) < 8 or len(digest) != 32:
        raise ConfigError("a user's password hash has unusable scrypt parameters")
    return n, r, p, salt, digest


def verify_password(stored: str, password: str) -> bool:
    n, r, p, salt, digest = check_password_hash(stored)
    candidate = _scrypt(password, salt, n, r, p)
    return hmac.compare_digest(candidate, digest)


def hash_token(token: str) -> str:
    return "sha256$" + hashlib.sha256(token.encode()).hexdigest()


class Credentials:
    """Who may read the gateway's TAXII server."""

    def __init__(self, users: dict[str, str] | None = None, tokens: dict[str, str] | None = None) -> None:
        self.users = dict(users or {})  # name -> scrypt hash
        self.tokens = dict(tokens or {})  # name -> sha256$hex
        for stored in self.users.values():
            check_password_hash(stored)
        for stored in self.tokens.values():
            if not stored.startswith("sha256$") or len(stored) != 7 + 64:
                raise ConfigError("an API token must be given as 'sha256$<64 hex digits>' (its digest)")
        # an unknown user is checked against this, so a wrong name costs as long as a wrong password
        n = check_password_hash(next(iter(self.users.values())))[0] if self.users else 2
        self._dummy = hash_password(secrets.token_hex(8), n=n)

    def basic(self, user: str, password: str) -> str | None:
        """The user's name when the password is theirs, else None (constant time per guess)."""
        stored = self.users.get(user)
        ok = verify_password(stored if stored is not None else self._dummy, password)
        return user if ok and stored is not None else None

    def token(self, token: str) -> str | None:
        """The token's name when it is one of ours, else None (every digest is compared)."""
        candidate = hash_token(token).encode()
        found = None
        for name, stored in self.tokens.items():
            if hmac.compare_digest(candidate, stored.encode()):
                found = name
        return found


BUNDLE_TLP = "bundle"  # a send profile's tlp: the strictest TLP the bundle's objects carry
PROFILE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class SendProfile:
    """A writable TAXII collection: objects POSTed to it are sealed under these markings and
    sent to `recipients` (None: every partner the markings allow, as `msmt submit` does)."""

    name: str
    classification: str
    tlp: str  # a TLP 2.0 level, or BUNDLE_TLP
    releasable_to: tuple[str, ...]
    caveats: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    recipients: tuple[str, ...] | None = None
    writers: frozenset[str] = frozenset()

    def markings(self, tlp: str) -> Markings:
        return Markings.create(self.classification, tlp, self.releasable_to, self.caveats, self.topics)

    @classmethod
    def from_dict(cls, name: str, data: Any) -> SendProfile:
        where = f"[send.{name}]"
        if not PROFILE_RE.fullmatch(name):
            raise ConfigError(f"{where}: a send profile's name must be lower-case letters, digits, - or _")
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a table")
        known = {"classification", "tlp", "releasable_to", "caveats", "topics", "recipients", "writers"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{where}: unknown settings {sorted(unknown)}")

        def strings(key: str, default: list[str] | None = None) -> list[str]:
            value = data.get(key, default)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key} must be a list of strings")
            return value

        tlp = data.get("tlp", BUNDLE_TLP)
        if tlp != BUNDLE_TLP and tlp not in TLP_LEVELS:
            raise ConfigError(f"{where}: tlp must be one of {', '.join(TLP_LEVELS)} or {BUNDLE_TLP!r}")
        writers = strings("writers", [])
        if not writers:
            raise ConfigError(
                f"{where}: name its writers (users or token names): POSTing to it signs items as this agency"
            )
        profile = cls(
            name=name,
            classification=str(data.get("classification", "")),
            tlp=str(tlp),
            releasable_to=tuple(v.upper() for v in strings("releasable_to")),
            caveats=tuple(strings("caveats", [])),
            topics=tuple(strings("topics", [])),
            recipients=tuple(v.upper() for v in strings("recipients")) if "recipients" in data else None,
            writers=frozenset(writers),
        )
        try:  # the markings must be well formed, whatever TLP the bundle brings
            profile.markings("RED" if tlp == BUNDLE_TLP else str(tlp))
        except MsmtError as exc:
            raise ConfigError(f"{where}: {exc.detail}") from exc
        if tlp == "RED" and "ALL" in profile.releasable_to:
            raise ConfigError(f"{where}: a TLP:RED item cannot be releasable to ALL: name its recipients")
        if profile.recipients is not None and not profile.recipients:
            raise ConfigError(f"{where}: recipients, when given, must name at least one partner")
        return profile


@dataclass(frozen=True)
class GatewayConfig:
    broker_url: str
    keys: Path
    trust: Path
    database_url: str
    host: str
    port: int
    audience: str | None  # None: the broker URL (msmt.auth.audience_of), as the broker expects
    credentials: Credentials
    title: str = "MSMT agency gateway"
    keep_withdrawn: bool = False  # keep the plaintext of TLP:RED items their originator withdraws
    send: tuple[SendProfile, ...] = ()  # writable TAXII collections

    @classmethod
    def load(cls, path: Path) -> GatewayConfig:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the gateway configuration {path}: {exc}") from exc
        return cls.from_dict(data, base=path.parent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path = Path(".")) -> GatewayConfig:
        known = {
            "broker_url",
            "keys",
            "trust",
            "database_url",
            "listen",
            "audience",
            "users",
            "tokens",
            "title",
            "keep_withdrawn",
            "send",
        }
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown settings in the gateway configuration: {sorted(unknown)}")
        for required in ("broker_url", "keys"):
            if not isinstance(data.get(required), str):
                raise ConfigError(f"the gateway configuration needs {required!r}")
        keys = base / str(data["keys"])
        host, _, port = str(data.get("listen", DEFAULT_LISTEN)).rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"listen must be 'host:port', not {data.get('listen')!r}")
        keep_withdrawn = data.get("keep_withdrawn", False)
        if not isinstance(keep_withdrawn, bool):
            raise ConfigError("keep_withdrawn must be true or false")
        send = data.get("send", {})
        if not isinstance(send, dict):
            raise ConfigError("[send] must hold one table per send profile: [send.NAME]")
        profiles = tuple(SendProfile.from_dict(str(name), value) for name, value in sorted(send.items()))
        users, tokens = data.get("users", {}), data.get("tokens", {})
        if not isinstance(users, dict) or not isinstance(tokens, dict):
            raise ConfigError("[users] and [tokens] must be tables of name = hash")
        if not users and not tokens:
            raise ConfigError(
                "the gateway configuration names no [users] and no [tokens]: nobody could read it"
            )
        return cls(
            broker_url=str(data["broker_url"]),
            keys=keys,
            trust=base / str(data["trust"]) if "trust" in data else keys / "trust",
            database_url=str(data.get("database_url", f"sqlite:///{base / 'gateway.db'}")),
            host=host.strip("[]"),
            port=int(port),
            audience=str(data["audience"]) if "audience" in data else None,
            credentials=Credentials(
                {str(k): str(v) for k, v in users.items()}, {str(k): str(v) for k, v in tokens.items()}
            ),
            title=str(data.get("title", "MSMT agency gateway")),
            keep_withdrawn=keep_withdrawn,
            send=profiles,
        )
