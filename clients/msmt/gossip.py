"""Checkpoint gossip: compare the log this agency was shown with what the member witnesses cosigned.

A client accepts a checkpoint once `threshold` member witnesses cosigned it, so a broker that
wants to show two members two different histories must get both views cosigned: by witnesses
that lost their state, or that collude with it. A member that only ever talks to one broker
cannot see that alone. Gossip closes it: `msmt audit --witness URL` asks every witness it is
given for the latest checkpoint that witness cosigned (`GET <prefix>/<sha256(origin)>/checkpoint`,
served by `msmt witness serve`, docs/protocol.md 14.6) and checks it against the one this agency
holds:

- the same size must have the same root: two log-signed trees of one size are a **split view**,
  and the two notes prove it to anyone holding the log's public keys;
- a different size must be linked to ours by a consistency proof, which the broker must serve
  (from the smaller to the larger); if it cannot, or the proof fails, the broker showed this
  agency and that witness two histories: a **fork**.

Either finding keeps the two signed notes under `KEYS/trust/evidence/`. A witness that cannot
be reached, has cosigned nothing yet, or serves something the log did not sign is reported,
but proves nothing about the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from .client import Client
from .core import canonical
from .core.errors import InvalidConsistencyProof, MsmtError
from .core.merkle import verify_consistency
from .core.note import Checkpoint, open_checkpoint
from .errors import BrokerError, ClientError

TIMEOUT_S = 10.0
MAX_NOTE_BYTES = 64 * 1024  # a checkpoint with a few dozen cosignatures is ~2 KiB

# verdicts; the first two are findings against the log
SPLIT_VIEW = "split-view"
FORK = "fork"
AGREES = "agrees"
UNREACHABLE = "unreachable"
NOTHING_COSIGNED = "nothing-cosigned"
NOT_SIGNED = "not-signed-by-the-log"
FINDINGS = {SPLIT_VIEW, FORK}


@dataclass(frozen=True)
class Comparison:
    witness: str
    verdict: str
    detail: str
    size: int | None = None

    @property
    def is_finding(self) -> bool:
        return self.verdict in FINDINGS


def witness_checkpoint_url(prefix: str, origin: str) -> str:
    return f"{prefix.rstrip('/')}/{hashlib.sha256(origin.encode()).hexdigest()}/checkpoint"


def _fetch(http: httpx.Client, url: str) -> bytes | str:
    """The note the witness serves, or why there is none (a string)."""
    try:
        with http.stream("GET", url) as response:
            if response.status_code == 404:
                return NOTHING_COSIGNED
            if response.status_code != 200:
                return f"{UNREACHABLE}: HTTP {response.status_code}"
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_NOTE_BYTES:
                    return f"{NOT_SIGNED}: an answer of more than {MAX_NOTE_BYTES} bytes"
            return body
    except httpx.HTTPError as exc:
        return f"{UNREACHABLE}: {type(exc).__name__}"


def compare_with_witnesses(
    client: Client, witnesses: Mapping[str, str], *, http: httpx.Client | None = None
) -> list[Comparison]:
    """Compare the checkpoint `client` holds (brought up to date from the broker first) with
    each witness's latest cosigned one; keep evidence of a split view or a fork."""
    identity = client.trust.log
    if identity is None:
        raise ClientError("the members' root pins no transparency log: there is nothing to compare")
    held = client.log_checkpoint()
    results = []
    own_http = http is None
    http = http or httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)
    try:
        for name, prefix in witnesses.items():
            answer = _fetch(http, witness_checkpoint_url(prefix, identity.origin))
            if isinstance(answer, str):
                verdict, _, why = answer.partition(": ")
                results.append(
                    Comparison(name, verdict, why or "this witness has cosigned no checkpoint yet")
                )
                continue
            try:
                theirs, _ = open_checkpoint(answer, identity.verifiers(), origin=identity.origin)
            except MsmtError as exc:
                results.append(Comparison(name, NOT_SIGNED, str(exc)))
                continue
            results.append(_compare(client, name, held, theirs, answer))
    finally:
        if own_http:
            http.close()
    return results


def _compare(client: Client, name: str, held: Checkpoint, theirs: Checkpoint, note: bytes) -> Comparison:
    def finding(verdict: str, detail: str) -> Comparison:
        assert client.trust.checkpoint_note is not None
        client.trust.save_evidence(
            verdict,
            detail,
            [
                ("the checkpoint this agency holds, from the broker", client.trust.checkpoint_note),
                (f"the checkpoint witness {name} cosigned", note),
            ],
        )
        return Comparison(name, verdict, detail, theirs.size)

    if theirs.size == held.size:
        if theirs.root_hash == held.root_hash:
            return Comparison(name, AGREES, f"the same tree of {held.size} entries", theirs.size)
        return finding(
            SPLIT_VIEW,
            f"witness {name} cosigned another tree of {held.size} entries than the broker showed this "
            "agency: a split view",
        )
    small, large = (held, theirs) if held.size < theirs.size else (theirs, held)
    if small.size == 0:
        return Comparison(name, AGREES, "an empty tree is a prefix of every tree", theirs.size)
    try:
        served = client._request(
            "GET", "/v1/log/proof/consistency", params={"first": small.size, "second": large.size}
        ).json()["proof"]
        proof = [canonical.b64decode(p, "proof") for p in served]
        verify_consistency(small.size, large.size, proof, small.root_hash, large.root_hash)
    except (BrokerError, InvalidConsistencyProof, MsmtError, KeyError, TypeError, ValueError) as exc:
        return finding(
            FORK,
            f"no consistency proof links this agency's tree of {held.size} entries to the one of "
            f"{theirs.size} witness {name} cosigned ({exc}): the broker showed them two histories",
        )
    return Comparison(name, AGREES, f"consistent with this agency's tree of {held.size} entries", theirs.size)
