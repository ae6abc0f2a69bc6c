"""Member witnesses cosign the log's checkpoints; clients demand k of them (set in the root).

Three member witnesses (KOR, USA, JPN) run the real `msmt witness` HTTP server in threads;
the root the members signed names them and requires 2. The broker asks them after each
integration; an operator who rewrites history cannot get their cosignatures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from broker.app import create_app
from broker.settings import Settings
from broker.store.db import make_engine
from msmt.core import logleaf, merkle
from msmt.core.errors import NotWitnessed
from msmt.core.logleaf import accept_checkpoint
from msmt.core.note import Checkpoint, Ed25519Cosigner, format_note, open_checkpoint
from msmt.witness import Witness, WitnessState, make_server, submit_checkpoint

from .conftest import AUDIENCE, LOG_SIGNER, Clock, World, bootstrap, log_key_file
from .test_client import MARKINGS, client

WITNESSES = ("KOR", "USA", "JPN")


@dataclass
class Witnessed:
    world: World
    witnesses: dict[str, Witness]
    urls: dict[str, str]


@pytest.fixture
def witnessed(database_url: str, tmp_path: Path) -> Iterator[Witnessed]:
    witnesses, urls, servers = {}, {}, []
    identity = LOG_SIGNER.identity()
    for code in WITNESSES:
        cosigner = Ed25519Cosigner.from_seed(f"witness.{code.lower()}", bytes([len(witnesses) + 1]) * 32)
        witness = Witness(
            cosigner.name,
            cosigner,
            {identity.origin: identity.verifiers()},
            WitnessState(tmp_path / f"{code}.db"),
        )
        server = make_server(witness, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        witnesses[code] = witness
        urls[cosigner.name] = f"http://127.0.0.1:{server.server_address[1]}"
    pinned = identity.with_witnesses([(c, w.vkeys[0]) for c, w in witnesses.items()], threshold=2)
    clock = Clock()
    bootstrap(database_url, clock.ms, log=pinned)
    settings = Settings(
        database_url=database_url,
        audience=AUDIENCE,
        inbox_poll_interval_s=0.05,
        log_key_file=log_key_file(tmp_path),
        log_sweep_interval_s=0.05,
        witness_urls=";".join(f"{name}={url}" for name, url in urls.items()),
    )
    app = create_app(settings, clock=clock)
    try:
        with TestClient(app, raise_server_exceptions=False) as test_client:
            yield Witnessed(World(database_url, test_client, clock), witnesses, urls)
    finally:
        app.state.engine.dispose()
        for server in servers:
            server.shutdown()
            server.server_close()


def test_items_are_proven_under_checkpoints_two_member_witnesses_cosigned(witnessed: Witnessed) -> None:
    world = witnessed.world
    with client(world, "KOR") as kor, client(world, "USA") as usa:
        receipt = kor.send(b"witnessed", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        (delivery,) = usa.inbox().deliveries
        assert usa.open(delivery).payload == b"witnessed"
        checkpoint = usa.trust.checkpoint()
        assert checkpoint is not None and checkpoint.size > receipt.log_index  # type: ignore[operator]
    note = usa.trust.checkpoint_note
    assert note is not None
    _, signatures = open_checkpoint(note, LOG_SIGNER.identity().verifiers())
    assert len(logleaf.witnessed_by(usa.trust.log, checkpoint, signatures)) >= 2  # type: ignore[arg-type]
    for witness in witnessed.witnesses.values():  # each stored what it cosigned, durably
        latest = witness.state.latest(LOG_SIGNER.origin)
        assert latest is not None and latest.size >= 1


def _leaves(world: World) -> list[bytes]:
    engine = make_engine(world.url)
    with engine.connect() as conn:
        leaves = [bytes(r[0]) for r in conn.execute(text("SELECT leaf FROM log_entries ORDER BY log_index"))]
    engine.dispose()
    return leaves


def _signed(leaves: list[bytes]) -> tuple[Checkpoint, bytes, merkle.MemoryTree]:
    tree = merkle.MemoryTree()
    tree.extend(leaves)
    checkpoint = Checkpoint(LOG_SIGNER.origin, len(leaves), tree.root())
    return checkpoint, format_note(checkpoint.to_text(), list(LOG_SIGNER.sign(checkpoint.to_text()))), tree


def _wait_cosigned(witnessed: Witnessed) -> int:
    """Wait until every witness has cosigned the log's newest checkpoint; return its size."""
    world = witnessed.world
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        world.settle()
        engine = make_engine(world.url)
        with engine.connect() as conn:
            newest = conn.execute(text("SELECT max(size) FROM checkpoints")).scalar_one()
        engine.dispose()
        sizes = [w.state.latest(LOG_SIGNER.origin) for w in witnessed.witnesses.values()]
        if newest and all(s is not None and s.size == newest for s in sizes):
            return int(newest)
        time.sleep(0.05)
    raise AssertionError("the witnesses never all cosigned the newest checkpoint")


