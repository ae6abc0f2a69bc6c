"""Bad input gets an RFC 9457 problem with its specific type: never a 5xx, never a partial write.

Every case runs on SQLite and PostgreSQL and checks the status, the problem media type, the
`type`, and that nothing the broker stores (items, deliveries, log entries, registry, admin
record) changed.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from broker.app import create_app
from broker.settings import Settings
from broker.store.db import make_engine
from msmt.core import (
    ApiPrivateKey,
    EncryptionPrivateKey,
    KeyKind,
    Markings,
    SigningPrivateKey,
    canonical,
    parse,
    public_key_document,
    seal,
)
from msmt.core import governance as gov
from msmt.core.envelope import SIGNATURE_SIZE

from .conftest import AUDIENCE, World

ADMIN = "admin:alice"
PROBLEM = "urn:msmt:problem:"
ENVELOPE = "application/vnd.msmt.envelope"
DAY_MS = 24 * 3600 * 1000
MARKINGS = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])


# --- helpers ------------------------------------------------------------------------------------


def snapshot(world: World) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a request could change, except the single-use token record."""
    world.settle()  # background integration is not a change made by the request
    queries = {
        "items": "SELECT item_id, envelope_sha256 FROM items",
        "deliveries": "SELECT item_id, recipient, seq, state, acked_ms FROM deliveries",
        "log_entries": "SELECT log_index, ref FROM log_entries",
        "countries": "SELECT code, name, status, accreditation FROM countries",
        "group_members": "SELECT group_name, country FROM group_members",
        "keys": "SELECT key_id, owner, kind, revoked_ms FROM keys",
        "agreements": "SELECT originator, recipient, ceiling, topics FROM agreements",
        "admin_actions": "SELECT id, action, target FROM admin_actions",
        "inbox_counters": "SELECT recipient, last_seq FROM inbox_counters",
        "registry_state": "SELECT id, version FROM registry_state",
        "directory_entries": "SELECT seq, entry_hash FROM directory_entries",
        "governance_proposals": "SELECT id, state, signatures FROM governance_proposals",
    }
    engine = make_engine(world.url)
    try:
        with engine.connect() as conn:
            return {
                t: sorted((tuple(r) for r in conn.execute(text(q))), key=repr) for t, q in queries.items()
            }
    finally:
        engine.dispose()


def counts(world: World) -> tuple[int, int, int]:
    return world.count("items"), world.count("deliveries"), world.count("log_entries")


def assert_problem(response: httpx.Response, status: int, code: str | tuple[str, ...]) -> dict[str, Any]:
    """An RFC 9457 problem with this status and type (or one of these types)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body: dict[str, Any] = response.json()
    codes = (code,) if isinstance(code, str) else code
    assert body["type"] in {PROBLEM + c for c in codes}, body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@contextmanager
def unchanged(world: World) -> Iterator[None]:
    """The block's requests leave the database exactly as it was."""
    before, before_counts = snapshot(world), counts(world)
    yield
    assert counts(world) == before_counts
    assert snapshot(world) == before


def submit(world: World, data: bytes, who: str = "KOR") -> httpx.Response:
    return world.submit(who, data)


def rebuild(data: bytes, *, header: bytes | None = None, version: int | None = None) -> bytes:
    """The envelope with its header bytes (and so its length prefix) or its version replaced."""
    env = parse(data)
    header_bytes = env.header_bytes if header is None else header
    prefix = struct.pack(">4sBI", b"MSMT", 1 if version is None else version, len(header_bytes))
    return prefix + header_bytes + env.signature + env.ciphertext


