"""The transparency log on both databases: integration, checkpoints, proofs, and an operator
who rewrites history with the log key it holds, caught by unmodified clients."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import event, text

from broker.services.log import Integrator, stage
from broker.store.db import make_engine, make_sessionmaker, transaction
from msmt.core import canonical, logleaf, merkle
from msmt.core.errors import InvalidConsistencyProof, InvalidInclusionProof, LeafMismatch, LogRollback
from msmt.core.note import Checkpoint, format_note, open_checkpoint
from msmt.trust import TrustStore

from .conftest import LOG_SIGNER, World
from .test_client import MARKINGS, client


def _sql(world: World, statement: str, **params: object) -> list[tuple[object, ...]]:
    engine = make_engine(world.url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _leaves(world: World) -> list[bytes]:
    return [bytes(r[0]) for r in _sql(world, "SELECT leaf FROM log_entries ORDER BY log_index")]


def test_every_leaf_is_integrated_in_order_and_the_tree_matches_the_checkpoint(world: World) -> None:
    with client(world, "KOR") as kor:
        receipts = [
            kor.send(
                f"r{i}".encode(), content_type="text/plain", markings=MARKINGS, recipients=["USA", "JPN"]
            )
            for i in range(5)
        ]
    world.settle()
    assert world.count("log_pending") == 0
    leaves = _leaves(world)
    indexes = [r.log_index for r in receipts]
    assert indexes == sorted(indexes) and len(set(indexes)) == 5
    assert [r.seqs for r in receipts] == [{"JPN": i, "USA": i} for i in range(1, 6)]
    tree = merkle.MemoryTree()
    tree.extend(leaves)
    note = world.client.get("/v1/log/checkpoint", headers=world.auth("USA")).json()["note"]
    checkpoint, _ = open_checkpoint(
        note.encode(), LOG_SIGNER.identity().verifiers(), origin=LOG_SIGNER.origin
    )
    assert (checkpoint.size, checkpoint.root_hash) == (len(leaves), tree.root())
    kinds = [r[0] for r in _sql(world, "SELECT kind FROM log_entries ORDER BY log_index")]
    assert kinds[0] == "directory" and "policy" in kinds and kinds.count("item") == 5


def test_sender_and_recipient_prove_inclusion(world: World) -> None:
    with client(world, "KOR") as kor, client(world, "USA") as usa:
        receipt = kor.send(b"proven", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        assert kor.trust.checkpoint() is not None  # send verified the receipt under a checkpoint
        (delivery,) = usa.inbox().deliveries
        assert delivery.log_index == receipt.log_index
        assert usa.open(delivery).payload == b"proven"
        assert usa.trust.checkpoint().size > receipt.log_index  # type: ignore[union-attr]


def test_a_rewritten_leaf_is_refused_by_the_recipient(world: World) -> None:
    """The operator changes what the log says about an item: the recipient notices."""
    with client(world, "KOR") as kor, client(world, "USA") as usa:
        receipt = kor.send(b"x", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        index = receipt.log_index
        assert index is not None
        leaf = bytes(_sql(world, "SELECT leaf FROM log_entries WHERE log_index = :i", i=index)[0][0])
        item_id, digest, origin, seqs = logleaf.parse_item_leaf(leaf)
        forged = logleaf.item_leaf(item_id, digest, origin, {**seqs, "USA": 99})
        _sql(world, "UPDATE log_entries SET leaf = :l WHERE log_index = :i", l=forged, i=index)
        (delivery,) = usa.inbox().deliveries
        with pytest.raises(LeafMismatch, match="USA's inbox entry 99, not 1"):
            usa.open(delivery)
        # the same bytes with the right seq but a hash not in the tree: the proof fails
        other = logleaf.item_leaf(item_id, digest, origin, seqs) + b" "
        _sql(world, "UPDATE log_entries SET leaf = :l WHERE log_index = :i", l=other, i=index)
        with pytest.raises(Exception) as refused:
            usa.open(delivery)
        assert getattr(refused.value, "code", "") in ("non-canonical-encoding", "log-leaf-mismatch")
        _sql(world, "UPDATE log_entries SET leaf = :l WHERE log_index = :i", l=leaf, i=index)
        assert usa.open(delivery).payload == b"x"


def _rebuild(world: World, leaves: list[bytes]) -> bytes:
    """What an operator with the log key can do: replace the stored tree and sign a checkpoint."""
    tree = merkle.MemoryTree()
    tree.extend(leaves)
    _sql(world, "DELETE FROM log_nodes")
    engine = make_engine(world.url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO log_nodes (level, idx, hash) VALUES (:l, :i, :h)"),
            [{"l": level, "i": idx, "h": h} for (level, idx), h in tree.nodes.items()],
        )
    engine.dispose()
    checkpoint = Checkpoint(LOG_SIGNER.origin, len(leaves), tree.root())
    note = format_note(checkpoint.to_text(), list(LOG_SIGNER.sign(checkpoint.to_text())))
    _sql(world, "UPDATE log_state SET size = :s", s=len(leaves))
    _sql(world, "DELETE FROM checkpoints WHERE size >= :s", s=len(leaves))
    _sql(
        world,
        "INSERT INTO checkpoints (size, root, note, created_ms) VALUES (:s, :r, :n, 0)",
        s=len(leaves),
        r=tree.root(),
        n=note.decode(),
    )
    return note


def test_a_log_rebuilt_without_one_item_is_refused(world: World) -> None:
    with client(world, "KOR") as kor, client(world, "USA") as usa:
        kor.send(b"first", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        usa.log_checkpoint()  # USA has seen the honest tree
        kor.send(b"second", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        world.settle()
        leaves = _leaves(world)
        first_item = next(i for i, leaf in enumerate(leaves) if b'"type":"item"' in leaf)
        dropped = leaves[:first_item] + leaves[first_item + 1 :] + [logleaf.policy_leaf(999, "0" * 64)]
        _rebuild(world, dropped)
        with pytest.raises((InvalidConsistencyProof, LogRollback)):
            usa.log_checkpoint()


def test_a_split_view_is_refused(world: World) -> None:
    """Two different trees of the same size, shown to one client at two times."""
    with client(world, "KOR") as kor:
        kor.send(b"a", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
    world.settle()
    leaves = _leaves(world)
    trust = world.trust()
    with client(world, "USA", trust=trust) as usa:
        usa.log_checkpoint()
        other = [*leaves[:-1], logleaf.policy_leaf(12345, "f" * 64)]
        _rebuild(world, other)
        with pytest.raises(LogRollback, match="split view"):
            usa.log_checkpoint()


def test_a_checkpoint_not_signed_by_the_pinned_log_key_is_refused(world: World) -> None:
    from msmt.core.errors import UnverifiedNote

    impostor = logleaf.LogSigner.from_seed(LOG_SIGNER.origin, bytes(64))
    with client(world, "KOR") as kor:
        kor.send(b"a", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
    world.settle()
    size, root = _sql(world, "SELECT size, root FROM checkpoints ORDER BY size DESC LIMIT 1")[0]
    checkpoint = Checkpoint(LOG_SIGNER.origin, int(size), bytes(root))  # type: ignore[call-overload]
    note = format_note(checkpoint.to_text(), list(impostor.sign(checkpoint.to_text())))
    _sql(world, "UPDATE checkpoints SET note = :n WHERE size = :s", n=note.decode(), s=size)
    with (
        client(world, "USA", trust=TrustStore(list(world.trust().entries))) as usa,
        pytest.raises(UnverifiedNote),
    ):
        usa.log_checkpoint()


def test_proofs_at_any_size_match_a_tree_built_from_the_leaves(world: World) -> None:
    with client(world, "KOR") as kor:
        for i in range(6):
            kor.send(f"{i}".encode(), content_type="text/plain", markings=MARKINGS, recipients=["JPN"])
    world.settle()
    leaves = _leaves(world)
    tree = merkle.MemoryTree()
    tree.extend(leaves)
    for size in (1, 2, 5, len(leaves)):
        for index in (0, size // 2, size - 1):
            r = world.client.get(
                f"/v1/log/proof/inclusion?index={index}&size={size}", headers=world.auth("JPN")
            )
            proof = [canonical.b64decode(p) for p in r.json()["proof"]]
            assert proof == tree.inclusion_proof(index, size)
        r = world.client.get(f"/v1/log/proof/consistency?first=1&second={size}", headers=world.auth("JPN"))
        assert [canonical.b64decode(p) for p in r.json()["proof"]] == tree.consistency_proof(1, size)
    bad = world.client.get(
        f"/v1/log/proof/inclusion?index={len(leaves)}&size={len(leaves)}", headers=world.auth("JPN")
    )
    assert bad.status_code == 422 and bad.json()["type"].endswith("invalid-proof-request")
    with pytest.raises(InvalidInclusionProof):
        merkle.verify_inclusion(merkle.leaf_hash(b"x"), 0, len(leaves), tree.inclusion_proof(0), tree.root())


def test_the_migration_carries_an_existing_log_over(database_url: str) -> None:
    """A database from before the integrator has leaf hashes but no stored subtrees."""
    from broker.services import log as log_service
    from broker.store.db import make_sessionmaker, migrate

    migrate(database_url, "0004")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        for i in range(7):
            conn.execute(
                text(
                    "INSERT INTO log_entries (log_index, kind, ref, leaf_hash, created_ms) VALUES (:i, 'item', :r, :h, 0)"
                ),
                {"i": i, "r": str(i), "h": merkle.leaf_hash(bytes([i]))},
            )
        conn.execute(text("UPDATE log_state SET size = 7"))
    migrate(database_url)
    tree = merkle.MemoryTree()
    tree.extend(bytes([i]) for i in range(7))
    with make_sessionmaker(engine)() as session:
        assert log_service.inclusion(session, 3, 7) == tree.inclusion_proof(3, 7)
        assert log_service.consistency(session, 2, 7) == tree.consistency_proof(2, 7)
    engine.dispose()


# --- the integrator's own tip: the tree as its last commit left it -----------------------------


def _tree_matches_the_checkpoint(world: World) -> None:
    tree = merkle.MemoryTree()
    tree.extend(_leaves(world))
    note = world.client.get("/v1/log/checkpoint", headers=world.auth("USA")).json()["note"]
    checkpoint, _ = open_checkpoint(
        note.encode(), LOG_SIGNER.identity().verifiers(), origin=LOG_SIGNER.origin
    )
    assert (checkpoint.size, checkpoint.root_hash) == (len(_leaves(world)), tree.root())
    stored = {
        (int(lv), int(ix)): bytes(h) for lv, ix, h in _sql(world, "SELECT level, idx, hash FROM log_nodes")
    }
    assert stored == tree.nodes  # every stored subtree is the tree's own


def test_after_its_own_integration_the_integrator_does_not_read_the_tree_back(world: World) -> None:
    """The frontier and the last inboxes leaf come from the integrator's previous commit while
    the log still has that size: no read of the stored subtrees or of the last leaf's kind."""
    engine = world.client.app.state.engine  # type: ignore[attr-defined]
    with client(world, "KOR") as kor:
        kor.send(b"first", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        world.settle()
        seen: list[str] = []

        def record(conn: object, cursor: object, statement: str, *args: object) -> None:
            if threading.current_thread().name == "msmt-sequencer":  # the integrations, not the proofs served
                seen.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            kor.send(b"second", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
            world.settle()
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert any("INSERT INTO log_nodes" in s for s in seen)  # it did integrate meanwhile
    assert not [s for s in seen if "FROM log_nodes" in s or "SELECT log_entries.kind" in s]
    _tree_matches_the_checkpoint(world)


def test_after_another_process_integrated_the_integrator_reads_the_tree_again(world: World) -> None:
    """Another broker process integrated since this one's last commit (the log is longer than
    its tip): it must continue from the stored tree, not from what it remembers."""
    with client(world, "KOR") as kor:
        kor.send(b"ours", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        world.settle()
        ours = world.client.app.state.broker.log  # type: ignore[attr-defined]
        assert ours.tip is not None and ours.tip.frontier.size == world.count("log_entries")
        (version,) = _sql(world, "SELECT max(version) FROM policy_versions")[0]
        engine = make_engine(world.url)
        try:
            other = Integrator(make_sessionmaker(engine), LOG_SIGNER, lambda: world.clock.ms)
            with transaction(other.factory) as session:
                stage(session, "policy", str(version), world.clock.ms)
            assert other.run_once() is not None  # the other process's batch: a leaf and an inboxes leaf
        finally:
            engine.dispose()
        kor.send(b"ours again", content_type="text/plain", markings=MARKINGS, recipients=["USA"])
        world.settle()
    assert ours.tip.frontier.size == world.count("log_entries")
    _tree_matches_the_checkpoint(world)


def test_the_migration_moves_unnumbered_deliveries_onto_their_items(database_url: str) -> None:
    """0010: an item keeps its recipients until the integrator writes its deliveries. Stored
    deliveries fill `items.recipients`; those of items not yet in the log (no inbox number)
    are removed, since the integrator writes them; the downgrade puts them back."""
    from alembic import command

    from broker.store.db import alembic_config, migrate

    migrate(database_url, "0009")
    engine = make_engine(database_url)
    item = (
        "INSERT INTO items (item_id, originator, originator_key_id, created_ms, received_ms, classification,"
        " tlp, content_type, size, envelope_sha256, submitted_with_key, log_index) VALUES"
        " (:i, 'KOR', 'k', 1, :t, 'RESTRICTED', 'AMBER', 'text/plain', 1, 'x', 'k', :li)"
    )
    delivery = "INSERT INTO deliveries (item_id, recipient, seq, state, created_ms) VALUES (:i, :r, :s, 'pending', :t)"
    with engine.begin() as conn:
        conn.execute(text(item), [{"i": "logged", "t": 10, "li": 5}, {"i": "waiting", "t": 20, "li": None}])
        conn.execute(
            text(delivery),
            [
                {"i": "logged", "r": "USA", "s": 1, "t": 10},
                {"i": "logged", "r": "JPN", "s": 1, "t": 10},
                {"i": "waiting", "r": "USA", "s": None, "t": 20},
                {"i": "waiting", "r": "FRA", "s": None, "t": 20},
                {"i": "waiting", "r": "DEU", "s": None, "t": 20},
            ],
        )
    rows = "SELECT item_id, recipient, seq, state, created_ms FROM deliveries ORDER BY item_id, recipient"
    with engine.connect() as conn:
        before = conn.execute(text(rows)).all()
    migrate(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT item_id, recipients FROM items ORDER BY item_id")).all() == [
            ("logged", "JPN,USA"),
            ("waiting", "DEU,FRA,USA"),
        ]
        assert conn.execute(text(rows)).all() == [
            ("logged", "JPN", 1, "pending", 10),
            ("logged", "USA", 1, "pending", 10),
        ]
    command.downgrade(alembic_config(database_url), "0009")
    with engine.connect() as conn:
        assert conn.execute(text(rows)).all() == before
    engine.dispose()


def test_the_migration_refuses_an_item_without_deliveries(database_url: str) -> None:
    """An item with no delivery at all has no recipients to keep: the upgrade stops and says so
    (a database `msmt-broker check` finds inconsistent), changing nothing."""
    from broker.store.db import migrate

    migrate(database_url, "0009")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO items (item_id, originator, originator_key_id, created_ms, received_ms,"
                " classification, tlp, content_type, size, envelope_sha256, submitted_with_key) VALUES"
                " ('lonely', 'KOR', 'k', 1, 1, 'RESTRICTED', 'AMBER', 'text/plain', 1, 'x', 'k')"
            )
        )
    with pytest.raises(RuntimeError, match="1 items have no deliveries"):
        migrate(database_url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0009"
        conn.execute(text("DELETE FROM items"))
    migrate(database_url)  # nothing of the refused attempt is left (no column added twice)
    engine.dispose()


def test_a_sqlite_migration_checks_every_reference_before_it_commits(tmp_path: Path) -> None:
    """On SQLite foreign keys are not enforced while a revision rebuilds a table, so the
    migration checks them all before committing: a delivery of an item that does not exist
    (written behind the broker's back) stops it, and the schema stays where it was."""
    import sqlite3

    from broker.store.db import migrate

    url = f"sqlite:///{tmp_path / 'refs.db'}"
    migrate(url, "0009")
    raw = sqlite3.connect(tmp_path / "refs.db")
    raw.execute(
        "INSERT INTO items (item_id, originator, originator_key_id, created_ms, received_ms, classification,"
        " tlp, content_type, size, envelope_sha256, submitted_with_key) VALUES"
        " ('real', 'KOR', 'k', 1, 1, 'RESTRICTED', 'AMBER', 'text/plain', 1, 'x', 'k')"
    )
    for seq, item in enumerate(("real", "ghost"), 1):  # foreign keys are off on a plain connection
        raw.execute(
            "INSERT INTO deliveries (item_id, recipient, seq, state, created_ms) VALUES (?, 'USA', ?, 'pending', 1)",
            (item, seq),
        )
    raw.commit()
    raw.close()
    with pytest.raises(RuntimeError, match="revision 0010 would leave broken references"):
        migrate(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0009"
        conn.execute(text("DELETE FROM deliveries WHERE item_id = 'ghost'"))
    migrate(url)
    engine.dispose()
