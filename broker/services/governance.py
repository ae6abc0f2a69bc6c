"""The directory chain on the broker: store it, relay proposals, apply what members signed.

The broker decides nothing here. An entry is appended only when `msmt.core.governance`
finds every signature its rules require; an admin may relay a proposal or a member's
signature, but cannot add one of its own. The derived tables (`countries`,
`group_members`, country rows of `keys`) are rewritten from the verified state in the
same transaction, so SQL listings and the policy export agree with the chain.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from msmt.core import KeyKind, canonical, short_fingerprint
from msmt.core import governance as gov
from msmt.core.errors import BrokenChain, GovernanceError, MsmtError, QuorumNotMet

from ..problems import Problem, conflict, invalid, not_found
from ..store import queries
from ..store.models import Country, DirectoryEntry, GovernanceProposal, GroupMember, InboxCounter, Key
from . import log as log_service
from . import policy as policy_service

log = logging.getLogger("msmt.broker.governance")
MAX_PAGE = 1000
FUTURE_SKEW_MS = 5 * 60 * 1000


def _problem(exc: MsmtError) -> Problem:
    if isinstance(exc, BrokenChain):
        return conflict(exc.code, exc.detail)
    return invalid(exc.code, exc.detail)


# --- reading the chain -------------------------------------------------------------------


def head(session: Session) -> tuple[int, str] | None:
    row = session.execute(
        select(DirectoryEntry.seq, DirectoryEntry.entry_hash).order_by(DirectoryEntry.seq.desc()).limit(1)
    ).first()
    return None if row is None else (int(row[0]), str(row[1]))


def entries(session: Session, after: int = -1, limit: int = MAX_PAGE) -> list[tuple[int, bytes]]:
    rows = session.execute(
        select(DirectoryEntry.seq, DirectoryEntry.data)
        .where(DirectoryEntry.seq > after)
        .order_by(DirectoryEntry.seq)
        .limit(min(limit, MAX_PAGE))
    )
    return [(int(seq), bytes(data)) for seq, data in rows]


def replay(session: Session, previous: gov.DirectoryState | None) -> gov.DirectoryState | None:
    """The verified state: `previous` plus every stored entry after it that verifies.

    A stored entry that does not verify (someone wrote the database directly) ends the
    replay: the broker keeps serving the verified prefix and says so in its log.
    """
    state = previous
    after = -1 if state is None else state.seq
    while True:
        batch = entries(session, after)
        if not batch:
            return state
        for seq, data in batch:
            try:
                state = gov.genesis(data) if state is None else gov.apply(state, data)
            except GovernanceError as exc:
                log.error("directory entry %d does not verify; using the chain up to %d: %s", seq, after, exc)
                return state
            after = seq


# --- appending ---------------------------------------------------------------------------


def install_root(session: Session, actor: str, data: bytes, now_ms: int) -> dict[str, Any]:
    """Install the founders' genesis root; refused once a chain exists."""
    if head(session) is not None:
        raise conflict("directory-exists", "this broker already holds a directory; roots change by rotation")
    try:
        state = gov.genesis(data)
    except GovernanceError as exc:
        raise _problem(exc) from exc
    _append(session, actor, gov.parse_entry(data), data, None, state, now_ms)
    return {"seq": 0, "hash": state.head, "members": sorted(state.members)}


def _append(
    session: Session,
    actor: str,
    entry: gov.Entry,
    data: bytes,
    before: gov.DirectoryState | None,
    after: gov.DirectoryState,
    now_ms: int,
) -> None:
    country = entry.signed.get("country")
    session.add(
        DirectoryEntry(
            seq=after.seq,
            type=entry.type,
            country=country,
            entry_hash=after.head,
            data=data,
            created_ms=int(entry.signed["created_ms"]),
            applied_ms=now_ms,
        )
    )
    log_service.stage(session, "directory", str(after.seq), now_ms)
    changed = sorted(after.members) if entry.type == "root" else [str(country)]
    for code in changed:
        _materialize(session, after.members[code], now_ms)
    if entry.type == "root" and before is not None:
        for code in sorted(set(before.members) - set(after.members)):
            row = session.get(Country, code)
            if row is not None:
                row.status = "suspended"
    session.execute(
        update(GovernanceProposal)
        .where(GovernanceProposal.state == "pending", GovernanceProposal.seq <= after.seq)
        .values(state="stale", updated_ms=now_ms)
    )
    session.flush()
    version = queries.record_admin_action(
        session,
        actor,
        f"directory-{entry.type}",
        str(country or "root"),
        {"seq": after.seq, "hash": after.head, "signers": sorted({s.signer for s in entry.signatures})},
        now_ms,
    )
    # Membership is part of every sharing decision: keep the policy as it now stands.
    policy_service.snapshot_version(session, version, actor, f"directory-{entry.type}", now_ms)


