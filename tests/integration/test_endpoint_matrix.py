"""Access control: every endpoint x every kind of caller, on SQLite and PostgreSQL.

`MATRIX` is the whole policy at a glance: for each route, what its own country (the one the
request is about: the originator, the inbox owner, the country an admin action targets),
another country and the admin get. Whoever calls, a token that fails authentication gets
the 401 in `TOKEN_FAILURES`, tried with the identity that would otherwise succeed.

Every refused request must leave the database exactly as it was; every success must show
the caller its own data only (another country's item is 404, so existence does not leak).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from broker import policydoc
from broker.services import policy as policy_service
from broker.services.submit import join_batch
from broker.store.db import make_engine, make_sessionmaker
from msmt.agency import AgencyKeys
from msmt.auth import mint_token
from msmt.core import (
    ApiPrivateKey,
    EncryptionPrivateKey,
    KeyKind,
    Markings,
    SigningPrivateKey,
    canonical,
    logleaf,
    merkle,
    public_key_document,
)
from msmt.core import governance as gov
from msmt.core.note import Checkpoint, open_checkpoint
from msmt.core.receipt import DeliveryReceipt, sign_receipt

from .conftest import AUDIENCE, LOG_SIGNER, MEMBERS, World

ADMIN = "admin:alice"
PROBLEM = "urn:msmt:problem:"
ENVELOPE = "application/vnd.msmt.envelope"
LIFETIME_S = 120
LEEWAY_S = 30  # Settings.token_leeway_s

# own:   KOR, the originator, for items and preflight; USA, the inbox owner, for the inbox;
#        KOR, the country the action targets, for admin routes
# other: NZL (neither originator nor recipient) for member routes; GBR for admin routes
CALLERS = (
    "own",
    "other",
    "admin",
    "no-token",
    "bad-signature",
    "revoked-key",
    "expired-token",
    "replayed-token",
)

# fmt: off
MATRIX: dict[str, tuple[str, str, str]] = {
    # route                                   own                  other                      admin
    "POST /v1/items":                         ("201",              "403 originator-mismatch", "403 country-only"),
    "POST /v1/items/batch":                   ("200",              "403 originator-mismatch", "403 country-only"),
    "GET /v1/items/{id}":                     ("200",              "404 unknown-item",        "403 country-only"),
    "GET /v1/items/{id}/status":              ("200",              "404 unknown-item",        "200"),
    "GET /v1/items/{id}/inboxes":             ("200",              "404 unknown-item",        "403 country-only"),
    "GET /v1/inbox":                          ("200",              "200",                     "403 country-only"),
    "GET /v1/inbox/stream":                   ("200",              "200",                     "403 country-only"),
    "POST /v1/inbox/ack":                     ("200",              "422 unknown-delivery",    "403 country-only"),
    "POST /v1/inbox/receipts":                ("200",              "422 bad-receipt",         "403 country-only"),
    "GET /v1/directory":                      ("200",              "200",                     "200"),
    "GET /v1/directory/entries":              ("200",              "200",                     "200"),
    "POST /v1/governance/proposals":          ("201",              "201",                     "201"),
    "GET /v1/governance/proposals":           ("200",              "200",                     "200"),
    "GET /v1/log/checkpoint":                 ("200",              "200",                     "200"),
    "GET /v1/log/proof/inclusion":            ("200",              "200",                     "200"),
    "GET /v1/log/proof/consistency":          ("200",              "200",                     "200"),
    "GET /v1/log/leaves/{index}":             ("200",              "404 unknown-leaf",        "200"),
    "GET /v1/log/inboxes":                    ("200",              "200",                     "200"),
    "GET /v1/governance/proposals/{id}":      ("200",              "200",                     "200"),
    "POST /v1/governance/proposals/{id}/signatures": ("200",       "200",                     "200"),
    "POST /v1/preflight":                     ("200",              "200",                     "403 country-only"),
    "POST /v1/preflight/explain":             ("200",              "200",                     "403 country-only"),
    "GET /v1/admin/countries":                ("403 admin-only",   "403 admin-only",          "200"),
    "POST /v1/admin/countries":               ("403 admin-only",   "403 admin-only",          "403 governed-by-members"),
    "PATCH /v1/admin/countries/{code}":       ("403 admin-only",   "403 admin-only",          "403 governed-by-members"),
    "GET /v1/admin/keys":                     ("403 admin-only",   "403 admin-only",          "200"),
    "POST /v1/admin/keys":                    ("403 admin-only",   "403 admin-only",          "403 governed-by-members"),
    "POST /v1/admin/keys/{key_id}/revoke":    ("403 admin-only",   "403 admin-only",          "403 governed-by-members"),
    "GET /v1/admin/agreements":               ("403 admin-only",   "403 admin-only",          "200"),
    "PUT /v1/admin/agreements/{o}/{r}":       ("403 admin-only",   "403 admin-only",          "200"),
    "GET /v1/admin/actions":                  ("403 admin-only",   "403 admin-only",          "200"),
    "GET /v1/admin/policy":                   ("403 admin-only",   "403 admin-only",          "200"),
    "POST /v1/admin/policy/plan":             ("403 admin-only",   "403 admin-only",          "200"),
    "PUT /v1/admin/policy":                   ("403 admin-only",   "403 admin-only",          "200"),
    "GET /v1/admin/policy/versions":          ("403 admin-only",   "403 admin-only",          "200"),
    "GET /v1/admin/items/{id}/explain":       ("403 admin-only",   "403 admin-only",          "200"),
}

# Whoever the caller is: refused before anything else happens.
TOKEN_FAILURES: dict[str, str] = {
    "no-token":       "401 missing-token",
    "bad-signature":  "401 invalid-token",   # signed by another Ed25519 key, claiming the caller's kid
    "revoked-key":    "401 unknown-key",     # the caller revoked its own API key (an admin's: the admin API)
    "expired-token":  "401 expired-token",   # exp an hour ago, far beyond the leeway
    "replayed-token": "401 replayed-token",  # the same token, sent a second time
}
# fmt: on


def expected(route: str, caller: str) -> tuple[int, str | None]:
    """(status, problem code) for a cell of the matrix; the code is None for a success."""
    cell = TOKEN_FAILURES.get(caller) or MATRIX[route][("own", "other", "admin").index(caller)]
    status, _, code = cell.partition(" ")
    return int(status), code or None


# --- the world every cell starts from -------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """KOR sent one item to JPN and USA; FRA sent one to JPN only."""

    world: World
    item_id: str
    envelope: bytes
    fra_item_id: str
    usa_seq: int


@pytest.fixture
def scene(world: World) -> Scene:
    envelope = world.seal("KOR", ["JPN", "USA"], b"for JPN and USA")
    first = world.submit("KOR", envelope)
    assert first.status_code == 201, first.text
    second = world.submit("FRA", world.seal("FRA", ["JPN"], b"for JPN only"))
    assert second.status_code == 201, second.text
    (usa_seq,) = rows(world, "SELECT seq FROM deliveries WHERE recipient = 'USA'")
    return Scene(world, first.json()["item_id"], envelope, second.json()["item_id"], int(usa_seq[0]))


# --- database views ---------------------------------------------------------------------------


def rows(world: World, sql: str) -> list[tuple[Any, ...]]:
    engine = make_engine(world.url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


SNAPSHOT = {
    "items": "SELECT item_id, originator, envelope_sha256, log_index FROM items",
    "deliveries": "SELECT item_id, recipient, seq, state, acked_ms FROM deliveries",
    "log_entries": "SELECT log_index, kind, ref FROM log_entries",
    "countries": "SELECT code, name, status, accreditation FROM countries",
    "group_members": "SELECT group_name, country FROM group_members",
    "keys": "SELECT key_id, owner, kind, valid_until_ms, revoked_ms FROM keys",
    "agreements": "SELECT originator, recipient, ceiling, topics FROM agreements",
    "admin_actions": "SELECT id, actor, action, target FROM admin_actions",
    "inbox_counters": "SELECT recipient, last_seq FROM inbox_counters",
    "registry_state": "SELECT id, version FROM registry_state",
}


def snapshot(world: World) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a request could change, except the single-use token record."""
    world.settle()  # background integration is not a change made by the request
    engine = make_engine(world.url)
    try:
        with engine.connect() as conn:
            return {
                table: sorted((tuple(r) for r in conn.execute(text(sql))), key=repr)
                for table, sql in SNAPSHOT.items()
            }
    finally:
        engine.dispose()


