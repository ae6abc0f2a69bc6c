"""The member-governed directory: who must sign what, and what every failure says."""

from __future__ import annotations

import pytest

from msmt.core import KeyKind, canonical
from msmt.core import governance as gov
from msmt.core.errors import (
    BadStatementSignature,
    BrokenChain,
    InvalidStatement,
    MalformedStatement,
    QuorumNotMet,
)

from .governance_fixtures import FOUNDERS, T0, by, keys_of, member, root

QUORUM = ["KOR", "USA", "JPN", "FRA", "GBR", "DEU", "ITA", "NLD"]  # 8 of 11 = ceil(2/3 * 11)


@pytest.fixture(scope="module")
def state() -> gov.DirectoryState:
    return gov.genesis(root())


def test_genesis_needs_every_founder() -> None:
    state = gov.genesis(root())
    assert state.seq == 0 and sorted(state.members) == sorted(FOUNDERS)
    assert state.quorum.size(11) == 8
    signed = gov.root_statement({c: member(c) for c in FOUNDERS}, T0)
    data = by(signed, FOUNDERS[:-1])
    with pytest.raises(QuorumNotMet, match="NZL must sign"):
        gov.genesis(data)


def test_a_changed_byte_breaks_the_root() -> None:
    data = bytearray(root())
    index = data.index(b'"name":"KOR"') + len('"name":"')
    data[index : index + 3] = b"KOZ"
    with pytest.raises(BadStatementSignature, match="does not verify"):
        gov.genesis(bytes(data))


def test_signatures_must_be_sorted_and_canonical() -> None:
    value = canonical.decode(root())
    value["signatures"].reverse()
    with pytest.raises(MalformedStatement, match="sorted"):
        gov.parse_entry(canonical.encode(value))


def test_own_encryption_rotation_needs_only_the_country(state: gov.DirectoryState) -> None:
    new = keys_of("KOR", 1).encryption.public_key
    signed = gov.rotate_key(state, "KOR", new, T0 + 1000, overlap_ms=500)
    after = gov.apply(state, by(signed, ["KOR"]))
    kor = after.members["KOR"]
    assert kor.current(KeyKind.ENCRYPTION, T0 + 1000).key_id == new.key_id  # type: ignore[union-attr]
    old = kor.key(keys_of("KOR").encryption.key_id)
    assert old is not None and old.valid_until_ms == T0 + 1500
    with pytest.raises(QuorumNotMet, match="KOR must sign with its current signing key"):
        gov.apply(state, by(signed, ["USA"]))


def test_another_country_cannot_rotate_my_key_even_with_a_quorum(state: gov.DirectoryState) -> None:
    signed = gov.rotate_key(state, "USA", keys_of("USA", 1).encryption.public_key, T0 + 1000)
    with pytest.raises(QuorumNotMet, match="USA must sign"):
        gov.apply(state, by(signed, [c for c in FOUNDERS if c != "USA"]))


def test_new_signing_key_must_prove_possession(state: gov.DirectoryState) -> None:
    new = keys_of("KOR", 1).signing
    signed = gov.rotate_key(state, "KOR", new.public_key, T0 + 1000)
    with pytest.raises(QuorumNotMet, match=f"KOR must sign with its key {new.key_id}"):
        gov.apply(state, by(signed, ["KOR"]))
    entry = gov.Entry(signed, (gov.sign(signed, "KOR", keys_of("KOR").signing), gov.sign(signed, "KOR", new)))
    after = gov.apply(state, entry.to_bytes())
    assert after.members["KOR"].current(KeyKind.SIGNING, T0 + 1000).key_id == new.key_id  # type: ignore[union-attr]


def test_enrolment_needs_a_quorum_and_the_newcomer(state: gov.DirectoryState) -> None:
    signed = gov.statement(state, "enrol-member", T0 + 1000, country="SWE", member=member("SWE"))
    with pytest.raises(QuorumNotMet) as err:
        gov.apply(state, by(signed, [*QUORUM[:7], "SWE"]))
    assert "8 of the 11 active members must sign, 7 did" in err.value.detail
    assert "not yet: AUS, CAN, NLD, NZL" in err.value.detail
    with pytest.raises(QuorumNotMet, match="SWE must sign"):
        gov.apply(state, by(signed, QUORUM))
    after = gov.apply(state, by(signed, [*QUORUM, "SWE"]))
    assert after.members["SWE"].active and after.quorum.size(len(after.active_members())) == 8