def _materialize(session: Session, member: gov.MemberState, now_ms: int) -> None:
    row = session.get(Country, member.code)
    if row is None:
        session.add(
            Country(
                code=member.code,
                name=member.name,
                status=member.status,
                accreditation=member.accreditation,
                created_ms=now_ms,
            )
        )
        session.flush()
        session.add(InboxCounter(recipient=member.code, last_seq=0))
    else:
        row.name, row.status, row.accreditation = member.name, member.status, member.accreditation
    session.execute(delete(GroupMember).where(GroupMember.country == member.code))
    session.add_all(GroupMember(group_name=g, country=member.code) for g in member.groups)
    for key in member.keys:
        stored = session.get(Key, key.key_id)
        if stored is None:
            session.add(
                Key(
                    key_id=key.key_id,
                    owner=member.code,
                    kind=key.kind.value,
                    public_key=key.key.raw,
                    valid_from_ms=key.valid_from_ms,
                    valid_until_ms=key.valid_until_ms,
                    revoked_ms=key.revoked_ms,
                    created_ms=now_ms,
                )
            )
        else:
            stored.valid_until_ms, stored.revoked_ms = key.valid_until_ms, key.revoked_ms


# --- proposals ---------------------------------------------------------------------------


def _current(session: Session) -> gov.DirectoryState:
    state = replay(session, None)
    if state is None:
        raise conflict("no-directory", "this broker holds no directory yet: install the founders' root first")
    return state


def _check_follows(state: gov.DirectoryState, entry: gov.Entry) -> None:
    """A statement made for another head is stale: members must sign it again on this one."""
    if entry.seq != state.seq + 1 or entry.signed["prev"] != state.head:
        raise conflict(
            "stale-proposal",
            f"the directory is at entry {state.seq} ({state.head[:16]}…); this statement was made for "
            f"entry {entry.seq - 1}: make it again on the current head",
        )


def propose(session: Session, actor: str, data: bytes, now_ms: int) -> tuple[bool, dict[str, Any]]:
    """Apply `data` if its signatures suffice, else keep it as a proposal. Returns (applied, view)."""
    _lock_head(session)
    state = _current(session)
    try:
        entry = gov.parse_entry(data)
    except GovernanceError as exc:
        raise _problem(exc) from exc
    if entry.type == "root" and entry.seq == 0:
        raise conflict(
            "directory-exists", "a genesis root is installed once; propose a root rotation instead"
        )
    _check_follows(state, entry)
    pid = gov.proposal_id(entry.signed)
    existing = session.get(GovernanceProposal, pid)
    if existing is not None:
        for signature in _signatures(existing):
            if (signature.signer, signature.key_id) not in {(s.signer, s.key_id) for s in entry.signatures}:
                entry = entry.with_signature(signature)
    return _settle(session, actor, state, entry, existing, now_ms)


def add_signature(
    session: Session, actor: str, pid: str, signature: dict[str, Any], now_ms: int
) -> tuple[bool, dict[str, Any]]:
    _lock_head(session)
    proposal = session.get(GovernanceProposal, pid)
    if proposal is None:
        raise not_found("unknown-proposal", f"no proposal {pid}")
    if proposal.state != "pending":
        raise conflict(f"proposal-{proposal.state}", f"proposal {pid[:16]}… is {proposal.state}")
    state = _current(session)
    signed = canonical.decode(proposal.signed)
    entry = gov.Entry(signed, _signatures(proposal))
    _check_follows(state, entry)
    try:
        new = gov.parse_entry(canonical.encode({"signed": signed, "signatures": [signature]})).signatures[0]
    except GovernanceError as exc:
        raise _problem(exc) from exc
    return _settle(session, actor, state, entry.with_signature(new), proposal, now_ms)


