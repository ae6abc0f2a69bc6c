"""A hostile operator against the member-governed directory, with a real broker process and
unmodified clients: an admin (through the API) or whoever can write the database tries to
give a member a key, enrol a sock puppet, forge an item, roll back or fork the directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from broker.store.db import make_engine
from msmt.agency import AgencyKeys
from msmt.auth import mint_token
from msmt.client import Client
from msmt.core import (
    ApiPrivateKey,
    EncryptionPrivateKey,
    KeyKind,
    Markings,
    SigningPrivateKey,
    canonical,
    public_key_document,
    seal,
)
from msmt.core import governance as gov
from msmt.core.errors import (
    BadStatementSignature,
    DirectoryFork,
    DirectoryRollback,
    EnvelopeError,
    ForeignOwnKey,
    GovernanceError,
    QuorumNotMet,
)
from msmt.trust import TrustStore

from ..integration.conftest import _KEYS, ADMIN_KEY, AUDIENCE, bootstrap, postgresql_schema
from .servers import broker_process

MARKINGS = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])
G7_ONLY = Markings.create("RESTRICTED", "AMBER", ["G7"], topics=["maritime"])
QUORUM = ["KOR", "USA", "JPN", "FRA", "GBR", "DEU", "ITA", "NLD"]


@dataclass
class Deployment:
    url: str
    base: str
    root: bytes
    tmp: Path

    def client(
        self, code: str, keys: AgencyKeys | None = None, trust: TrustStore | None = None, **options: Any
    ) -> Client:
        return Client(
            self.base,
            keys or _KEYS[code],
            trust=trust or TrustStore.pin(self.root),
            audience=AUDIENCE,
            backoff_s=0.01,
            directory_ttl_s=0,
            **options,
        )

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = mint_token(ADMIN_KEY, "admin:alice", AUDIENCE)
        return httpx.request(method, self.base + path, headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def sql(self, statement: str, **params: Any) -> list[Any]:
        engine = make_engine(self.url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()

    def count(self, table: str) -> int:
        return int(self.sql(f"SELECT count(*) FROM {table}")[0][0])


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    def run(url: str) -> Iterator[Deployment]:
        import time

        bootstrap(url, int(time.time() * 1000))
        engine = make_engine(url)
        with engine.connect() as conn:
            root = bytes(conn.execute(text("SELECT data FROM directory_entries WHERE seq = 0")).scalar_one())
        engine.dispose()
        with broker_process(url, AUDIENCE, tmp_path / "broker.log") as base:
            yield Deployment(url, base, root, tmp_path)

    if request.param == "sqlite":
        yield from run(f"sqlite:///{tmp_path / 'broker.db'}")
    else:
        with postgresql_schema() as url:
            yield from run(url)


def _forge_entry(d: Deployment, data: bytes, seq: int, country: str) -> None:
    """What a database operator can do: write a directory entry row directly."""
    d.sql(
        "INSERT INTO directory_entries (seq, type, country, entry_hash, data, created_ms, applied_ms) "
        "VALUES (:seq, 'rotate-key', :country, :hash, :data, 0, 0)",
        seq=seq,
        country=country,
        hash=gov.entry_hash(data),
        data=data,
    )


# --- keys: neither the admin nor the database operator can give a member a key ----------------


def test_the_admin_api_cannot_give_a_member_a_key(deployment: Deployment) -> None:
    admins_key = EncryptionPrivateKey.generate()
    r = deployment.admin(
        "POST", "/v1/admin/keys", json=json.loads(public_key_document("USA", admins_key.public_key))
    )
    assert r.status_code == 403 and r.json()["type"].endswith("governed-by-members")
    assert deployment.count("keys") == 3 * 11 + 1  # the members' 33 and the admin's own
    with deployment.client("KOR") as kor, deployment.client("USA") as usa:
        receipt = kor.send(b"for USA only", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        (delivery,) = usa.inbox().deliveries
        assert usa.open(delivery).payload == b"for USA only"
    stored = bytes(deployment.sql("SELECT envelope FROM items WHERE item_id = :i", i=receipt.item_id)[0][0])
    assert admins_key.key_id.encode() not in stored


def test_a_key_row_written_into_the_database_is_never_used(deployment: Deployment) -> None:
    """The operator inserts an encryption key for USA and a signing + API key for KOR."""
    operator_enc, operator_sig, operator_api = (
        EncryptionPrivateKey.generate(),
        SigningPrivateKey.generate(),
        ApiPrivateKey.generate(),
    )
    for owner, kind, key in (
        ("USA", "encryption", operator_enc.public_key),
        ("KOR", "signing", operator_sig.public_key),
        ("KOR", "api", operator_api.public_key),
    ):
        deployment.sql(
            "INSERT INTO keys (key_id, owner, kind, public_key, valid_from_ms, created_ms) "
            "VALUES (:id, :owner, :kind, :raw, 0, 0)",
            id=key.key_id,
            owner=owner,
            kind=kind,
            raw=key.raw,
        )
    deployment.sql("UPDATE registry_state SET version = version + 1")

    # the broker does not authenticate the operator as KOR with the inserted API key
    token = mint_token(operator_api, "KOR", AUDIENCE)
    r = httpx.get(deployment.base + "/v1/inbox", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401

    # KOR's client seals to USA's real key only; the operator's key never appears
    with deployment.client("KOR") as kor, deployment.client("USA") as usa:
        now_ms = kor.directory().state.updated_ms + 10**9
        assert kor.directory().encryption_key("USA", now_ms).key_id == _KEYS["USA"].encryption.key_id
        receipt = kor.send(
            b"to the real USA", content_type="text/plain", markings=MARKINGS, recipients=["USA"]
        )
        stored = bytes(
            deployment.sql("SELECT envelope FROM items WHERE item_id = :i", i=receipt.item_id)[0][0]
        )
        assert operator_enc.key_id.encode() not in stored
        assert _KEYS["USA"].encryption.key_id.encode() in stored

        # an item "from KOR" signed with the operator's key, written straight into the store
        forged = seal(
            b"forged",
            content_type="text/plain",
            markings=MARKINGS,
            recipients=[("USA", _KEYS["USA"].encryption.public_key)],
            originator="KOR",
            signing_key=operator_sig,
        )
        _insert_item(deployment, forged, "USA")
        deliveries = usa.inbox().deliveries
        assert deliveries[0].item_id == receipt.item_id
        assert usa.open(deliveries[0]).payload == b"to the real USA"
        with pytest.raises(EnvelopeError) as refused:
            usa.open(deliveries[1])
        assert refused.value.code in ("unknown-signing-key", "bad-signature")


def _insert_item(d: Deployment, envelope: bytes, recipient: str) -> None:
    from msmt.core import parse

    header = parse(envelope).header
    size = d.count("log_entries")
    seq = int(d.sql("SELECT last_seq FROM inbox_counters WHERE recipient = :r", r=recipient)[0][0]) + 1
    d.sql(
        "INSERT INTO items (item_id, originator, originator_key_id, created_ms, received_ms, classification, tlp, "
        "content_type, size, envelope_sha256, envelope, log_index, submitted_with_key, recipients) VALUES (:id, :o, :k, :c, :c, "
        "'RESTRICTED', 'AMBER', 'text/plain', :n, 'x', :e, :li, 'x', :rc)",
        id=header.item_id,
        o=header.originator,
        k=header.originator_key_id,
        c=header.created_ms,
        n=len(envelope),
        e=envelope,
        li=size + 1000,
        rc=recipient,
    )
    d.sql(
        "INSERT INTO deliveries (item_id, recipient, seq, state, created_ms) VALUES (:i, :r, :s, 'pending', 0)",
        i=header.item_id,
        r=recipient,
        s=seq,
    )
    d.sql("UPDATE inbox_counters SET last_seq = :s WHERE recipient = :r", s=seq, r=recipient)


def test_a_forged_directory_entry_is_refused_and_nothing_is_sealed(deployment: Deployment) -> None:
    """The operator writes a rotation of USA's encryption key into the chain, signed by a key of its own."""
    with deployment.client("KOR") as kor:
        state = kor.directory().state
        operator_key = EncryptionPrivateKey.generate()
        signed = gov.rotate_key(state, "USA", operator_key.public_key, state.updated_ms + 1)
        forged = gov.signed_entry(signed, [("USA", SigningPrivateKey.generate())])
        _forge_entry(deployment, forged, state.seq + 1, "USA")
        items = deployment.count("items")
        with pytest.raises(BadStatementSignature, match="not a usable signing key of USA"):
            kor.send(b"secret", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        assert deployment.count("items") == items
        assert kor.trust.state.seq == state.seq  # the verified copy did not move


# --- membership -----------------------------------------------------------------------------


def test_a_sock_puppet_receives_nothing_without_a_quorum_and_does_with_one(deployment: Deployment) -> None:
    puppet = AgencyKeys(
        "SWE", SigningPrivateKey.generate(), EncryptionPrivateKey.generate(), ApiPrivateKey.generate()
    )
    # through the admin API: refused
    r = deployment.admin(
        "POST",
        "/v1/admin/countries",
        json={"code": "SWE", "name": "Sweden", "accreditation": "SECRET", "groups": ["G7"]},
    )
    assert r.status_code == 403
    # straight into the database, with a G7 membership and keys
    deployment.sql(
        "INSERT INTO countries (code, name, status, accreditation, created_ms) VALUES ('SWE', 'S', 'active', 'SECRET', 0)"
    )
    deployment.sql("INSERT INTO group_members (group_name, country) VALUES ('G7', 'SWE')")
    deployment.sql("INSERT INTO inbox_counters (recipient, last_seq) VALUES ('SWE', 0)")
    for kind, key in (("signing", puppet.signing), ("encryption", puppet.encryption), ("api", puppet.api)):
        deployment.sql(
            "INSERT INTO keys (key_id, owner, kind, public_key, valid_from_ms, created_ms) VALUES (:i, 'SWE', :k, :r, 0, 0)",
            i=key.key_id,
            k=kind,
            r=key.public_key.raw,
        )
    # and a directory entry enrolling it, signed only by itself (no quorum)
    with deployment.client("KOR") as kor:
        state = kor.directory().state
        member = gov.member_body(
            "Sweden",
            "SECRET",
            ["G7"],
            {
                KeyKind.SIGNING: puppet.signing.public_key,
                KeyKind.ENCRYPTION: puppet.encryption.public_key,
                KeyKind.API: puppet.api.public_key,
            },
        )
        signed = gov.statement(state, "enrol-member", state.updated_ms + 1, country="SWE", member=member)
        _forge_entry(deployment, gov.signed_entry(signed, [("SWE", puppet.signing)]), state.seq + 1, "SWE")
        deployment.sql("UPDATE registry_state SET version = version + 1")
        with pytest.raises(QuorumNotMet, match="8 of the 11 active members must sign, 0 did"):
            kor.send(b"g7", content_type="text/plain", markings=G7_ONLY)
        # the operator removes the entry again: KOR sends to the G7 it verified, never to SWE
        deployment.sql("DELETE FROM directory_entries WHERE seq = :s", s=state.seq + 1)
        receipt = kor.send(b"g7", content_type="text/plain", markings=G7_ONLY)
        assert "SWE" not in receipt.recipients and set(receipt.recipients) == {
            "USA",
            "JPN",
            "FRA",
            "GBR",
            "DEU",
            "ITA",
            "CAN",
        }
    token = mint_token(puppet.api, "SWE", AUDIENCE)
    assert (
        httpx.get(deployment.base + "/v1/inbox", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )
    assert deployment.count("deliveries WHERE recipient = 'SWE'") == 0

    # with a quorum of members (and SWE's own proof of possession), SWE is a member
    deployment.sql("DELETE FROM keys WHERE owner = 'SWE'")
    deployment.sql("DELETE FROM group_members WHERE country = 'SWE'")
    with deployment.client("KOR") as kor:
        state = kor.directory().state
        signed = gov.statement(state, "enrol-member", state.updated_ms + 1, country="SWE", member=member)
        first = kor.propose(
            gov.signed_entry(signed, [("KOR", _KEYS["KOR"].signing), ("SWE", puppet.signing)])
        )
        assert first["state"] == "pending"
        for code in QUORUM[1:]:
            with deployment.client(code) as other:
                shown = other.proposal(first["id"])
                body = canonical.decode(canonical.b64decode(shown["signed"]))
                result = other.add_signature(first["id"], gov.sign(body, code, _KEYS[code].signing).to_dict())
        assert result["state"] == "applied"
        receipt = kor.send(b"g7 with sweden", content_type="text/plain", markings=G7_ONLY)
        assert "SWE" in receipt.recipients
    with deployment.client("SWE", keys=puppet) as swe:
        (delivery,) = swe.inbox().deliveries
        assert swe.open(delivery).payload == b"g7 with sweden"


# --- key lifecycle -----------------------------------------------------------------------------


def test_kor_rotates_its_encryption_key_with_no_admin(deployment: Deployment) -> None:
    with deployment.client("USA") as usa:
        before = usa.send(b"before", content_type="text/plain", markings=MARKINGS, recipients=["KOR"])
        new_key = EncryptionPrivateKey.generate()
        with deployment.client("KOR") as kor:
            state = kor.directory().state
            signed = gov.rotate_key(state, "KOR", new_key.public_key, state.updated_ms + 1)
            applied = kor.propose(gov.signed_entry(signed, [("KOR", _KEYS["KOR"].signing)]))
            assert applied["state"] == "applied" and applied["proposer"] == "KOR"
        after = usa.send(b"after", content_type="text/plain", markings=MARKINGS, recipients=["KOR"])
    actions = {
        row[0]
        for row in deployment.sql("SELECT actor FROM admin_actions WHERE action = 'directory-rotate-key'")
    }
    assert actions == {"KOR"}
    rotated = AgencyKeys(
        "KOR",
        _KEYS["KOR"].signing,
        new_key,
        _KEYS["KOR"].api,
        {_KEYS["KOR"].encryption.key_id: _KEYS["KOR"].encryption},
    )
    with deployment.client("KOR", keys=rotated) as kor:
        deliveries = {d.item_id: d for d in kor.inbox().deliveries}
        old, new = kor.open(deliveries[before.item_id]), kor.open(deliveries[after.item_id])
    assert (old.payload, new.payload) == (b"before", b"after")
    assert old.opened.header.recipient("KOR").key_id == _KEYS["KOR"].encryption.key_id  # type: ignore[union-attr]
    assert new.opened.header.recipient("KOR").key_id == new_key.key_id  # type: ignore[union-attr]


def test_a_country_that_lost_every_key_is_recovered_by_quorum(deployment: Deployment) -> None:
    fresh = AgencyKeys(
        "GBR", SigningPrivateKey.generate(), EncryptionPrivateKey.generate(), ApiPrivateKey.generate()
    )
    voters = [c for c in QUORUM if c != "GBR"] + ["CAN"]
    with deployment.client("KOR") as kor:
        state = kor.directory().state
        keys = {
            kind.value: canonical.b64encode(getattr(fresh, kind.value).public_key.raw) for kind in KeyKind
        }
        signed = gov.statement(state, "recover-member", state.updated_ms + 1, country="GBR", keys=keys)
        partial = kor.propose(gov.signed_entry(signed, [(c, _KEYS[c].signing) for c in voters[:7]]))
        assert partial["state"] == "pending"
        assert any("GBR must sign with its key" in m for m in partial["missing"])
        # the new signing key's proof of possession, carried by a member (GBR cannot log in)
        kor.add_signature(partial["id"], gov.sign(signed, "GBR", fresh.signing).to_dict())
        done = kor.add_signature(
            partial["id"], gov.sign(signed, voters[7], _KEYS[voters[7]].signing).to_dict()
        )
        assert done["state"] == "applied"
    old_token = mint_token(_KEYS["GBR"].api, "GBR", AUDIENCE)
    assert (
        httpx.get(deployment.base + "/v1/inbox", headers={"Authorization": f"Bearer {old_token}"}).status_code
        == 401
    )
    with deployment.client("USA") as usa:
        usa.send(b"welcome back", content_type="text/plain", markings=MARKINGS, recipients=["GBR"])
    with deployment.client("GBR", keys=fresh) as gbr:
        (delivery,) = gbr.inbox().deliveries
        assert gbr.open(delivery).payload == b"welcome back"


# --- history: no rollback, no fork --------------------------------------------------------------


def _rotate_api(d: Deployment, code: str) -> bytes:
    """`code` rotates its API key (a test shortcut: the new key is not kept in a key folder)."""
    with d.client(code, check_own_keys=False) as client:
        state = client.directory(refresh=True).state
        new = ApiPrivateKey.generate().public_key
        signed = gov.rotate_key(state, code, new, state.updated_ms + 1, overlap_ms=10**9)
        data = gov.signed_entry(signed, [(code, _KEYS[code].signing)])
        assert client.propose(data)["state"] == "applied"
    return data


def test_a_rolled_back_directory_is_refused(deployment: Deployment) -> None:
    with deployment.client("KOR") as kor:
        _rotate_api(deployment, "USA")
        verified = kor.directory(refresh=True).state.seq
        deployment.sql("DELETE FROM directory_entries WHERE seq = :s", s=verified)
        with pytest.raises(DirectoryRollback, match=f"already verified entry {verified}"):
            kor.directory(refresh=True)
        with pytest.raises(DirectoryRollback):
            kor.send(b"x", content_type="text/plain", markings=MARKINGS, recipients=["USA"])


def test_a_forked_directory_is_refused(deployment: Deployment) -> None:
    with deployment.client("JPN") as jpn:
        first = _rotate_api(deployment, "KOR")
        jpn.directory(refresh=True)  # JPN has verified the history with KOR's first rotation
        seq = gov.parse_entry(first).seq
        # the operator restores an older state and lets another, validly signed history grow
        deployment.sql("DELETE FROM directory_entries WHERE seq = :s", s=seq)
        _rotate_api(deployment, "USA")
        with pytest.raises(DirectoryFork, match=f"entry {seq} differs"):
            jpn.directory(refresh=True)


def test_an_admin_cannot_approve_for_a_country(deployment: Deployment) -> None:
    with deployment.client("KOR") as kor:
        state = kor.directory().state
        signed = gov.statement(
            state, "update-member", state.updated_ms + 1, country="NZL", changes={"status": "suspended"}
        )
        pending = kor.propose(gov.signed_entry(signed, [("KOR", _KEYS["KOR"].signing)]))
    # the admin relays a "signature" for USA made with a key of its own: refused, nothing changes
    forged = gov.sign(signed, "USA", SigningPrivateKey.generate()).to_dict()
    r = deployment.admin("POST", f"/v1/governance/proposals/{pending['id']}/signatures", json=forged)
    assert r.status_code == 422 and r.json()["type"].endswith("bad-statement-signature")
    shown = deployment.admin("GET", f"/v1/governance/proposals/{pending['id']}").json()
    assert shown["signers"] == ["KOR"] and shown["state"] == "pending"
    with deployment.client("NZL") as nzl:
        assert nzl.inbox().deliveries == ()


def test_the_broker_itself_ignores_an_entry_that_does_not_verify(deployment: Deployment) -> None:
    """Even the broker's own registry replays the chain: a forged row authenticates nobody."""
    puppet_api = ApiPrivateKey.generate()
    with deployment.client("KOR") as kor:
        state = kor.directory().state
    signed = gov.rotate_key(state, "NZL", puppet_api.public_key, state.updated_ms + 1)
    _forge_entry(
        deployment, gov.signed_entry(signed, [("NZL", SigningPrivateKey.generate())]), state.seq + 1, "NZL"
    )
    deployment.sql("UPDATE registry_state SET version = version + 1")
    token = mint_token(puppet_api, "NZL", AUDIENCE)
    r = httpx.get(deployment.base + "/v1/inbox", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    with pytest.raises(GovernanceError):
        TrustStore.pin(deployment.root).update(
            state.seq + 1,
            "0" * 64,
            [(e, canonical.b64decode(x)) for e, x in _served(deployment)],
        )


def _served(d: Deployment) -> list[tuple[int, str]]:
    token = mint_token(_KEYS["USA"].api, "USA", AUDIENCE)
    body = httpx.get(d.base + "/v1/directory/entries", headers={"Authorization": f"Bearer {token}"}).json()
    return [(int(e["seq"]), str(e["entry"])) for e in body["entries"]]


def test_a_key_of_ours_we_did_not_make_raises_the_alarm(deployment: Deployment) -> None:
    """Someone holding a copy of KOR's signing key rotates KOR's encryption key to one of
    theirs: every rule is met, so only KOR itself can tell. Its own client refuses to work."""
    thief_key = EncryptionPrivateKey.generate()
    with deployment.client("USA") as usa:
        state = usa.directory().state
        signed = gov.rotate_key(state, "KOR", thief_key.public_key, state.updated_ms + 1)
        assert usa.propose(gov.signed_entry(signed, [("KOR", _KEYS["KOR"].signing)]))["state"] == "applied"
    with deployment.client("KOR") as kor, pytest.raises(ForeignOwnKey, match=thief_key.key_id):
        kor.directory()
    with deployment.client("KOR") as kor, pytest.raises(ForeignOwnKey):
        kor.send(b"x", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
