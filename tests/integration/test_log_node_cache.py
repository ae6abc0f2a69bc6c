"""The proof routes' cache of upper subtree hashes (broker/services/log.py `NodeCache`), on both
databases: proofs stay exactly RFC 9162's, the cache is per database (two logs with the same
shape and other leaves never share a node), and the upper levels are read from memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from broker.services import log as log_service
from broker.store.db import make_engine, make_sessionmaker, migrate, transaction
from broker.store.models import LogNode
from msmt.core import merkle

from .conftest import postgresql_schema

SIZE = 1500  # levels 0-10: three levels at or above NodeCache.MIN_LEVEL


def _leaves(label: str) -> list[bytes]:
    return [hashlib.sha256(f"{label} {i}".encode()).digest() for i in range(SIZE)]


def _store(url: str, leaves: list[bytes]) -> None:
    migrate(url)
    _, nodes = merkle.CompactRange().append_many([merkle.leaf_hash(leaf) for leaf in leaves])
    factory = make_sessionmaker(make_engine(url))
    with transaction(factory) as session:
        session.execute(insert(LogNode), [{"level": lv, "idx": ix, "hash": h} for (lv, ix), h in nodes])
        session.execute(text("UPDATE log_state SET size = :s WHERE id = 1"), {"s": len(leaves)})


@contextmanager
def _database(kind: str, path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{path}"
    else:
        with postgresql_schema() as url:
            yield url


@contextmanager
def _session(url: str) -> Iterator[Session]:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_cached_proofs_are_the_trees_own_and_never_cross_databases(kind: str, tmp_path: Path) -> None:
    trees = {}
    with _database(kind, tmp_path / "a.db") as a, _database(kind, tmp_path / "b.db") as b:
        for label, url in (("a", a), ("b", b)):
            leaves = _leaves(label)
            _store(url, leaves)
            tree = merkle.MemoryTree()
            tree.extend(leaves)
            trees[url] = tree
        with _session(a) as sa, _session(b) as sb:
            for _ in range(2):  # the second round is served from the caches the first one filled
                for url, session in ((a, sa), (b, sb)):
                    tree = trees[url]
                    for index in (0, 700, SIZE - 1):
                        assert log_service.inclusion(session, index, SIZE) == tree.inclusion_proof(
                            index, SIZE
                        )
                    for first in (1, 256, 1024):
                        assert log_service.consistency(session, first, SIZE) == tree.consistency_proof(
                            first, SIZE
                        )


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_upper_levels_are_read_from_memory_once_cached(kind: str, tmp_path: Path) -> None:
    with _database(kind, tmp_path / "log.db") as url:
        leaves = _leaves("memory")
        _store(url, leaves)
        tree = merkle.MemoryTree()
        tree.extend(leaves)
        with _session(url) as session:
            expected = log_service.inclusion(session, 5, SIZE)
            # the stored upper subtrees disappear; the proof still comes whole, from the cache
            with transaction(make_sessionmaker(make_engine(url))) as other:
                other.execute(
                    text("DELETE FROM log_nodes WHERE level >= :lv"), {"lv": log_service.NodeCache.MIN_LEVEL}
                )
            session.rollback()  # a new snapshot: the rows are gone for this session too
            assert log_service.inclusion(session, 5, SIZE) == expected == tree.inclusion_proof(5, SIZE)
            # lower levels are never cached: a proof needing one that is gone fails loudly
            with transaction(make_sessionmaker(make_engine(url))) as other:
                other.execute(text("DELETE FROM log_nodes WHERE level = 0"))
            session.rollback()
            with pytest.raises(Exception, match="no stored subtree"):
                log_service.inclusion(session, 5, SIZE)