def delivery_states(world: World, item_id: str) -> dict[str, str]:
    found = rows(world, f"SELECT recipient, state FROM deliveries WHERE item_id = '{item_id}'")
    return {recipient: state for recipient, state in found}


# --- tokens -----------------------------------------------------------------------------------


def api_key(world: World, who: str) -> ApiPrivateKey:
    return world.admin_key if who == ADMIN else world.members[who].api


def claims(world: World, who: str, lifetime_s: int = LIFETIME_S) -> dict[str, Any]:
    now = world.clock.ms // 1000
    return {
        "iss": who,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + lifetime_s,
        "jti": secrets.token_urlsafe(18),
    }


def signed(payload: dict[str, Any], key: ApiPrivateKey, kid: str | None) -> str:
    return jwt.encode(payload, key.ed_key, algorithm="EdDSA", headers={} if kid is None else {"kid": kid})


def revoke(world: World, key_id: str) -> None:
    if key_id == world.admin_key.key_id:
        r = world.client.post(f"/v1/admin/keys/{key_id}/revoke", headers=world.auth(ADMIN))
        assert r.status_code == 200, r.text
        assert r.json()["revoked_ms"] is not None
        return
    (owner,) = [code for code, keys in world.members.items() if keys.api.key_id == key_id]
    world.revoke_own(owner, key_id)


# --- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def send(world: World, call: Call, token: str | None) -> httpx.Response:
    headers = dict(call.headers)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return world.client.request(call.method, call.path, json=call.json, content=call.content, headers=headers)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem with this status and type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + code, body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if status == 401:
        assert response.headers.get("www-authenticate") == "Bearer"
    return body


MARKINGS = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"]).to_dict()


# --- success checks: the body holds the caller's own data, and only that -------------------


Check = Callable[[Scene, str, httpx.Response], None]


def submitted(scene: Scene, who: str, r: httpx.Response) -> None:
    receipt = r.json()
    assert receipt["recipients"] == ["USA"]
    assert (receipt["item_id"], "KOR") in rows(scene.world, "SELECT item_id, originator FROM items")
    world = scene.world
    items_logged = world.count("log_entries WHERE kind = 'item'")
    assert (world.count("items"), world.count("deliveries"), items_logged) == (3, 4, 3)


def batch_submitted(scene: Scene, who: str, r: httpx.Response) -> None:
    (result,) = r.json()["results"]
    assert result["status"] == 201, result
    submitted(scene, who, httpx.Response(201, json=result["receipt"]))


def envelope_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    assert r.headers["content-type"] == ENVELOPE
    assert r.content == scene.envelope


def status_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    body = r.json()
    assert body["item_id"] == scene.item_id
    assert [(d["recipient"], d["state"]) for d in body["deliveries"]] == [
        ("JPN", "pending"),
        ("USA", "pending"),
    ]


def inbox_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    page = r.json()
    if who == "USA":  # KOR's item, not FRA's (which went to JPN only)
        assert [(d["item_id"], d["originator"], d["seq"]) for d in page["deliveries"]] == [
            (scene.item_id, "KOR", scene.usa_seq)
        ]
        assert page["cursor"] == scene.usa_seq
    else:  # NZL received nothing: none of USA's or JPN's deliveries show
        assert page == {"deliveries": [], "cursor": 0}


def stream_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    """The event stream (max=0: what is there, then its end), parsed: the same as the page."""
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [block for block in r.text.split("\n\n") if block and not block.startswith(":")]
    fields = [dict(line.split(": ", 1) for line in block.split("\n")) for block in events]
    assert fields[-1] == {"event": "end", "data": '{"reason":"max-duration"}'}
    deliveries = [
        d for f in fields if f["event"] == "deliveries" for d in json.loads(f["data"])["deliveries"]
    ]
    if who == "USA":
        assert [(d["item_id"], d["originator"], d["seq"]) for d in deliveries] == [
            (scene.item_id, "KOR", scene.usa_seq)
        ]
        assert [f["id"] for f in fields if f["event"] == "deliveries"] == [str(scene.usa_seq)]
    else:
        assert deliveries == []