def test_a_signature_by_an_unknown_key_is_refused(state: gov.DirectoryState) -> None:
    signed = gov.statement(state, "update-member", T0 + 1000, country="NZL", changes={"status": "suspended"})
    entry = gov.Entry(signed, tuple(gov.sign(signed, c, keys_of(c).signing) for c in QUORUM[:7]))
    forged = entry.with_signature(gov.sign(signed, "NLD", keys_of("NLD", 5).signing))
    with pytest.raises(BadStatementSignature, match="not a usable signing key of NLD"):
        gov.apply(state, forged.to_bytes())


def test_suspension_by_quorum(state: gov.DirectoryState) -> None:
    signed = gov.statement(state, "update-member", T0 + 1000, country="NZL", changes={"status": "suspended"})
    after = gov.apply(state, by(signed, QUORUM))
    assert not after.members["NZL"].active
    assert after.quorum.size(len(after.active_members())) == 7  # 2/3 of the 10 still active
    rotate = gov.rotate_key(after, "NZL", keys_of("NZL", 1).api.public_key, T0 + 2000)
    with pytest.raises(InvalidStatement, match="suspended"):
        gov.apply(after, by(rotate, ["NZL"]))


def test_recovery_replaces_every_key_by_quorum(state: gov.DirectoryState) -> None:
    fresh = keys_of("GBR", 1)
    keys = {
        "signing": canonical.b64encode(fresh.signing.public_key.raw),
        "encryption": canonical.b64encode(fresh.encryption.public_key.raw),
        "api": canonical.b64encode(fresh.api.public_key.raw),
    }
    signed = gov.statement(state, "recover-member", T0 + 1000, country="GBR", keys=keys)
    with pytest.raises(QuorumNotMet, match="GBR must sign"):
        gov.apply(state, by(signed, QUORUM))
    after = gov.apply(state, _with_new(signed, fresh))
    gbr = after.members["GBR"]
    assert gbr.current(KeyKind.ENCRYPTION, T0 + 1000).key_id == fresh.encryption.key_id  # type: ignore[union-attr]
    old = gbr.key(keys_of("GBR").signing.key_id)
    assert old is not None and old.revoked_ms == T0 + 1000
    assert state.signing_key("GBR", old.key_id, T0 + 999) is not None  # old items stay verifiable
    assert after.signing_key("GBR", old.key_id, T0 + 1000) is None


def _with_new(signed: dict, fresh: object) -> bytes:
    voters = ["KOR", "USA", "JPN", "FRA", "DEU", "ITA", "NLD", "CAN"]
    entry = gov.Entry(signed, tuple(gov.sign(signed, c, keys_of(c).signing) for c in voters))
    return entry.with_signature(gov.sign(signed, "GBR", fresh.signing)).to_bytes()  # type: ignore[attr-defined]


def test_forced_revocation_by_quorum(state: gov.DirectoryState) -> None:
    key_id = keys_of("ITA").api.key_id
    signed = gov.statement(state, "force-revoke-key", T0 + 1000, country="ITA", key_id=key_id)
    with pytest.raises(QuorumNotMet):
        gov.apply(state, by(signed, ["ITA"]))
    after = gov.apply(state, by(signed, QUORUM))
    assert after.members["ITA"].current(KeyKind.API, T0 + 1000) is None


def test_chain_position_and_previous_hash_are_checked(state: gov.DirectoryState) -> None:
    signed = gov.rotate_key(state, "KOR", keys_of("KOR", 1).api.public_key, T0 + 1000)
    wrong_prev = {**signed, "prev": "f" * 64}
    with pytest.raises(BrokenChain, match="names ffff"):
        gov.apply(state, by(wrong_prev, ["KOR"]))
    wrong_seq = {**signed, "seq": 5}
    with pytest.raises(BrokenChain, match="expected entry 1"):
        gov.apply(state, by(wrong_seq, ["KOR"]))
    backdated = {**signed, "created_ms": T0 - 1}
    with pytest.raises(InvalidStatement, match="dated before"):
        gov.apply(state, by(backdated, ["KOR"]))


def test_a_key_cannot_belong_to_two_members(state: gov.DirectoryState) -> None:
    signed = gov.rotate_key(state, "KOR", keys_of("USA").encryption.public_key, T0 + 1000)
    with pytest.raises(InvalidStatement, match="already belongs to USA"):
        gov.apply(state, by(signed, ["KOR"]))


