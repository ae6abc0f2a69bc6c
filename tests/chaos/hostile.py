"""Hostile requests against a real broker process (issue 10): malformed and tampered
envelopes, malformed JSON, bad tokens, oversized bodies, wrong methods, path-traversal ids,
absurd query parameters, and the random requests of tests/integration/test_fuzz.py.

Every answer must be below 500, every error an RFC 9457 problem, and nothing may be written."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from msmt.auth import mint_token
from msmt.core import Markings, seal
from tests.integration.conftest import _KEYS, ADMIN_KEY, AUDIENCE, MEMBERS, bootstrap
from tests.integration.test_fuzz import ROUTES, fill

from .harness import (
    ACCEPTED,
    ENVELOPE,
    PROBLEM,
    Broker,
    Counts,
    count_rows,
    envelope,
    running,
    settle,
    submit,
)

ORIGINS = tuple(m for m in MEMBERS if m != "USA")  # USA receives the envelopes
STATE_TABLES = (
    "items",
    "deliveries",
    "countries",
    "keys",
    "agreements",
    "deny_rules",
    "policy_versions",
    "directory_entries",
    "governance_proposals",
    "admin_actions",
    "delivery_receipts",
    "log_entries",
)
MAX_ENVELOPE = 256 * 1024  # this broker's MSMT_MAX_ENVELOPE_BYTES: oversized bodies stay cheap
TRAVERSALS = [
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2e%2e",
    "..%5c..%5cwindows%5cwin.ini",
    "%252e%252e%252f",
    "....%2f%2f",
    "%00",
    "a%00b",
    "%ff%fe",
    "x" * 3000,
    "01890a5d-ac96-7000-8000-000000000000",
    "01890a5d",
    "01890A5D-AC96-7000-8000-000000000000",
    "%27%3B%20DROP%20TABLE%20items%3B--",
    "%E2%80%AE%E2%80%8B",
    "-1",
    "99999999999999999999999999",
    "1e400",
    "NaN",
]
WEIRD_QUERY_VALUES = [
    "-1",
    "0",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "99999999999999999999999",
    "",
    "x",
    "0x10",
    "1_0",
    " 5",
    "%00",
]
JSON_ROUTES = [
    "/v1/preflight",
    "/v1/preflight/explain",
    "/v1/inbox/ack",
    "/v1/inbox/receipts",
    "/v1/governance/proposals",
    "/v1/governance/proposals/01890a5d-ac96-7000-8000-000000000000/signatures",
]
GET_ROUTES = [
    "/v1/inbox",
    "/v1/directory",
    "/v1/directory/entries",
    "/v1/log/checkpoint",
    "/v1/log/proof/inclusion",
    "/v1/log/proof/consistency",
    "/v1/log/leaves/0",
    "/v1/governance/proposals",
    "/v1/admin/countries",
    "/v1/admin/actions",
]


@dataclass
class Request:
    kind: str
    method: str
    path: str  # path and query, exactly as sent
    body: bytes = b""
    content_type: str | None = None
    who: str | None = "KOR"  # whose token; None: the `auth` header as given
    auth: str | None = None
    bind: bool = True  # bind the token to method, target and body
    repeat: int = 1  # > 1: the very same request (same token) again: a replay


class Material:
    """Envelopes that are wrong in one way each, for every originator (so that the hostile
    requests come from every member, not one member's rate limit), sealed once."""

    def __init__(self) -> None:
        now = int(time.time() * 1000)
        self.valid: dict[str, bytes] = {}
        self.wrong: dict[str, dict[str, bytes]] = {}
        usa = [("USA", _KEYS["USA"].encryption.public_key)]
        markings = Markings.create("RESTRICTED", "GREEN", ["ALL"], topics=["maritime"])
        for origin in ORIGINS:
            other = "JPN" if origin != "JPN" else "KOR"

            def sealed(recipients: list[tuple[str, Any]], origin: str = origin, **kw: Any) -> bytes:
                return seal(
                    b"hostile",
                    content_type="text/plain",
                    markings=kw.pop("markings", markings),
                    recipients=recipients,
                    originator=origin,
                    signing_key=kw.pop("signing_key", _KEYS[origin].signing),
                    **kw,
                )

            self.valid[origin] = envelope(origin, ["USA"], b"valid, never sent as it is")
            self.wrong[origin] = {
                "stale": sealed(usa, created_ms=now - 8 * 24 * 3600 * 1000),
                "from-the-future": sealed(usa, created_ms=now + 24 * 3600 * 1000),
                "to-itself": sealed([(origin, _KEYS[origin].encryption.public_key)]),
                "signed-by-another-key": sealed(usa, signing_key=_KEYS[other].signing),
                "above-accreditation": sealed(
                    usa, markings=Markings.create("SECRET", "GREEN", ["ALL"], topics=["maritime"])
                ),
                "wrong-encryption-key": sealed([("USA", _KEYS[other].encryption.public_key)]),
                "expired": sealed(usa, created_ms=now - 60_000, expires_ms=now - 1000),
            }


def _jwt(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(value: Any) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}.{part(signature)}"


def _junk_json(rng: random.Random) -> bytes:
    choices = [
        b"{",
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'{"markings": ' + str(10**4000).encode() + b"}",
        b'{"seqs": [' + b",".join(str(rng.randint(-(2**70), 2**70)).encode() for _ in range(50)) + b"]}",
        b'{"seqs": "all"}',
        b'{"seqs": [1.5, null, true]}',
        b'{"receipts": [' + b'"' + b"A" * 5000 + b'"]}',
        b'{"entry": "!!!not base64!!!"}',
        b'{"entry": "' + base64.b64encode(rng.randbytes(3000)) + b'"}',
        b'{"markings": {"classification": "' + "\u202e".encode() * 100 + b'"}}',
        b'{"markings": {"classification": "TOP SECRET", "tlp": "RED", "releasable_to": ["*"]}}',
        b'{"recipient": "../../KOR", "markings": null}',
        b'{"signature": {"country": "KOR", "sig": "AAAA"}}',
        b"\xff\xfe\x00{}",
        b"null",
        b"[]",
        b'"string"',
        b'{"a": NaN, "b": Infinity}',
        json.dumps({"k" * 100: ["v" * 100] * 100}).encode(),
        rng.randbytes(rng.randint(0, 500)),
    ]
    return rng.choice(choices)


def _envelope_attack(rng: random.Random, material: Material) -> Request:
    origin = rng.choice(ORIGINS)
    valid = material.valid[origin]
    how = rng.randrange(7)
    if how == 0:
        body = rng.randbytes(rng.randint(0, 3000))
        kind = "envelope-random"
    elif how == 1:
        body = valid[: rng.randrange(len(valid))]
        kind = "envelope-truncated"
    elif how == 2:
        flipped = bytearray(valid)
        for _ in range(rng.randint(1, 3)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        body = bytes(flipped)
        kind = "envelope-bit-flip"
    elif how == 3:
        name = rng.choice(sorted(material.wrong[origin]))
        body = material.wrong[origin][name]
        kind = f"envelope-{name}"
    elif how == 4:
        body = material.valid[rng.choice([o for o in ORIGINS if o != origin])]
        kind = "envelope-from-another-originator"
    elif how == 5:
        body = valid + rng.randbytes(rng.randint(1, 100))
        kind = "envelope-trailing-bytes"
    else:
        return Request(
            "envelope-batch-junk",
            "POST",
            "/v1/items/batch",
            rng.randbytes(rng.randint(0, 2000)),
            "application/vnd.msmt.envelope-batch",
            who=origin,
        )
    content_type = rng.choice([ENVELOPE, ENVELOPE, "application/json", "text/plain", None])
    return Request(kind, "POST", "/v1/items", body, content_type, who=origin)


def _token_attack(rng: random.Random, material: Material) -> Request:
    path = rng.choice(GET_ROUTES)
    now = int(time.time())
    base_claims = {
        "iss": "KOR",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 60,
        "jti": f"j{rng.getrandbits(64)}",
    }
    kid = _KEYS["KOR"].api.key_id
    good = mint_token(_KEYS["KOR"].api, "KOR", AUDIENCE, method="GET", target=path)
    head, claims_part, sig = good.split(".")
    how = rng.randrange(16)
    if how == 0:
        auth = None
    elif how == 1:
        auth = "Bearer"
    elif how == 2:
        auth = f"Basic {base64.b64encode(b'admin:admin').decode()}"
    elif how == 3:
        auth = "Bearer " + base64.b64encode(rng.randbytes(rng.randint(1, 300))).decode()
    elif how == 4:
        auth = "Bearer " + _jwt({"alg": "none", "typ": "JWT", "kid": kid}, base_claims)
    elif how == 5:
        auth = "Bearer " + _jwt({"alg": "HS256", "kid": kid}, base_claims, rng.randbytes(32))
    elif how == 6:
        auth = "Bearer " + mint_token(
            _KEYS["KOR"].api, "KOR", AUDIENCE, method="GET", target=path, now=now - 3600
        )  # expired
    elif how == 7:
        auth = "Bearer " + mint_token(_KEYS["KOR"].api, "KOR", "another-broker", method="GET", target=path)
    elif how == 8:
        auth = "Bearer " + mint_token(_KEYS["JPN"].api, "KOR", AUDIENCE, method="GET", target=path)
    elif how == 9:
        auth = "Bearer " + mint_token(_KEYS["KOR"].api, "KOR", AUDIENCE, method="POST", target=path)
    elif how == 10:
        auth = "Bearer " + mint_token(_KEYS["KOR"].api, "KOR", AUDIENCE, method="GET", target="/v1/other")
    elif how == 11:
        auth = "Bearer " + mint_token(_KEYS["KOR"].api, "KOR", AUDIENCE, lifetime_s=86400 * 365)
    elif how == 12:
        auth = f"Bearer {head}.{claims_part}.{sig[::-1]}"  # a broken signature
    elif how == 13:
        auth = "Bearer " + "A" * rng.randint(1000, 6000)
    elif how == 14:
        auth = "Bearer " + mint_token(ADMIN_KEY, "admin:mallory", AUDIENCE, method="GET", target=path)
    else:  # the very same request twice: the second is a replay
        return Request("token-replay", "GET", path, who=rng.choice(ORIGINS), repeat=2)
    return Request(f"token-{how}", "GET", path, who=None, auth=auth)


def _oversized(rng: random.Random) -> Request:
    if rng.random() < 0.5:
        body = b'{"markings": "' + b"A" * (1024 * 1024 + rng.randint(1, 1000)) + b'"}'
        return Request("oversized-json", "POST", rng.choice(JSON_ROUTES), body, "application/json")
    body = rng.randbytes(MAX_ENVELOPE + rng.randint(1, 4096))
    return Request("oversized-envelope", "POST", "/v1/items", body, ENVELOPE)


def _wrong_method(rng: random.Random) -> Request:
    method, template = rng.choice(ROUTES)
    other = rng.choice(
        [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE") if m != method]
    )
    return Request("wrong-method", other, fill(template, ["KOR", "USA"]), b"{}", "application/json")


def _traversal(rng: random.Random) -> Request:
    bad = rng.choice(TRAVERSALS)
    template = rng.choice(
        [
            ("GET", "/v1/items/{}"),
            ("GET", "/v1/items/{}/status"),
            ("GET", "/v1/governance/proposals/{}"),
            ("GET", "/v1/log/leaves/{}"),
            ("GET", "/v1/admin/items/{}/explain"),
            ("PATCH", "/v1/admin/countries/{}"),
            ("POST", "/v1/admin/keys/{}/revoke"),
            ("PUT", "/v1/admin/agreements/{}/USA"),
            ("GET", "/v1/{}"),
            ("GET", "/{}"),
        ]
    )
    return Request("path-traversal", template[0], template[1].format(bad), b"{}", "application/json")


def _query(rng: random.Random) -> Request:
    path = rng.choice(
        [
            "/v1/inbox",
            "/v1/log/proof/inclusion",
            "/v1/log/proof/consistency",
            "/v1/directory/entries",
            "/v1/log/checkpoint",
        ]
    )
    names = ["after", "limit", "wait", "index", "size", "first", "second", "include", "proofs", "since"]
    parts = [f"{rng.choice(names)}={quote(rng.choice(WEIRD_QUERY_VALUES))}" for _ in range(rng.randint(1, 4))]
    return Request("query", "GET", f"{path}?{'&'.join(parts)}")


def _fuzz(rng: random.Random) -> Request:
    method, template = rng.choice(ROUTES)
    parts = [
        rng.choice(
            ["KOR", "*", "0" * 32, "x" * rng.randint(0, 40), quote(rng.randbytes(6).decode("latin-1"))]
        )
        for _ in range(2)
    ]
    body = rng.choice([rng.randbytes(rng.randint(0, 300)), _junk_json(rng)])
    who = rng.choice(["KOR", None] + (["admin:alice"] if method == "GET" else []))
    content_type = rng.choice(["application/json", ENVELOPE, "text/plain", None])
    return Request("fuzz", method, fill(template, parts), body, content_type, who=who)


def _json_attack(rng: random.Random) -> Request:
    return Request("json-malformed", "POST", rng.choice(JSON_ROUTES), _junk_json(rng), "application/json")


Generator = Callable[[random.Random, Material], Request]
GENERATORS: list[tuple[Generator, float]] = [
    (_envelope_attack, 0.22),
    (_token_attack, 0.18),
    (lambda rng, _: _json_attack(rng), 0.16),
    (lambda rng, _: _wrong_method(rng), 0.1),
    (lambda rng, _: _traversal(rng), 0.1),
    (lambda rng, _: _query(rng), 0.1),
    (lambda rng, _: _fuzz(rng), 0.13),
    (lambda rng, _: _oversized(rng), 0.01),
]


def request_for(index: int, material: Material) -> Request:
    """Hostile request number `index` (the same one for the same index, every run)."""
    rng = random.Random(index)
    generator = rng.choices([g for g, _ in GENERATORS], [w for _, w in GENERATORS])[0]
    req = generator(rng, material)
    if req.who == "KOR" and not req.kind.startswith(("envelope", "token")):
        req.who = rng.choice(ORIGINS)  # from any member: each has a rate limit of its own
    return req


@dataclass
class Answer:
    kind: str
    status: int
    problem_ok: bool
    detail: str = ""
    code: str = ""


def send(http: httpx.Client, base: str, req: Request) -> list[Answer]:
    headers: dict[str, str] = {}
    if req.content_type:
        headers["Content-Type"] = req.content_type
    if req.who is not None:
        key = ADMIN_KEY if req.who.startswith("admin:") else _KEYS[req.who].api
        token = (
            mint_token(key, req.who, AUDIENCE, method=req.method, target=req.path, body=req.body)
            if req.bind
            else mint_token(key, req.who, AUDIENCE)
        )
        headers["Authorization"] = f"Bearer {token}"
    elif req.auth is not None:
        headers["Authorization"] = req.auth
    answers = []
    for _ in range(req.repeat):
        url = httpx.URL(base).copy_with(raw_path=req.path.encode("ascii"))
        try:
            r = http.request(req.method, url, content=req.body or None, headers=headers, timeout=60)
        except httpx.TransportError as exc:
            answers.append(Answer(req.kind, 0, False, f"{type(exc).__name__}: {exc}"))
            continue
        ok = True
        detail = code = ""
        if r.status_code >= 400:
            ok = r.headers.get("content-type", "").startswith(PROBLEM)
            if ok and req.method != "HEAD":
                try:
                    problem = r.json()
                    code = str(problem.get("type", "")).rsplit(":", 1)[-1]
                    ok = (
                        str(problem.get("type", "")).startswith("urn:msmt:problem:")
                        and problem.get("status") == r.status_code
                    )
                except ValueError:
                    ok = False
            if not ok:
                detail = f"{req.method} {req.path[:120]}: {r.status_code} {r.headers.get('content-type')} {r.text[:200]}"
        answers.append(Answer(req.kind, r.status_code, ok, detail, code))
    return answers


def state(url: str) -> dict[str, int]:
    return {table: count_rows(url, table) for table in STATE_TABLES}


def hostile_requests(tmp: Path, counts: Counts, threads: int = 6) -> dict[str, Any]:
    url = f"sqlite:///{tmp / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    broker = Broker(url, tmp / "broker.log", max_envelope_bytes=str(MAX_ENVELOPE), inbox_max_wait_s="0.5")
    material = Material()
    answers: list[Answer] = []
    lock = threading.Lock()
    next_index = iter(range(counts.hostile))
    with running(broker):
        settle(url)  # the founding entries are in the log: from here on nothing may change
        before = state(url)
        started = time.monotonic()

        def worker() -> None:
            with httpx.Client() as http:
                while True:
                    with lock:
                        index = next(next_index, None)
                    if index is None:
                        return
                    got = send(http, broker.base, request_for(index, material))
                    with lock:
                        answers.extend(got)

        workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=3600)
        elapsed = time.monotonic() - started
        after = state(url)
        with httpx.Client() as http:  # and the broker still works for a real submission
            still_works = submit(http, broker.base, "KOR", envelope("KOR", ["USA"], b"after")).status
        alive = broker.proc is not None and broker.proc.poll() is None
        log_text = broker.log_text()

    by_status = Counter(a.status for a in answers)
    by_kind = Counter(a.kind.split("-")[0] for a in answers)
    writes = [a for a in answers if a.status in ACCEPTED and a.kind.startswith("envelope")]
    bad = [a.detail for a in answers if not a.problem_ok]
    return {
        "requests": counts.hostile,
        "answers": len(answers),
        "per_s": round(len(answers) / elapsed, 1),
        "statuses": dict(sorted(by_status.items())),
        "kinds": dict(sorted(by_kind.items())),
        "rate_limited": sum(a.code == "rate-limited" for a in answers),
        "5xx": sum(n for s, n in by_status.items() if s >= 500),
        "no_answer": by_status.get(0, 0),
        "not_a_problem": len(bad),
        "not_a_problem_examples": bad[:3],
        "envelopes_accepted": len(writes),
        "state_changed": {t: (before[t], after[t]) for t in STATE_TABLES if before[t] != after[t]},
        "submit_after": still_works,
        "broker_alive": alive,
        "tracebacks": log_text.count("Traceback"),
    }