def acknowledged(scene: Scene, who: str, r: httpx.Response) -> None:
    assert r.json() == {"acknowledged": [scene.usa_seq]}
    assert delivery_states(scene.world, scene.item_id) == {"USA": "acknowledged", "JPN": "pending"}


def directory_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    countries = r.json()["countries"]
    assert [c["code"] for c in countries] == sorted(MEMBERS)
    for entry in countries:
        member = scene.world.members[entry["code"]]
        assert entry["encryption_key"]["key_id"] == member.encryption.key_id
        assert [k["key_id"] for k in entry["signing_keys"]] == [member.signing.key_id]
        assert set(entry) == {
            "code",
            "name",
            "status",
            "accreditation",
            "groups",
            "signing_keys",
            "encryption_key",
        }


def preflight_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    body = r.json()
    assert who not in body["allowed"] and who not in body["denied"]
    assert sorted([*body["allowed"], *body["denied"]]) == sorted(set(MEMBERS) - {who})


def explained(scene: Scene, who: str, r: httpx.Response) -> None:
    assert r.json()["originator"] == who  # the decision for the caller, not for KOR
    assert r.json()["recipient"] == "USA"


def countries_listed(scene: Scene, who: str, r: httpx.Response) -> None:
    assert [c["code"] for c in r.json()] == sorted(MEMBERS)


def _usa_receipt(s: Scene) -> Call:
    (digest, index) = rows(
        s.world, f"SELECT envelope_sha256, log_index FROM items WHERE item_id = '{s.item_id}'"
    )[0]
    receipt = DeliveryReceipt(s.item_id, str(digest), "USA", s.usa_seq, int(index), s.world.clock.ms)  # type: ignore[call-overload]
    data = sign_receipt(receipt, s.world.members["USA"].signing)
    return Call("POST", "/v1/inbox/receipts", json={"receipts": [canonical.b64encode(data)]})


def receipt_kept(scene: Scene, who: str, r: httpx.Response) -> None:
    assert r.json() == {"accepted": 1}
    assert rows(scene.world, "SELECT item_id, recipient FROM delivery_receipts") == [(scene.item_id, "USA")]


def _log_size(s: Scene) -> int:
    (size,) = rows(s.world, "SELECT size FROM log_state")[0]
    return int(size)


def _item_index(s: Scene) -> int:
    (index,) = rows(s.world, f"SELECT log_index FROM items WHERE item_id = '{s.item_id}'")[0]
    return int(index)


def _checkpoint(s: Scene) -> Checkpoint:
    note = s.world.client.get("/v1/log/checkpoint", headers=s.world.auth("JPN")).json()["note"]
    checkpoint, _ = open_checkpoint(
        note.encode(), LOG_SIGNER.identity().verifiers(), origin=LOG_SIGNER.origin
    )
    return checkpoint


def checkpoint_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    checkpoint, _ = open_checkpoint(r.json()["note"].encode(), LOG_SIGNER.identity().verifiers())
    assert checkpoint.size == r.json()["size"] == _log_size(scene)


def inclusion_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    checkpoint = _checkpoint(scene)
    (leaf,) = rows(scene.world, f"SELECT leaf_hash FROM log_entries WHERE log_index = {_item_index(scene)}")[
        0
    ]
    proof = [canonical.b64decode(p) for p in r.json()["proof"]]
    merkle.verify_inclusion(bytes(leaf), _item_index(scene), checkpoint.size, proof, checkpoint.root_hash)


def consistency_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    checkpoint = _checkpoint(scene)
    proof = [canonical.b64decode(p) for p in r.json()["proof"]]
    tree_first = merkle.leaf_hash(
        bytes(rows(scene.world, "SELECT leaf FROM log_entries WHERE log_index = 0")[0][0])
    )
    merkle.verify_consistency(1, checkpoint.size, proof, tree_first, checkpoint.root_hash)


def leaf_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    body = r.json()
    assert body["kind"] == "item"
    item_id, _, originator, deliveries = logleaf.parse_item_leaf(canonical.b64decode(body["leaf"]))
    assert (item_id, originator, sorted(deliveries)) == (scene.item_id, "KOR", ["JPN", "USA"])


def inboxes_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    """The chain is the same for everyone; each member gets the opening of its own commitment
    (USA, a recipient of the scene's item, a size of at least 1; NZL, with an empty inbox, 0);
    an admin, who has no inbox, none."""
    body = r.json()
    newest = body["leaves"][0]
    assert newest["log_index"] == body["size"] - 1
    parsed = logleaf.parse_inboxes_leaf(canonical.b64decode(newest["leaf"]))
    if who.startswith("admin"):
        assert all(leaf["own"] is None for leaf in body["leaves"])
        return
    opening = newest["own"]
    assert opening["size"] >= 1 if who == "USA" else opening["size"] == 0
    salt = canonical.b64decode(opening["salt"])
    assert logleaf.inbox_commitment(who, opening["size"], salt) in parsed.commitments


def item_inboxes_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    body = r.json()
    assert body["item_id"] == scene.item_id and body["inboxes_index"] > body["log_index"]
    leaf = logleaf.parse_inboxes_leaf(canonical.b64decode(body["leaf"]))
    assert [x["recipient"] for x in body["recipients"]] == ["JPN", "USA"]
    for x in body["recipients"]:
        commitment = logleaf.inbox_commitment(x["recipient"], x["size"], canonical.b64decode(x["salt"]))
        assert commitment in leaf.commitments


def chain_returned(scene: Scene, who: str, r: httpx.Response) -> None:
    body = r.json()
    state = gov.verify_chain(canonical.b64decode(e["entry"]) for e in body["entries"])
    assert sorted(state.members) == sorted(MEMBERS)
    assert body["head"] == {"seq": state.seq, "hash": state.head}


def rotation_applied(scene: Scene, who: str, r: httpx.Response) -> None:
    assert (r.json()["type"], r.json()["state"], r.json()["proposer"]) == ("rotate-key", "applied", who)
    state = scene.world.directory()
    assert state.members["KOR"].current(KeyKind.API, scene.world.clock.ms).key_id == NEW_KOR_API.key_id  # type: ignore[union-attr]