def test_a_log_rebuilt_without_an_item_gets_no_cosignature(witnessed: Witnessed) -> None:
    world = witnessed.world
    with client(world, "KOR") as kor:
        kor.send(b"one", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        kor.send(b"two", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
    cosigned = _wait_cosigned(witnessed)
    leaves = _leaves(world)[:cosigned]
    first_item = next(i for i, leaf in enumerate(leaves) if b'"type":"item"' in leaf)
    rebuilt = [
        *leaves[:first_item],
        *leaves[first_item + 1 :],
        logleaf.policy_leaf(7, "0" * 64),
        logleaf.policy_leaf(8, "0" * 64),
    ]
    _, note, tree = _signed(rebuilt)
    # the operator holds the log key and asks each witness, with the best proof it can make
    for name, url in witnessed.urls.items():
        proof = tree.consistency_proof(cosigned, len(rebuilt))
        status, body = submit_checkpoint(url, cosigned, proof, note)
        assert status == 422, (name, status, body)
    for witness in witnessed.witnesses.values():
        assert witness.state.evidence(LOG_SIGNER.origin), (
            "each witness kept the refused checkpoint as evidence"
        )
        assert witness.state.latest(LOG_SIGNER.origin).size == cosigned  # type: ignore[union-attr]


def test_a_split_view_is_caught_by_the_witnesses(witnessed: Witnessed) -> None:
    world = witnessed.world
    with client(world, "KOR") as kor:
        kor.send(b"one", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
    cosigned = _wait_cosigned(witnessed)
    other = [*_leaves(world)[: cosigned - 1], logleaf.policy_leaf(99, "f" * 64)]
    _, note, _ = _signed(other)  # same size, another root: the view shown to someone else
    for url in witnessed.urls.values():
        status, _ = submit_checkpoint(url, cosigned, [], note)
        assert status in (409, 422)
    assert all(w.state.evidence(LOG_SIGNER.origin) for w in witnessed.witnesses.values())


def test_a_client_refuses_a_checkpoint_with_too_few_cosignatures(witnessed: Witnessed) -> None:
    """The operator withholds all but one cosignature (the broker's sweeper would put them back,
    so the withheld note is made by hand here): the client refuses it."""
    world = witnessed.world
    with client(world, "KOR") as kor:
        kor.send(b"one", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
    _wait_cosigned(witnessed)
    r = world.client.get("/v1/log/checkpoint?min_cosignatures=2", headers=world.auth("USA"))
    full = r.json()["note"]
    names = [w.name for w in witnessed.witnesses.values()]
    lines = full.split("\n")
    withheld = "\n".join(line for line in lines if not any(f" {n} " in line for n in names[1:]))
    with client(world, "USA") as usa:
        identity = usa.trust.log
        assert identity is not None
        assert accept_checkpoint(identity, full.encode(), None, None).size == r.json()["size"]
        with pytest.raises(NotWitnessed, match="cosigned by 1 member witness"):
            accept_checkpoint(identity, withheld.encode(), None, None)