def _settle(
    session: Session,
    actor: str,
    state: gov.DirectoryState,
    entry: gov.Entry,
    proposal: GovernanceProposal | None,
    now_ms: int,
) -> tuple[bool, dict[str, Any]]:
    data = entry.to_bytes()
    try:
        gov.parse_entry(data)
        gov.check(state, entry)  # nothing inapplicable is ever stored, even as a proposal
        gov.check_date(entry, now_ms, FUTURE_SKEW_MS)
        gaps = gov.missing(state, entry)
        if not gaps:
            after = gov.apply(state, data)
    except QuorumNotMet as exc:
        gaps = [exc.detail]
    except GovernanceError as exc:
        raise _problem(exc) from exc
    pid = gov.proposal_id(entry.signed)
    sigs = canonical.encode(
        [s.to_dict() for s in sorted(entry.signatures, key=lambda s: (s.signer, s.key_id))]
    )
    if proposal is None:
        proposal = GovernanceProposal(
            id=pid,
            seq=entry.seq,
            type=entry.type,
            country=entry.signed.get("country"),
            signed=entry.signed_bytes(),
            signatures=sigs.decode(),
            proposer=actor,
            state="pending",
            created_ms=now_ms,
            updated_ms=now_ms,
        )
        session.add(proposal)
    else:
        proposal.signatures, proposal.updated_ms = sigs.decode(), now_ms
    if gaps:
        session.flush()
        return False, proposal_view(proposal, gaps)
    proposal.state = "applied"
    session.flush()
    _append(session, actor, entry, data, state, after, now_ms)
    return True, {**proposal_view(proposal, []), "seq": after.seq, "hash": after.head}


def _signatures(proposal: GovernanceProposal) -> tuple[gov.Signature, ...]:
    return tuple(
        gov.Signature(s["signer"], s["key_id"], canonical.b64decode(s["sig"]))
        for s in json.loads(proposal.signatures)
    )


def _lock_head(session: Session) -> None:
    """Serialise directory appends: concurrent proposals for one head must not both apply."""
    queries.lock_registry_version(session)


def proposal_view(proposal: GovernanceProposal, gaps: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": proposal.id,
        "seq": proposal.seq,
        "type": proposal.type,
        "country": proposal.country,
        "state": proposal.state,
        "proposer": proposal.proposer,
        "signed": canonical.b64encode(proposal.signed),
        "signers": sorted({s["signer"] for s in json.loads(proposal.signatures)}),
        "missing": gaps if gaps is not None else [],
        "created_ms": proposal.created_ms,
    }


def get_proposal(session: Session, pid: str) -> dict[str, Any]:
    proposal = session.get(GovernanceProposal, pid)
    if proposal is None:
        raise not_found("unknown-proposal", f"no proposal {pid}")
    gaps: list[str] = []
    if proposal.state == "pending":
        state = replay(session, None)
        if state is not None:
            entry = gov.Entry(canonical.decode(proposal.signed), _signatures(proposal))
            try:
                gaps = gov.missing(state, entry)
            except GovernanceError as exc:
                gaps = [exc.detail]
    return proposal_view(proposal, gaps)


def list_proposals(session: Session, state: str | None = "pending", limit: int = 200) -> list[dict[str, Any]]:
    query = select(GovernanceProposal).order_by(GovernanceProposal.created_ms.desc()).limit(limit)
    if state is not None:
        query = query.where(GovernanceProposal.state == state)
    return [get_proposal(session, p.id) for p in session.scalars(query)]


def history(session: Session, country: str | None = None) -> list[dict[str, Any]]:
    """Every applied entry, newest last, as a person reads it."""
    query = select(DirectoryEntry).order_by(DirectoryEntry.seq)
    if country is not None:
        query = query.where((DirectoryEntry.country == country) | (DirectoryEntry.type == "root"))
    result = []
    for row in session.scalars(query):
        entry = gov.parse_entry(row.data)
        result.append(
            {
                "seq": row.seq,
                "type": row.type,
                "country": row.country,
                "created_ms": row.created_ms,
                "signers": sorted({s.signer for s in entry.signatures}),
                "hash": row.entry_hash,
            }
        )
    return result


def count(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(DirectoryEntry)).scalar_one())


def key_summary(state: gov.DirectoryState, code: str) -> list[dict[str, Any]]:
    member = state.members[code]
    return [
        {
            "kind": k.kind.value,
            "key_id": k.key_id,
            "fingerprint": short_fingerprint(k.key_id),
            "valid_from_ms": k.valid_from_ms,
            "valid_until_ms": k.valid_until_ms,
            "revoked_ms": k.revoked_ms,
        }
        for k in sorted(member.keys, key=lambda k: (k.kind.value, k.valid_from_ms))
        if k.kind in KeyKind
    ]