def proposals_listed(scene: Scene, who: str, r: httpx.Response) -> None:
    assert [(p["type"], p["country"], p["signers"]) for p in r.json()] == [
        ("enrol-member", "SWE", ["KOR", "SWE"])
    ]


def proposal_shown(scene: Scene, who: str, r: httpx.Response) -> None:
    body = r.json()
    assert (body["type"], body["state"], body["signers"]) == ("enrol-member", "pending", ["KOR", "SWE"])
    assert any("8 of the 11 active members must sign, 1 did" in m for m in body["missing"]), body


def signature_added(scene: Scene, who: str, r: httpx.Response) -> None:
    body = r.json()
    assert (body["state"], body["signers"]) == ("pending", ["KOR", "SWE", "USA"])


NEW_KOR_API = ApiPrivateKey.from_seed(b"\x07" * 32)
SWEDEN = AgencyKeys(
    "SWE",
    SigningPrivateKey.from_seed(b"\x05" * 64),
    EncryptionPrivateKey.from_seed(b"\x06" * 32),
    ApiPrivateKey.from_seed(b"\x08" * 32),
)


def _rotation(s: Scene) -> Call:
    # an hour of overlap: the token KOR minted with its old API key stays valid (for the replay case)
    signed = gov.rotate_key(
        s.world.directory(), "KOR", NEW_KOR_API.public_key, s.world.clock.ms, overlap_ms=3_600_000
    )
    entry = gov.signed_entry(signed, [("KOR", s.world.members["KOR"].signing)])
    return Call("POST", "/v1/governance/proposals", json={"entry": canonical.b64encode(entry)})


def _pending_enrolment(s: Scene) -> str:
    keys = {
        KeyKind.SIGNING: SWEDEN.signing.public_key,
        KeyKind.ENCRYPTION: SWEDEN.encryption.public_key,
        KeyKind.API: SWEDEN.api.public_key,
    }
    signed = gov.statement(
        s.world.directory(),
        "enrol-member",
        s.world.clock.ms,
        country="SWE",
        member=gov.member_body("Sweden", "RESTRICTED", [], keys),  # type: ignore[arg-type]
    )
    entry = gov.signed_entry(signed, [("KOR", s.world.members["KOR"].signing), ("SWE", SWEDEN.signing)])
    r = s.world.propose(entry, "GBR")  # any member may relay; KOR may be the one suspended
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _usa_signature(s: Scene) -> Call:
    pid = _pending_enrolment(s)
    shown = s.world.client.get(f"/v1/governance/proposals/{pid}", headers=s.world.auth("GBR")).json()
    signed = canonical.decode(canonical.b64decode(shown["signed"]))
    signature = gov.sign(signed, "USA", s.world.members["USA"].signing)
    return Call("POST", f"/v1/governance/proposals/{pid}/signatures", json=signature.to_dict())


def country_enrolled(scene: Scene, who: str, r: httpx.Response) -> None:
    assert r.json() == {
        "code": "SWE",
        "name": "Sweden",
        "status": "active",
        "accreditation": "RESTRICTED",
        "groups": [],
    }
    assert scene.world.count("countries") == len(MEMBERS) + 1


def country_updated(scene: Scene, who: str, r: httpx.Response) -> None:
    assert r.json()["code"] == "KOR" and r.json()["accreditation"] == "RESTRICTED"
    assert ("KOR", "RESTRICTED") in rows(scene.world, "SELECT code, accreditation FROM countries")


def keys_listed(scene: Scene, who: str, r: httpx.Response) -> None:
    keys = r.json()
    assert len(keys) == 3 * len(MEMBERS) + 1
    assert {k["owner"] for k in keys} == {*MEMBERS, ADMIN}


def key_added(scene: Scene, who: str, r: httpx.Response) -> None:
    key = r.json()
    assert (key["owner"], key["kind"], key["revoked_ms"]) == ("KOR", "api", None)
    assert scene.world.count("keys") == 3 * len(MEMBERS) + 2


def key_revoked(scene: Scene, who: str, r: httpx.Response) -> None:
    key = r.json()
    assert key["key_id"] == scene.world.members["KOR"].api.key_id
    assert key["revoked_ms"] == scene.world.clock.ms


def agreements_listed(scene: Scene, who: str, r: httpx.Response) -> None:
    pairs = {(a["originator"], a["recipient"]) for a in r.json()}
    assert pairs == {("*", "*"), ("KOR", "USA"), ("KOR", "JPN")}


def agreement_set(scene: Scene, who: str, r: httpx.Response) -> None:
    assert r.json() == {
        "originator": "KOR",
        "recipient": "NZL",
        "ceiling": "RESTRICTED",
        "topics": ["maritime"],
    }


def actions_listed(scene: Scene, who: str, r: httpx.Response) -> None:
    ids = [a["id"] for a in r.json()]
    assert len(ids) == scene.world.count("admin_actions")
    assert ids == sorted(ids, reverse=True)


def _policy_text(scene: Scene, ceiling: str | None = None) -> bytes:
    with make_sessionmaker(make_engine(scene.world.url))() as session:
        document = policy_service.export_document(session)
    if ceiling:
        data = document.model_dump()
        data["default_agreement"]["ceiling"] = ceiling
        document = policydoc.from_dict(data)
    return policydoc.render(document).encode()


def policy_exported(scene: Scene, who: str, r: httpx.Response) -> None:
    document = policydoc.parse(r.text)
    assert set(document.countries) == set(scene.world.members)


def policy_planned(scene: Scene, who: str, r: httpx.Response) -> None:
    assert (
        "default agreement: up to RESTRICTED, all topics -> up to CONFIDENTIAL, all topics"
        in r.json()["changes"]
    ), r.json()
    assert r.json()["version"] is None


def policy_applied(scene: Scene, who: str, r: httpx.Response) -> None:
    assert (
        "default agreement: up to RESTRICTED, all topics -> up to CONFIDENTIAL, all topics"
        in r.json()["changes"]
    ), r.json()
    assert isinstance(r.json()["version"], int)


def policy_versions_listed(scene: Scene, who: str, r: httpx.Response) -> None:
    versions = [v["version"] for v in r.json()]
    assert versions and versions == sorted(versions, reverse=True)