def test_root_rotation_needs_old_and_new_quorums(state: gov.DirectoryState) -> None:
    members = {c: member(c) for c in FOUNDERS if c != "NZL"}
    members["SWE"] = member("SWE")
    signed = gov.root_statement(members, T0 + 1000, version=2, after=state)
    with pytest.raises(QuorumNotMet, match="members of the new root"):
        gov.apply(state, by(signed, ["KOR", "USA", "JPN", "FRA", "GBR", "DEU", "ITA", "NZL"]))
    after = gov.apply(state, by(signed, [*QUORUM, "SWE"]))
    assert after.root_version == 2 and "NZL" not in after.members and "SWE" in after.members


def test_verify_chain_replays_everything(state: gov.DirectoryState) -> None:
    first = by(gov.rotate_key(state, "KOR", keys_of("KOR", 1).encryption.public_key, T0 + 1000), ["KOR"])
    middle = gov.apply(state, first)
    second = by(
        gov.statement(middle, "enrol-member", T0 + 2000, country="SWE", member=member("SWE")),
        [*QUORUM, "SWE"],
    )
    final = gov.verify_chain([root(), first, second])
    assert final.seq == 2 and "SWE" in final.members
    with pytest.raises(BrokenChain):
        gov.verify_chain([root(), second])


def test_a_new_key_proves_possession_but_does_not_vote(state: gov.DirectoryState) -> None:
    fresh = keys_of("GBR", 1)
    keys = {
        "signing": canonical.b64encode(fresh.signing.public_key.raw),
        "encryption": canonical.b64encode(fresh.encryption.public_key.raw),
        "api": canonical.b64encode(fresh.api.public_key.raw),
    }
    signed = gov.statement(state, "recover-member", T0 + 1000, country="GBR", keys=keys)
    seven = ["KOR", "USA", "JPN", "FRA", "DEU", "ITA", "NLD"]
    entry = gov.Entry(signed, tuple(gov.sign(signed, c, keys_of(c).signing) for c in seven))
    entry = entry.with_signature(gov.sign(signed, "GBR", fresh.signing))
    with pytest.raises(QuorumNotMet, match="8 of the 11 active members must sign, 7 did"):
        gov.apply(state, entry.to_bytes())


def test_dates_must_be_plausible_and_not_in_the_future(state: gov.DirectoryState) -> None:
    signed = gov.rotate_key(state, "KOR", keys_of("KOR", 1).api.public_key, 2**50)
    with pytest.raises(MalformedStatement, match="beyond any plausible date"):
        gov.apply(state, by(signed, ["KOR"]))
    soon = gov.rotate_key(state, "KOR", keys_of("KOR", 1).api.public_key, T0 + 3_600_000)
    entry = gov.parse_entry(by(soon, ["KOR"]))
    with pytest.raises(InvalidStatement, match="dated in the future"):
        gov.check_date(entry, T0, 300_000)
    gov.check_date(entry, T0 + 3_600_000, 0)


def test_malformed_types_are_coded_errors_not_crashes(state: gov.DirectoryState) -> None:
    signed = gov.rotate_key(state, "KOR", keys_of("KOR", 1).api.public_key, T0 + 1)
    for bad in (
        {**signed, "type": ["rotate-key"]},
        {**signed, "kind": {"a": 1}},
        {**signed, "retire": "X" * 32},
    ):
        with pytest.raises(MalformedStatement):
            gov.apply(state, by(bad, ["KOR"]))


def test_all_cannot_be_enrolled(state: gov.DirectoryState) -> None:
    signed = gov.statement(state, "enrol-member", T0 + 1000, country="ALL", member=member("SWE"))
    with pytest.raises(MalformedStatement, match="ALL is reserved"):
        gov.apply(state, by(signed, QUORUM))


def test_a_root_rotation_cannot_hand_a_key_to_another_member(state: gov.DirectoryState) -> None:
    members = {c: member(c) for c in FOUNDERS}
    members["NZL"] = {
        **members["NZL"],
        "keys": {**members["NZL"]["keys"], "api": members["KOR"]["keys"]["api"]},
    }
    signed = gov.root_statement(members, T0 + 1000, version=2, after=state)
    with pytest.raises(InvalidStatement, match="more than one member"):
        gov.apply(state, by(signed, QUORUM))


def test_a_member_new_in_a_rotated_root_proves_possession(state: gov.DirectoryState) -> None:
    members = {**{c: member(c) for c in FOUNDERS}, "SWE": member("SWE")}
    signed = gov.root_statement(members, T0 + 1000, version=2, after=state)
    with pytest.raises(QuorumNotMet, match="SWE must sign"):
        gov.apply(state, by(signed, QUORUM))
    assert gov.apply(state, by(signed, [*QUORUM, "SWE"])).root_version == 2