def header_dict(data: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(parse(data).header_bytes)
    return value


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def signature_offset(data: bytes) -> int:
    return 9 + len(parse(data).header_bytes)


# --- malformed envelopes ---------------------------------------------------------------------------

Mutation = Callable[[bytes], bytes]


def _random_bytes(_: bytes) -> bytes:
    noise = hashlib.shake_256(b"msmt bad input").digest(4096)
    assert not noise.startswith(b"MSMT")
    return noise


def _canonical_header(change: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(data: bytes) -> bytes:
        header = header_dict(data)
        change(header)
        return rebuild(data, header=canonical.encode(header))

    return mutate


def _downgrade_tlp(header: dict[str, Any]) -> None:
    header["markings"]["tlp"] = "GREEN"


def _add_field(header: dict[str, Any]) -> None:
    header["extra"] = 1


def _drop_recipient(header: dict[str, Any]) -> None:
    header["recipients"] = header["recipients"][:1]


ENVELOPE_CASES: dict[str, tuple[Mutation, int, str]] = {
    "empty body": (lambda d: b"", 422, "malformed-envelope"),
    "random bytes": (_random_bytes, 422, "malformed-envelope"),
    "JSON instead of an envelope": (lambda d: b'{"hello": "world"}', 422, "malformed-envelope"),
    "bad magic": (lambda d: b"MSMX" + d[4:], 422, "malformed-envelope"),
    "prefix only": (lambda d: d[:9], 422, "malformed-envelope"),
    "truncated in the prefix": (lambda d: d[:7], 422, "malformed-envelope"),
    "truncated in the header": (lambda d: d[:200], 422, "malformed-envelope"),
    "truncated in the signature": (lambda d: d[: signature_offset(d) + 100], 422, "malformed-envelope"),
    "truncated in the ciphertext": (lambda d: d[:-1], 422, "payload-mismatch"),
    "bytes appended": (lambda d: d + b"\x00", 422, "payload-mismatch"),
    "unsupported version": (lambda d: rebuild(d, version=2), 422, "unsupported-version"),
    "header length beyond the limit": (
        lambda d: struct.pack(">4sBI", b"MSMT", 1, 2**31) + d[9:],
        413,
        "oversized-field",
    ),
    "header not JSON": (lambda d: rebuild(d, header=b"not json"), 422, "malformed-envelope"),
    "header a JSON array": (lambda d: rebuild(d, header=b"[]"), 422, "invalid-header"),
    "header not canonical": (
        lambda d: rebuild(d, header=json.dumps(header_dict(d), indent=1).encode()),
        422,
        "non-canonical-encoding",
    ),
    "header with a duplicate key": (
        lambda d: rebuild(d, header=parse(d).header_bytes[:-1] + b',"version":1}'),
        422,
        "duplicate-key",
    ),
    "header with an unknown field": (_canonical_header(_add_field), 422, "invalid-header"),
    "markings downgraded after signing": (_canonical_header(_downgrade_tlp), 422, "bad-signature"),
    "recipient removed after signing": (_canonical_header(_drop_recipient), 422, "bad-signature"),
    "signature tampered": (lambda d: flip(d, signature_offset(d) + 5), 422, "bad-signature"),
    "signature's Ed25519 half tampered": (
        lambda d: flip(d, signature_offset(d) + SIGNATURE_SIZE - 10),
        422,
        "bad-signature",
    ),
    "ciphertext flipped": (lambda d: flip(d, len(d) - 1), 422, "payload-mismatch"),
    "ciphertext flipped at its first byte": (
        lambda d: flip(d, signature_offset(d) + SIGNATURE_SIZE),
        422,
        "payload-mismatch",
    ),
}


@pytest.mark.parametrize("case", ENVELOPE_CASES)
def test_malformed_envelopes_are_refused_with_their_type(world: World, case: str) -> None:
    mutate, status, code = ENVELOPE_CASES[case]
    good = world.seal("KOR", ["JPN", "USA"], b"a report")
    bad = mutate(good)
    assert bad != good
    with unchanged(world):
        assert_problem(submit(world, bad), status, code)
    # the untouched envelope is still accepted: the refusal was about the damage
    assert submit(world, good).status_code == 201


# --- envelopes that parse but may not be accepted -----------------------------------------------------


def test_an_envelope_whose_originator_is_not_the_caller(world: World) -> None:
    data = world.seal("KOR", ["USA"])
    with unchanged(world):
        for caller in ("USA", "NZL"):
            assert_problem(submit(world, data, who=caller), 403, "originator-mismatch")


def test_an_envelope_signed_with_an_unregistered_key(world: World) -> None:
    data = seal(
        b"report",
        content_type="text/plain",
        markings=MARKINGS,
        recipients=[("USA", world.members["USA"].encryption.public_key)],
        originator="KOR",
        signing_key=SigningPrivateKey.generate(),
        created_ms=world.clock.ms,
    )
    with unchanged(world):
        assert_problem(submit(world, data), 403, "unknown-signing-key")


def test_an_envelope_signed_with_another_countrys_key(world: World) -> None:
    data = seal(
        b"report",
        content_type="text/plain",
        markings=MARKINGS,
        recipients=[("USA", world.members["USA"].encryption.public_key)],
        originator="KOR",
        signing_key=world.members["JPN"].signing,
        created_ms=world.clock.ms,
    )
    with unchanged(world):
        assert_problem(submit(world, data), 403, "unknown-signing-key")


def _rules(problem: dict[str, Any], country: str) -> set[str]:
    return {denial["rule"] for denial in problem["recipients"][country]}


def test_sealed_to_an_unknown_encryption_key_of_a_recipient(world: World) -> None:
    stranger = EncryptionPrivateKey.generate()
    data = seal(
        b"report",
        content_type="text/plain",
        markings=MARKINGS,
        recipients=[("JPN", world.members["JPN"].encryption.public_key), ("USA", stranger.public_key)],
        originator="KOR",
        signing_key=world.members["KOR"].signing,
        created_ms=world.clock.ms,
    )
    with unchanged(world):
        problem = assert_problem(submit(world, data), 403, "recipients-refused")
    assert set(problem["recipients"]) == {"USA"}  # JPN was fine, and still got nothing
    assert _rules(problem, "USA") == {"stale-encryption-key"}


def test_sealed_to_a_recipients_previous_encryption_key(world: World) -> None:
    rotated = EncryptionPrivateKey.generate()
    world.rotate_own("USA", rotated.public_key)
    stale = world.seal("KOR", ["USA"])  # the fixture's (now previous) USA key
    with unchanged(world):
        problem = assert_problem(submit(world, stale), 403, "recipients-refused")
    assert _rules(problem, "USA") == {"stale-encryption-key"}
    current = seal(
        b"report",
        content_type="text/plain",
        markings=MARKINGS,
        recipients=[("USA", rotated.public_key)],
        originator="KOR",
        signing_key=world.members["KOR"].signing,
        created_ms=world.clock.ms,
    )
    assert submit(world, current).status_code == 201


def test_sealed_to_a_revoked_encryption_key(world: World) -> None:
    world.revoke_own("USA", world.members["USA"].encryption.key_id)
    with unchanged(world):
        problem = assert_problem(submit(world, world.seal("KOR", ["USA"])), 403, "recipients-refused")
    assert _rules(problem, "USA") == {"no-encryption-key"}


def test_an_unknown_recipient_country(world: World) -> None:
    data = seal(
        b"report",
        content_type="text/plain",
        markings=MARKINGS,
        recipients=[
            ("SWE", EncryptionPrivateKey.generate().public_key),
            ("USA", world.members["USA"].encryption.public_key),
        ],
        originator="KOR",
        signing_key=world.members["KOR"].signing,
        created_ms=world.clock.ms,
    )
    with unchanged(world):
        problem = assert_problem(submit(world, data), 403, "recipients-refused")
    assert set(problem["recipients"]) == {"SWE"}
    assert "recipient-not-active" in _rules(problem, "SWE")


def test_a_suspended_recipient(world: World) -> None:
    world.suspend("USA")
    with unchanged(world):
        problem = assert_problem(submit(world, world.seal("KOR", ["JPN", "USA"])), 403, "recipients-refused")
    assert set(problem["recipients"]) == {"USA"}
    assert "recipient-not-active" in _rules(problem, "USA")


def test_the_originator_as_its_own_recipient(world: World) -> None:
    with unchanged(world):
        problem = assert_problem(submit(world, world.seal("KOR", ["KOR", "USA"])), 403, "recipients-refused")
    assert _rules(problem, "KOR") == {"recipient-is-originator"}


FRESHNESS: dict[str, Callable[[int], dict[str, int]]] = {
    "created 8 days ago": lambda now: {"created_ms": now - 8 * DAY_MS},
    "created 7 days and 1 s ago": lambda now: {"created_ms": now - 7 * DAY_MS - 1000},
    "created 301 s in the future": lambda now: {"created_ms": now + 301_000},
    "created a year in the future": lambda now: {"created_ms": now + 365 * DAY_MS},
    "already expired": lambda now: {"created_ms": now - 2000, "expires_ms": now - 1000},
    "expiring right now": lambda now: {"created_ms": now - 2000, "expires_ms": now},
}


@pytest.mark.parametrize("case", FRESHNESS)
def test_stale_or_future_envelopes(world: World, case: str) -> None:
    data = world.seal("KOR", ["USA"], **FRESHNESS[case](world.clock.ms))
    with unchanged(world):
        assert_problem(submit(world, data), 422, "stale-envelope")


@pytest.mark.parametrize("offset_ms", [-7 * DAY_MS + 60_000, 299_000])
def test_envelopes_just_inside_the_freshness_window_are_accepted(world: World, offset_ms: int) -> None:
    r = submit(world, world.seal("KOR", ["USA"], created_ms=world.clock.ms + offset_ms))
    assert r.status_code == 201, r.text


def test_an_item_id_reused_with_other_bytes(world: World) -> None:
    first = world.seal("KOR", ["USA"], b"first")
    assert submit(world, first).status_code == 201
    item_id = parse(first).header.item_id
    with unchanged(world):
        assert_problem(
            submit(world, world.seal("KOR", ["USA"], b"second", item_id=item_id)), 409, "item-id-conflict"
        )


# --- size limits ------------------------------------------------------------------------------------------


@contextmanager
def broker(world: World, **settings: Any) -> Iterator[TestClient]:
    """A second broker on the same database, with other settings."""
    app = create_app(
        Settings(database_url=world.url, audience=AUDIENCE, inbox_poll_interval_s=0.05, **settings),
        clock=world.clock,
    )
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client
    finally:
        app.state.engine.dispose()


def test_an_envelope_larger_than_the_limit(world: World) -> None:
    fits = world.seal("KOR", ["USA"], b"x" * 16)
    too_big = world.seal("KOR", ["USA"], b"x" * 17)
    assert len(too_big) == len(fits) + 1
    with broker(world, max_envelope_bytes=len(fits)) as client:
        headers = {"Content-Type": ENVELOPE}
        with unchanged(world):
            r = client.post("/v1/items", content=too_big, headers={**headers, **world.auth("KOR")})
            assert_problem(r, 413, "body-too-large")

            def chunks() -> Iterator[bytes]:  # no Content-Length: the stream itself is counted
                for start in range(0, len(too_big), 1000):
                    yield too_big[start : start + 1000]

            r = client.post("/v1/items", content=chunks(), headers={**headers, **world.auth("KOR")})
            assert "content-length" not in r.request.headers
            assert_problem(r, 413, "body-too-large")
        r = client.post("/v1/items", content=fits, headers={**headers, **world.auth("KOR")})
        assert r.status_code == 201, r.text


def test_a_json_body_larger_than_the_limit(world: World) -> None:
    """`max_json_bytes` bounds every JSON request body, as `max_envelope_bytes` bounds envelopes."""
    padding = " " * 2048
    with broker(world, max_json_bytes=1024) as client, unchanged(world):
        r = client.post(
            "/v1/inbox/ack",
            content=b'{"seqs": [1]' + padding.encode() + b"}",
            headers={"Content-Type": "application/json", **world.auth("USA")},
        )
        assert_problem(r, 413, "body-too-large")
        r = client.post(
            "/v1/governance/proposals",
            content=json.dumps({"entry": "A" * 2048}).encode() + padding.encode(),
            headers={"Content-Type": "application/json", **world.auth(ADMIN)},
        )
        assert_problem(r, 413, "body-too-large")


# --- query and path parameters ----------------------------------------------------------------------------

BAD_QUERIES: list[tuple[str, str, dict[str, Any]]] = [
    ("USA", "/v1/inbox", {"limit": 0}),
    ("USA", "/v1/inbox", {"limit": -5}),
    ("USA", "/v1/inbox", {"limit": 1001}),
    ("USA", "/v1/inbox", {"limit": "ten"}),
    ("USA", "/v1/inbox", {"limit": "1.5"}),
    ("USA", "/v1/inbox", {"wait": 99}),
    ("USA", "/v1/inbox", {"wait": 30.5}),
    ("USA", "/v1/inbox", {"wait": -1}),
    ("USA", "/v1/inbox", {"wait": "nan"}),
    ("USA", "/v1/inbox", {"wait": "inf"}),
    ("USA", "/v1/inbox", {"wait": "soon"}),
    ("USA", "/v1/inbox", {"after": -1}),
    ("USA", "/v1/inbox", {"after": "last"}),
    ("USA", "/v1/inbox", {"after": "1e3"}),
    ("USA", "/v1/inbox", {"after": 0, "limit": 0, "wait": 99}),
    (ADMIN, "/v1/admin/actions", {"limit": 0}),
    (ADMIN, "/v1/admin/actions", {"limit": 1001}),
    (ADMIN, "/v1/admin/actions", {"limit": "all"}),
]


@pytest.mark.parametrize(
    ("who", "path", "params"), [pytest.param(*case, id=f"{case[1]}?{case[2]}") for case in BAD_QUERIES]
)
def test_bad_query_parameters(world: World, who: str, path: str, params: dict[str, Any]) -> None:
    with unchanged(world):
        problem = assert_problem(
            world.client.get(path, params=params, headers=world.auth(who)), 422, "invalid-request"
        )
    locations = {error["location"] for error in problem["errors"]}
    assert locations <= {f"query.{name}" for name in params} and locations


@pytest.mark.parametrize("after", [2**63, 10**20])
def test_a_cursor_beyond_any_sequence_number(world: World, after: int) -> None:
    """Larger than a BIGINT: refused as invalid, or simply an empty page; never a server error."""
    r = world.client.get("/v1/inbox", params={"after": after}, headers=world.auth("USA"))
    if r.status_code == 200:
        assert r.json()["deliveries"] == []
    else:
        assert_problem(r, 422, "invalid-request")


BAD_PATHS: list[tuple[str, str, str]] = [
    ("KOR", "GET", "/v1/items/not-an-id"),
    ("KOR", "GET", "/v1/items/01890A5D-AC96-7000-8000-000000000000"),  # upper case
    ("KOR", "GET", "/v1/items/01890a5d-ac96-4000-8000-000000000000"),  # UUIDv4, not v7
    ("KOR", "GET", "/v1/items/not-an-id/status"),
    (ADMIN, "PATCH", "/v1/admin/countries/kor"),
    (ADMIN, "PATCH", "/v1/admin/countries/KORE"),
    ("KOR", "GET", "/v1/governance/proposals/XYZ"),
    ("KOR", "GET", "/v1/governance/proposals/" + "A" * 64),
    (ADMIN, "POST", "/v1/admin/keys/XYZ/revoke"),
    (ADMIN, "POST", "/v1/admin/keys/" + "A" * 32 + "/revoke"),
    (ADMIN, "PUT", "/v1/admin/agreements/KOR/usa"),
    (ADMIN, "PUT", "/v1/admin/agreements/**/USA"),
]


@pytest.mark.parametrize(("who", "method", "path"), BAD_PATHS)
def test_bad_path_parameters(world: World, who: str, method: str, path: str) -> None:
    body = (
        {"status": "active"} if method == "PATCH" else {"ceiling": "RESTRICTED"} if method == "PUT" else None
    )
    with unchanged(world):
        assert_problem(
            world.client.request(method, path, json=body, headers=world.auth(who)), 422, "invalid-request"
        )


# --- JSON bodies ----------------------------------------------------------------------------------------------

Body = bytes | dict[str, Any] | list[Any]


def _request(world: World, method: str, path: str, body: Body, who: str) -> httpx.Response:
    headers = {"Content-Type": "application/json", **world.auth(who)}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return world.client.request(method, path, content=content, headers=headers)


SWEDEN = {"code": "SWE", "name": "Sweden", "accreditation": "RESTRICTED", "groups": []}

BAD_BODIES: dict[str, tuple[str, str, Body, int, str | tuple[str, ...]]] = {
    # ack (as USA, whose inbox holds seq 1)
    "ack: not JSON": ("POST", "/v1/inbox/ack", b"seqs=1", 422, "invalid-request"),
    "ack: empty body": ("POST", "/v1/inbox/ack", b"", 422, "invalid-request"),
    "ack: truncated JSON": ("POST", "/v1/inbox/ack", b'{"seqs": [1', 422, "invalid-request"),
    "ack: a bare list": ("POST", "/v1/inbox/ack", [1], 422, "invalid-request"),
    "ack: no seqs": ("POST", "/v1/inbox/ack", {}, 422, "invalid-request"),
    "ack: empty seqs": ("POST", "/v1/inbox/ack", {"seqs": []}, 422, "invalid-request"),
    "ack: seqs not numbers": ("POST", "/v1/inbox/ack", {"seqs": ["one"]}, 422, "invalid-request"),
    "ack: fractional seq": ("POST", "/v1/inbox/ack", {"seqs": [1.5]}, 422, "invalid-request"),
    "ack: unknown field": ("POST", "/v1/inbox/ack", {"seqs": [1], "all": True}, 422, "invalid-request"),
    "ack: 1001 seqs": ("POST", "/v1/inbox/ack", {"seqs": list(range(1, 1002))}, 422, "invalid-request"),
    "ack: a seq not in the inbox": ("POST", "/v1/inbox/ack", {"seqs": [1, 99]}, 422, "unknown-delivery"),
    "ack: a negative seq": ("POST", "/v1/inbox/ack", {"seqs": [-1]}, 422, ("invalid-request", "unknown-delivery")),
    # admin
    "revoke: unknown key": ("POST", "/v1/admin/keys/" + "0" * 32 + "/revoke", b"", 404, "unknown-key"),
    "enrol through the admin": ("POST", "/v1/admin/countries", SWEDEN, 403, "governed-by-members"),
    "suspend through the admin": ("PATCH", "/v1/admin/countries/KOR", {"status": "suspended"}, 403, "governed-by-members"),
    "proposal: not JSON": ("POST", "/v1/governance/proposals", b"entry=1", 422, "invalid-request"),
    "proposal: no entry": ("POST", "/v1/governance/proposals", {}, 422, "invalid-request"),
    "proposal: unknown field": ("POST", "/v1/governance/proposals", {"entry": "e30", "force": 1}, 422, "invalid-request"),
    "proposal: entry not base64url": ("POST", "/v1/governance/proposals", {"entry": "!!"}, 422, "malformed-statement"),
    "proposal: entry not JSON": ("POST", "/v1/governance/proposals", {"entry": "bm90IGpzb24"}, 422, "malformed-statement"),
    "proposal: entry an empty object": ("POST", "/v1/governance/proposals", {"entry": "e30"}, 422, "malformed-statement"),
    "signature: no sig": ("POST", "/v1/governance/proposals/" + "0" * 64 + "/signatures", {"signer": "KOR", "key_id": "0" * 32}, 422, "invalid-request"),
    "signature: unknown proposal": ("POST", "/v1/governance/proposals/" + "0" * 64 + "/signatures", {"signer": "KOR", "key_id": "0" * 32, "sig": "AAAA"}, 404, "unknown-proposal"),
    "agreement: not JSON": ("PUT", "/v1/admin/agreements/KOR/NZL", b"RESTRICTED", 422, "invalid-request"),
    "agreement: no ceiling": ("PUT", "/v1/admin/agreements/KOR/NZL", {"topics": ["maritime"]}, 422, "invalid-request"),
    "agreement: ceiling not a string": ("PUT", "/v1/admin/agreements/KOR/NZL", {"ceiling": 2}, 422, "invalid-request"),
    "agreement: unknown ceiling": ("PUT", "/v1/admin/agreements/KOR/NZL", {"ceiling": "TOP"}, 422, "unknown-classification"),
    "agreement: bad topic": ("PUT", "/v1/admin/agreements/KOR/NZL", {"ceiling": "RESTRICTED", "topics": ["Not A Topic"]}, 422, "invalid-topic"),
    "agreement: with itself": ("PUT", "/v1/admin/agreements/KOR/KOR", {"ceiling": "RESTRICTED"}, 422, "invalid-agreement"),
    "agreement: unknown recipient": ("PUT", "/v1/admin/agreements/KOR/ZZZ", {"ceiling": "RESTRICTED"}, 404, "unknown-country"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_BODIES)
def test_bad_json_bodies(world: World, case: str) -> None:
    method, path, body, status, code = BAD_BODIES[case]
    if path == "/v1/inbox/ack":
        assert submit(world, world.seal("KOR", ["USA"])).status_code == 201  # USA's seq 1
    who = "USA" if path.startswith("/v1/inbox") else ADMIN
    with unchanged(world):
        assert_problem(_request(world, method, path, body, who), status, code)


def _entry(world: World, type_: str, signers: list[str], **body: Any) -> dict[str, Any]:
    return {
        "signed": gov.statement(world.directory(), type_, world.clock.ms, **body),
        "signers": signers,
    }


def _signed(world: World, draft: dict[str, Any], extra: list[tuple[str, Any]] = ()) -> bytes:  # type: ignore[assignment]
    keys = [(c, world.members[c].signing) for c in draft["signers"]] + list(extra)
    return gov.signed_entry(draft["signed"], keys)


def _rotation(world: World, **changes: Any) -> bytes:
    signed = gov.rotate_key(world.directory(), "KOR", ApiPrivateKey.generate().public_key, world.clock.ms)
    return gov.signed_entry({**signed, **changes}, [("KOR", world.members["KOR"].signing)])


def _flip_last_signature_byte(data: bytes) -> bytes:
    value = canonical.decode(data)
    sig = bytearray(canonical.b64decode(value["signatures"][0]["sig"]))
    sig[-1] ^= 1
    value["signatures"][0]["sig"] = canonical.b64encode(bytes(sig))
    return canonical.encode(value)


def _member(name: str = "Sweden", **keys: Any) -> dict[str, Any]:
    fresh = {
        KeyKind.SIGNING: SigningPrivateKey.generate().public_key,
        KeyKind.ENCRYPTION: EncryptionPrivateKey.generate().public_key,
        KeyKind.API: ApiPrivateKey.generate().public_key,
        **keys,
    }
    return gov.member_body(name, "RESTRICTED", [], fresh)  # type: ignore[arg-type]


BAD_STATEMENTS: dict[str, tuple[Callable[[World], bytes], int, str]] = {
    "a signature that does not verify": (lambda w: _flip_last_signature_byte(_rotation(w)), 422, "bad-statement-signature"),
    "signed by a key no member holds": (
        lambda w: gov.signed_entry(
            gov.rotate_key(w.directory(), "KOR", ApiPrivateKey.generate().public_key, w.clock.ms),
            [("KOR", SigningPrivateKey.generate())],
        ),
        422,
        "bad-statement-signature",
    ),
    "made for an older head": (lambda w: _rotation(w, prev="0" * 64), 409, "stale-proposal"),
    "made for a later position": (lambda w: _rotation(w, seq=7), 409, "stale-proposal"),
    "an unknown statement type": (lambda w: _rotation(w, type="grant-admin"), 422, "malformed-statement"),
    "an extra field": (lambda w: _rotation(w, admin="alice"), 422, "malformed-statement"),
    "dated before the head": (lambda w: _rotation(w, created_ms=1), 422, "invalid-statement"),
    "a key another member holds": (
        lambda w: gov.signed_entry(
            gov.rotate_key(w.directory(), "KOR", w.members["USA"].api.public_key, w.clock.ms),
            [("KOR", w.members["KOR"].signing)],
        ),
        422,
        "invalid-statement",
    ),
    "enrolling a member twice": (
        lambda w: _signed(w, _entry(w, "enrol-member", ["KOR"], country="USA", member=_member())),
        422,
        "invalid-statement",
    ),
    "a name with a NUL character": (
        lambda w: _signed(w, _entry(w, "enrol-member", ["KOR"], country="SWE", member=_member("Swe\x00den"))),
        422,
        "malformed-statement",
    ),
    "a name with a C1 control character": (
        lambda w: _signed(w, _entry(w, "enrol-member", ["KOR"], country="SWE", member=_member("Swe\u0085den"))),
        422,
        "malformed-statement",
    ),
    "a name with a bidirectional override": (
        lambda w: _signed(w, _entry(w, "enrol-member", ["KOR"], country="SWE", member=_member("Swe\u202eden"))),
        422,
        "malformed-statement",
    ),
    "not in canonical form": (lambda w: _rotation(w).replace(b'":', b'": ', 1), 422, "malformed-statement"),
    "a second genesis root": (lambda w: w.root_bytes(), 409, "directory-exists"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_STATEMENTS)
def test_bad_statements_change_nothing(world: World, case: str) -> None:
    build, status, code = BAD_STATEMENTS[case]
    data = build(world)
    with unchanged(world):
        assert_problem(world.propose(data, ADMIN), status, code)


def test_member_keys_cannot_be_added_through_the_admin_api(world: World) -> None:
    doc = json.loads(public_key_document("USA", EncryptionPrivateKey.generate().public_key))
    with unchanged(world):
        assert_problem(_request(world, "POST", "/v1/admin/keys", doc, ADMIN), 403, "governed-by-members")


def test_an_ack_with_a_known_and_an_unknown_seq_acknowledges_nothing(world: World) -> None:
    assert submit(world, world.seal("KOR", ["USA"])).status_code == 201
    with unchanged(world):
        problem = assert_problem(
            _request(world, "POST", "/v1/inbox/ack", {"seqs": [1, 2]}, "USA"), 422, "unknown-delivery"
        )
    assert problem["missing"] == [2]


@pytest.mark.parametrize("seq", [2**63, 10**20])
def test_an_ack_of_a_seq_beyond_any_sequence_number(world: World, seq: int) -> None:
    """Larger than a BIGINT: a 422 (either type says so), never a server error."""
    with unchanged(world):
        r = _request(world, "POST", "/v1/inbox/ack", {"seqs": [seq]}, "USA")
        assert_problem(r, 422, ("invalid-request", "unknown-delivery"))


# --- routes and methods ----------------------------------------------------------------------------------------

UNKNOWN_ROUTES: list[tuple[str, str]] = [
    ("GET", "/"),
    ("GET", "/v1"),
    ("GET", "/v1/nope"),
    ("GET", "/v2/items"),
    ("GET", "/v1/admin"),
    ("POST", "/v1/admin/nope"),
    ("GET", "/v1/items/01890a5d-ac96-7000-8000-000000000000/nope"),
    ("DELETE", "/v1/admin/countries/KOR/keys"),
]


@pytest.mark.parametrize("who", ["KOR", ADMIN, None])
@pytest.mark.parametrize(("method", "path"), UNKNOWN_ROUTES)
def test_unknown_routes_are_a_404_problem(world: World, method: str, path: str, who: str | None) -> None:
    headers = world.auth(who) if who else {}
    with unchanged(world):
        r = world.client.request(method, path, headers=headers, follow_redirects=False)
        assert_problem(r, 404, "not-found")


WRONG_METHODS: list[tuple[str, str, set[str]]] = [
    ("DELETE", "/v1/inbox", {"GET"}),
    ("PUT", "/v1/items", {"POST"}),
    ("GET", "/v1/items", {"POST"}),
    ("GET", "/v1/inbox/ack", {"POST"}),
    ("POST", "/v1/directory", {"GET"}),
    ("DELETE", "/v1/items/01890a5d-ac96-7000-8000-000000000000", {"GET"}),
    ("PATCH", "/v1/items/01890a5d-ac96-7000-8000-000000000000/status", {"GET"}),
    ("DELETE", "/v1/admin/countries/KOR", {"PATCH"}),
    ("PUT", "/v1/admin/keys", {"GET", "POST"}),
    ("GET", "/v1/admin/keys/" + "0" * 32 + "/revoke", {"POST"}),
    ("POST", "/v1/admin/agreements/KOR/USA", {"PUT"}),
    ("DELETE", "/v1/admin/actions", {"GET"}),
]


@pytest.mark.parametrize("who", ["KOR", ADMIN, None])
@pytest.mark.parametrize(("method", "path", "allowed"), WRONG_METHODS)
def test_wrong_methods_are_a_405_problem(
    world: World, method: str, path: str, allowed: set[str], who: str | None
) -> None:
    headers = world.auth(who) if who else {}
    with unchanged(world):
        assert_problem(world.client.request(method, path, headers=headers), 405, "method-not-allowed")


@pytest.mark.parametrize(
    ("method", "path", "allowed"), [WRONG_METHODS[0], WRONG_METHODS[8], WRONG_METHODS[10]]
)
def test_a_405_names_the_allowed_methods(world: World, method: str, path: str, allowed: set[str]) -> None:
    """RFC 9110 section 15.5.6: a 405 response MUST carry an Allow header listing supported methods."""
    r = world.client.request(method, path, headers=world.auth("KOR"))
    assert_problem(r, 405, "method-not-allowed")
    assert "allow" in r.headers, dict(r.headers)
    named = {m.strip() for m in r.headers["allow"].split(",")} - {"HEAD", "OPTIONS"}
    assert named and named <= allowed and method not in named


def test_an_unsigned_envelope_cannot_tell_whether_an_item_id_exists(world: World) -> None:
    """Issue 10 finding 6: an envelope reusing a stored item's id with a bad signature got 409
    (the id exists) where a fresh id got 422: any member could probe for ids. The signature is
    checked before the id is looked up, so both answers are the same and nothing is stored."""
    stored = world.seal("KOR", ["USA"], b"the real item")
    assert world.submit("KOR", stored).status_code == 201
    existing_id = parse(stored).header.item_id
    forged = world.seal("KOR", ["USA"], b"a probe", item_id=existing_id)
    fresh = world.seal("KOR", ["USA"], b"a probe")
    answers = []
    with unchanged(world):
        for envelope in (forged, fresh):
            response = world.submit("KOR", flip(envelope, signature_offset(envelope) + 5))
            answers.append((response.status_code, response.json()["type"]))
    assert answers[0] == answers[1] == (422, "urn:msmt:problem:bad-signature")