def item_explained(scene: Scene, who: str, r: httpx.Response) -> None:
    assert r.json()["item_id"] == scene.item_id
    assert [(d["recipient"], d["allowed"]) for d in r.json()["decisions"]] == [("JPN", True), ("USA", True)]


TOML = {"Content-Type": "application/toml"}


# --- the endpoints --------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    own: str  # the country the request is about
    other: str  # a country it is not about
    principal: str  # who succeeds: `own`, or the admin
    call: Callable[[Scene], Call]
    check: Check  # for a success, as the given caller
    writes: bool = False


def _new_api_key_document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(public_key_document("KOR", ApiPrivateKey.generate().public_key))
    return doc


ENDPOINTS: dict[str, Endpoint] = {
    "POST /v1/items": Endpoint(
        "KOR",
        "NZL",
        "KOR",
        lambda s: Call(
            "POST", "/v1/items", content=s.world.seal("KOR", ["USA"]), headers={"Content-Type": ENVELOPE}
        ),
        submitted,
        writes=True,
    ),
    "POST /v1/items/batch": Endpoint(
        "KOR",
        "NZL",
        "KOR",
        lambda s: Call(
            "POST",
            "/v1/items/batch",
            content=join_batch([s.world.seal("KOR", ["USA"])]),
            headers={"Content-Type": "application/vnd.msmt.envelope-batch"},
        ),
        batch_submitted,
        writes=True,
    ),
    "GET /v1/items/{id}": Endpoint(
        "KOR", "NZL", "KOR", lambda s: Call("GET", f"/v1/items/{s.item_id}"), envelope_returned
    ),
    "GET /v1/items/{id}/status": Endpoint(
        "KOR", "NZL", "KOR", lambda s: Call("GET", f"/v1/items/{s.item_id}/status"), status_returned
    ),
    "GET /v1/inbox": Endpoint("USA", "NZL", "USA", lambda s: Call("GET", "/v1/inbox"), inbox_returned),
    "GET /v1/inbox/stream": Endpoint(
        "USA", "NZL", "USA", lambda s: Call("GET", "/v1/inbox/stream?max=0"), stream_returned
    ),
    "POST /v1/inbox/ack": Endpoint(
        "USA",
        "NZL",
        "USA",
        lambda s: Call("POST", "/v1/inbox/ack", json={"seqs": [s.usa_seq]}),
        acknowledged,
        writes=True,
    ),
    "POST /v1/inbox/receipts": Endpoint("USA", "NZL", "USA", _usa_receipt, receipt_kept, writes=True),
    "GET /v1/directory": Endpoint(
        "KOR", "NZL", "KOR", lambda s: Call("GET", "/v1/directory"), directory_returned
    ),
    "POST /v1/preflight": Endpoint(
        "KOR",
        "NZL",
        "KOR",
        lambda s: Call("POST", "/v1/preflight", json={"markings": MARKINGS}),
        preflight_returned,
    ),
    "POST /v1/preflight/explain": Endpoint(
        "KOR",
        "NZL",
        "KOR",
        lambda s: Call("POST", "/v1/preflight/explain", json={"recipient": "USA", "markings": MARKINGS}),
        explained,
    ),
    "GET /v1/directory/entries": Endpoint(
        "KOR", "NZL", "KOR", lambda s: Call("GET", "/v1/directory/entries"), chain_returned
    ),
    "POST /v1/governance/proposals": Endpoint("KOR", "NZL", "KOR", _rotation, rotation_applied, writes=True),
    "GET /v1/log/checkpoint": Endpoint(
        "KOR", "NZL", "KOR", lambda s: Call("GET", "/v1/log/checkpoint"), checkpoint_returned
    ),
    "GET /v1/log/proof/inclusion": Endpoint(
        "KOR",
        "NZL",
        "KOR",
        lambda s: Call("GET", f"/v1/log/proof/inclusion?index={_item_index(s)}&size={_log_size(s)}"),
        inclusion_returned,
    ),
    "GET /v1/log/proof/consistency": Endpoint(
        "KOR",
        "NZL",
        "KOR",
        lambda s: Call("GET", f"/v1/log/proof/consistency?first=1&second={_log_size(s)}"),
        consistency_returned,
    ),
    "GET /v1/log/leaves/{index}": Endpoint(
        "KOR", "NZL", "KOR", lambda s: Call("GET", f"/v1/log/leaves/{_item_index(s)}"), leaf_returned
    ),
    "GET /v1/log/inboxes": Endpoint(
        "USA", "NZL", "USA", lambda s: Call("GET", f"/v1/log/inboxes?size={_log_size(s)}"), inboxes_returned
    ),
    "GET /v1/items/{id}/inboxes": Endpoint(
        "KOR", "NZL", "KOR", lambda s: Call("GET", f"/v1/items/{s.item_id}/inboxes"), item_inboxes_returned
    ),
    "GET /v1/governance/proposals": Endpoint(
        "KOR",
        "NZL",
        "KOR",
        lambda s: (_pending_enrolment(s), Call("GET", "/v1/governance/proposals"))[1],
        proposals_listed,
    ),
    "GET /v1/governance/proposals/{id}": Endpoint(
        "KOR",
        "NZL",
        "KOR",
        lambda s: Call("GET", f"/v1/governance/proposals/{_pending_enrolment(s)}"),
        proposal_shown,
    ),
    "POST /v1/governance/proposals/{id}/signatures": Endpoint(
        "KOR", "NZL", "KOR", _usa_signature, signature_added, writes=True
    ),
    "GET /v1/admin/countries": Endpoint(
        "KOR", "GBR", ADMIN, lambda s: Call("GET", "/v1/admin/countries"), countries_listed
    ),
    "POST /v1/admin/countries": Endpoint(
        "KOR",
        "GBR",
        ADMIN,
        lambda s: Call(
            "POST",
            "/v1/admin/countries",
            json={"code": "SWE", "name": "Sweden", "accreditation": "RESTRICTED", "groups": []},
        ),
        country_enrolled,
        writes=True,
    ),
    "PATCH /v1/admin/countries/{code}": Endpoint(
        "KOR",
        "GBR",
        ADMIN,
        lambda s: Call("PATCH", "/v1/admin/countries/KOR", json={"accreditation": "RESTRICTED"}),
        country_updated,
        writes=True,
    ),
    "GET /v1/admin/keys": Endpoint("KOR", "GBR", ADMIN, lambda s: Call("GET", "/v1/admin/keys"), keys_listed),
    "POST /v1/admin/keys": Endpoint(
        "KOR",
        "GBR",
        ADMIN,
        lambda s: Call("POST", "/v1/admin/keys", json=_new_api_key_document()),
        key_added,
        writes=True,
    ),
    "POST /v1/admin/keys/{key_id}/revoke": Endpoint(
        "KOR",
        "GBR",
        ADMIN,
        lambda s: Call("POST", f"/v1/admin/keys/{s.world.members['KOR'].api.key_id}/revoke"),
        key_revoked,
        writes=True,
    ),
    "GET /v1/admin/agreements": Endpoint(
        "KOR", "GBR", ADMIN, lambda s: Call("GET", "/v1/admin/agreements"), agreements_listed
    ),
    "PUT /v1/admin/agreements/{o}/{r}": Endpoint(
        "KOR",
        "GBR",
        ADMIN,
        lambda s: Call(
            "PUT", "/v1/admin/agreements/KOR/NZL", json={"ceiling": "RESTRICTED", "topics": ["maritime"]}
        ),
        agreement_set,
        writes=True,
    ),
    "GET /v1/admin/actions": Endpoint(
        "KOR", "GBR", ADMIN, lambda s: Call("GET", "/v1/admin/actions"), actions_listed
    ),
    "GET /v1/admin/policy": Endpoint(
        "KOR", "GBR", ADMIN, lambda s: Call("GET", "/v1/admin/policy"), policy_exported
    ),
    "POST /v1/admin/policy/plan": Endpoint(
        "KOR",
        "GBR",
        ADMIN,
        lambda s: Call(
            "POST", "/v1/admin/policy/plan", content=_policy_text(s, ceiling="CONFIDENTIAL"), headers=TOML
        ),
        policy_planned,
    ),
    "PUT /v1/admin/policy": Endpoint(
        "KOR",
        "GBR",
        ADMIN,
        lambda s: Call(
            "PUT", "/v1/admin/policy", content=_policy_text(s, ceiling="CONFIDENTIAL"), headers=TOML
        ),
        policy_applied,
        writes=True,
    ),
    "GET /v1/admin/policy/versions": Endpoint(
        "KOR", "GBR", ADMIN, lambda s: Call("GET", "/v1/admin/policy/versions"), policy_versions_listed
    ),
    "GET /v1/admin/items/{id}/explain": Endpoint(
        "KOR", "GBR", ADMIN, lambda s: Call("GET", f"/v1/admin/items/{s.item_id}/explain"), item_explained
    ),
}


def test_the_matrix_covers_every_route_of_the_app(world: World) -> None:
    """A route added to the broker without a row here fails this test."""
    documented = {
        f"{method} {path}"
        for path, operations in world.client.get("/openapi.json").json()["paths"].items()
        for method in (m.upper() for m in operations)
    }
    rows_ = {
        "POST /v1/items": "POST /v1/items",
        "POST /v1/items/batch": "POST /v1/items/batch",
        "GET /v1/items/{id}": "GET /v1/items/{item_id}",
        "GET /v1/items/{id}/status": "GET /v1/items/{item_id}/status",
        "GET /v1/items/{id}/inboxes": "GET /v1/items/{item_id}/inboxes",
        "GET /v1/log/inboxes": "GET /v1/log/inboxes",
        "GET /v1/inbox": "GET /v1/inbox",
        "GET /v1/inbox/stream": "GET /v1/inbox/stream",
        "POST /v1/inbox/ack": "POST /v1/inbox/ack",
        "POST /v1/inbox/receipts": "POST /v1/inbox/receipts",
        "GET /v1/directory": "GET /v1/directory",
        "GET /v1/directory/entries": "GET /v1/directory/entries",
        "POST /v1/governance/proposals": "POST /v1/governance/proposals",
        "GET /v1/governance/proposals": "GET /v1/governance/proposals",
        "GET /v1/log/checkpoint": "GET /v1/log/checkpoint",
        "GET /v1/log/proof/inclusion": "GET /v1/log/proof/inclusion",
        "GET /v1/log/proof/consistency": "GET /v1/log/proof/consistency",
        "GET /v1/log/leaves/{index}": "GET /v1/log/leaves/{index}",
        "GET /v1/governance/proposals/{id}": "GET /v1/governance/proposals/{pid}",
        "POST /v1/governance/proposals/{id}/signatures": "POST /v1/governance/proposals/{pid}/signatures",
        "POST /v1/preflight": "POST /v1/preflight",
        "POST /v1/preflight/explain": "POST /v1/preflight/explain",
        "GET /v1/admin/countries": "GET /v1/admin/countries",
        "POST /v1/admin/countries": "POST /v1/admin/countries",
        "PATCH /v1/admin/countries/{code}": "PATCH /v1/admin/countries/{code}",
        "GET /v1/admin/keys": "GET /v1/admin/keys",
        "POST /v1/admin/keys": "POST /v1/admin/keys",
        "POST /v1/admin/keys/{key_id}/revoke": "POST /v1/admin/keys/{key_id}/revoke",
        "GET /v1/admin/agreements": "GET /v1/admin/agreements",
        "PUT /v1/admin/agreements/{o}/{r}": "PUT /v1/admin/agreements/{originator}/{recipient}",
        "GET /v1/admin/actions": "GET /v1/admin/actions",
        "GET /v1/admin/policy": "GET /v1/admin/policy",
        "POST /v1/admin/policy/plan": "POST /v1/admin/policy/plan",
        "PUT /v1/admin/policy": "PUT /v1/admin/policy",
        "GET /v1/admin/policy/versions": "GET /v1/admin/policy/versions",
        "GET /v1/admin/items/{id}/explain": "GET /v1/admin/items/{item_id}/explain",
    }
    assert set(rows_) == set(MATRIX) == set(ENDPOINTS)
    # the unauthenticated probes (tests/integration/test_health.py) are outside the matrix
    assert documented - {"GET /v1/health", "GET /livez", "GET /readyz"} == set(rows_.values())


def principal_column(endpoint: Endpoint) -> str:
    return "admin" if endpoint.principal == ADMIN else "own"


def token_for(scene: Scene, endpoint: Endpoint, caller: str) -> str | None:
    """The token the given kind of caller sends (not for replayed-token, which needs two calls)."""
    world, who = scene.world, endpoint.principal
    if caller in ("own", "other"):
        return world.token(endpoint.own if caller == "own" else endpoint.other)
    if caller == "admin":
        return world.token(ADMIN)
    if caller == "no-token":
        return None
    if caller == "bad-signature":
        return signed(claims(world, who), ApiPrivateKey.generate(), kid=api_key(world, who).key_id)
    if caller == "revoked-key":
        revoke(world, api_key(world, who).key_id)
        return world.token(who)
    if caller == "expired-token":
        return mint_token(api_key(world, who), who, AUDIENCE, now=world.clock.ms / 1000 - 3600)
    raise AssertionError(caller)


@pytest.mark.parametrize(
    ("route", "caller"),
    [pytest.param(route, caller, id=f"{route} as {caller}") for route in MATRIX for caller in CALLERS],
)
def test_access_matrix(scene: Scene, route: str, caller: str) -> None:
    world, endpoint = scene.world, ENDPOINTS[route]
    status, code = expected(route, caller)
    call = endpoint.call(scene)

    if caller == "replayed-token":
        who = endpoint.principal
        token: str | None = world.token(who)
        first = send(world, call, token)
        first_status, first_code = expected(route, principal_column(endpoint))
        assert first.status_code == first_status, first.text
        if first_code is None:
            endpoint.check(scene, who, first)
    else:
        who = {"own": endpoint.own, "other": endpoint.other, "admin": ADMIN}.get(caller, endpoint.principal)
        token = token_for(scene, endpoint, caller)

    before = snapshot(world)
    response = send(world, call, token)
    if code is None:
        assert response.status_code == status, response.text
        endpoint.check(scene, who, response)
        if not endpoint.writes:
            assert snapshot(world) == before
    else:
        assert_problem(response, status, code)
        assert snapshot(world) == before, f"{route} as {caller} was refused but changed the database"


# --- items: existence does not leak ------------------------------------------------------------


def test_items_are_visible_to_their_originator_and_recipients_only(scene: Scene) -> None:
    world = scene.world
    for reader in ("KOR", "USA", "JPN"):
        r = world.client.get(f"/v1/items/{scene.item_id}", headers=world.auth(reader))
        assert r.status_code == 200 and r.content == scene.envelope, reader
    for outsider in ("NZL", "GBR"):
        assert_problem(
            world.client.get(f"/v1/items/{scene.item_id}", headers=world.auth(outsider)), 404, "unknown-item"
        )
    # KOR neither sent nor received FRA's item
    assert_problem(
        world.client.get(f"/v1/items/{scene.fra_item_id}", headers=world.auth("KOR")), 404, "unknown-item"
    )
    # only the originator (and an admin) see delivery state; recipients do not
    for recipient in ("USA", "JPN"):
        assert_problem(
            world.client.get(f"/v1/items/{scene.item_id}/status", headers=world.auth(recipient)),
            404,
            "unknown-item",
        )


@pytest.mark.parametrize("suffix", ["", "/status"])
def test_another_countrys_item_looks_exactly_like_a_missing_one(scene: Scene, suffix: str) -> None:
    world = scene.world
    missing_id = scene.item_id[:-12] + "0" * 12
    assert missing_id != scene.item_id
    foreign = assert_problem(
        world.client.get(f"/v1/items/{scene.item_id}{suffix}", headers=world.auth("NZL")), 404, "unknown-item"
    )
    missing = assert_problem(
        world.client.get(f"/v1/items/{missing_id}{suffix}", headers=world.auth("NZL")), 404, "unknown-item"
    )
    assert json.dumps(foreign).replace(scene.item_id, "ID") == json.dumps(missing).replace(missing_id, "ID")


# --- suspension --------------------------------------------------------------------------------

COUNTRY_ROUTES = [route for route, endpoint in ENDPOINTS.items() if endpoint.principal != ADMIN]


@pytest.mark.parametrize("route", COUNTRY_ROUTES)
def test_a_suspended_country_is_refused_from_the_next_request_on(scene: Scene, route: str) -> None:
    world, endpoint = scene.world, ENDPOINTS[route]
    who = endpoint.own
    minted_before = world.token(who)
    world.suspend(who)

    call = endpoint.call(scene)
    before = snapshot(world)
    for token in (minted_before, world.token(who)):
        assert_problem(send(world, call, token), 403, "suspended")
    assert snapshot(world) == before

    world.suspend(who, "active")
    call = endpoint.call(scene)  # governance calls are made on the directory's current head
    again = send(world, call, world.token(who))
    assert again.status_code == expected(route, "own")[0], again.text
    endpoint.check(scene, who, again)


def test_a_suspended_country_is_refused_on_admin_routes_too(scene: Scene) -> None:
    world = scene.world
    world.suspend("KOR")
    assert_problem(world.client.get("/v1/admin/countries", headers=world.auth("KOR")), 403, "suspended")


# --- token rules -------------------------------------------------------------------------------


def _alg_none(world: World, who: str) -> str:
    return jwt.encode(claims(world, who), None, algorithm="none", headers={"kid": api_key(world, who).key_id})


def _alg_hs256(world: World, who: str) -> str:
    # the classic confusion: the (public) key bytes used as an HMAC secret
    key = api_key(world, who)
    return jwt.encode(claims(world, who), key.public_key.raw, algorithm="HS256", headers={"kid": key.key_id})


def _with(**changes: Any) -> Callable[[World, str], str]:
    def build(world: World, who: str) -> str:
        payload = {**claims(world, who), **changes}
        return signed(
            {k: v for k, v in payload.items() if v is not None},
            api_key(world, who),
            api_key(world, who).key_id,
        )

    return build


def _lifetime(seconds: int) -> Callable[[World, str], str]:
    def build(world: World, who: str) -> str:
        return signed(claims(world, who, lifetime_s=seconds), api_key(world, who), api_key(world, who).key_id)

    return build


def _other_issuer(world: World, who: str) -> str:
    return _with(iss="USA" if who == ADMIN else ADMIN)(world, who)


def _from_the_future(world: World, who: str) -> str:
    now = world.clock.ms // 1000 + 120  # beyond the 30 s leeway
    return _with(iat=now, exp=now + 60)(world, who)


def _kid(pick: Callable[[World, str], str | None]) -> Callable[[World, str], str]:
    def build(world: World, who: str) -> str:
        return signed(claims(world, who), api_key(world, who), pick(world, who))

    return build


TOKEN_VARIANTS: dict[str, tuple[Callable[[World, str], str], str]] = {
    "alg none": (_alg_none, "bad-token-algorithm"),
    "alg HS256 keyed with the public key": (_alg_hs256, "bad-token-algorithm"),
    "wrong audience": (_with(aud="another-broker"), "wrong-audience"),
    "no audience": (_with(aud=None), "invalid-token"),
    "issuer is someone else": (_other_issuer, "wrong-issuer"),
    "no issuer": (_with(iss=None), "invalid-token"),
    "lifetime 301 s": (_lifetime(301), "token-lifetime"),
    "lifetime 1 day": (_lifetime(86_400), "token-lifetime"),
    "no jti": (_with(jti=None), "invalid-token"),
    "jti of 7 characters": (_with(jti="abcdefg"), "invalid-token"),
    "jti not a string": (_with(jti=12345678), "invalid-token"),
    "no exp": (_with(exp=None), "invalid-token"),
    "no iat": (_with(iat=None), "invalid-token"),
    "issued in the future": (_from_the_future, "invalid-token"),
    "no kid": (_kid(lambda w, who: None), "unknown-key"),
    "unknown kid": (_kid(lambda w, who: "0" * 32), "unknown-key"),
    "kid of a signing key": (_kid(lambda w, who: w.members["KOR"].signing.key_id), "unknown-key"),
    "kid of another member's API key": (_kid(lambda w, who: w.members["NZL"].api.key_id), "invalid-token"),
    "not a JWT": (lambda w, who: "not-a-jwt", "malformed-token"),
}

# The write each variant tries: nothing of it may land.
PROBES: dict[str, tuple[str, Callable[[World], Call]]] = {
    "KOR submits": (
        "KOR",
        lambda w: Call(
            "POST", "/v1/items", content=w.seal("KOR", ["USA"]), headers={"Content-Type": ENVELOPE}
        ),
    ),
    "admin enrols": (
        ADMIN,
        lambda w: Call(
            "POST",
            "/v1/admin/countries",
            json={"code": "SWE", "name": "Sweden", "accreditation": "RESTRICTED"},
        ),
    ),
}


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("variant", TOKEN_VARIANTS)
def test_tokens_breaking_a_rule_are_refused_with_its_type(world: World, variant: str, probe: str) -> None:
    build, code = TOKEN_VARIANTS[variant]
    who, make_call = PROBES[probe]
    before = snapshot(world)
    assert_problem(send(world, make_call(world), build(world, who)), 401, code)
    assert snapshot(world) == before


@pytest.mark.parametrize(
    "authorization", ["", "Bearer", "Bearer ", "Basic a29yOnNlY3JldA==", "Token abc", "bearer"]
)
def test_no_bearer_token_is_missing_token(world: World, authorization: str) -> None:
    r = world.client.get("/v1/inbox", headers={"Authorization": authorization})
    assert_problem(r, 401, "missing-token")


@pytest.mark.parametrize("who", ["KOR", ADMIN])
def test_the_longest_allowed_lifetime_is_accepted(world: World, who: str) -> None:
    r = world.client.get("/v1/directory", headers=world.auth(who, lifetime_s=300))
    assert r.status_code == 200, r.text


def test_a_token_is_single_use_even_across_endpoints(world: World) -> None:
    token = world.token("USA")
    assert world.client.get("/v1/inbox", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert_problem(
        world.client.get("/v1/directory", headers={"Authorization": f"Bearer {token}"}), 401, "replayed-token"
    )


def test_a_token_refused_before_its_jti_is_recorded_can_not_be_replayed_later(world: World) -> None:
    """A forged token claiming KOR's kid must not burn the jti KOR will use."""
    payload = claims(world, "KOR")
    forged = signed(payload, ApiPrivateKey.generate(), kid=world.members["KOR"].api.key_id)
    assert_problem(
        world.client.get("/v1/directory", headers={"Authorization": f"Bearer {forged}"}), 401, "invalid-token"
    )
    genuine = signed(payload, world.members["KOR"].api, kid=world.members["KOR"].api.key_id)
    assert (
        world.client.get("/v1/directory", headers={"Authorization": f"Bearer {genuine}"}).status_code == 200
    )


def test_a_token_past_its_expiry_on_the_broker_clock_is_refused(world: World) -> None:
    """The broker judges `exp` by its own clock, like every other time it checks."""
    token = world.token("USA")  # iat = now, exp = now + 120 s
    world.clock.ms += (LIFETIME_S + LEEWAY_S + 1) * 1000
    before = snapshot(world)
    assert_problem(
        world.client.get("/v1/inbox", headers={"Authorization": f"Bearer {token}"}), 401, "expired-token"
    )
    assert snapshot(world) == before


def test_a_token_minted_on_the_broker_clock_is_accepted_after_time_moves(world: World) -> None:
    world.clock.ms += 10 * 60 * 1000
    r = world.client.get("/v1/inbox", headers=world.auth("USA"))
    assert r.status_code == 200, r.text


def test_revoking_a_key_leaves_the_countrys_other_keys_and_other_countries_working(scene: Scene) -> None:
    world = scene.world
    revoke(world, world.members["USA"].api.key_id)
    assert_problem(world.client.get("/v1/inbox", headers=world.auth("USA")), 401, "unknown-key")
    assert world.client.get("/v1/inbox", headers=world.auth("JPN")).status_code == 200
    # USA's items stay readable to it once it has a new API key
    fresh = ApiPrivateKey.generate()
    world.rotate_own("USA", fresh.public_key)
    r = world.client.get(
        "/v1/inbox",
        headers={"Authorization": f"Bearer {mint_token(fresh, 'USA', AUDIENCE, now=world.clock.ms / 1000)}"},
    )
    assert r.status_code == 200 and [d["item_id"] for d in r.json()["deliveries"]] == [scene.item_id]
