"""bench/growth.py's bulk loader writes what the broker would have stored (a smoke test of the
benchmark, not a benchmark)."""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from pathlib import Path

from sqlalchemy import text

from bench.broker import enrol_observer
from bench.growth import BIG_INBOX, generate, load_store
from broker.services import log as log_service
from broker.store.db import make_engine, make_sessionmaker
from msmt.core import merkle
from tests.integration.conftest import bootstrap


def test_rows_are_consistent() -> None:
    last_seq: dict[str, int] = {}
    stored: dict[str, int] = {}
    batches = list(generate(500, 256, int(time.time() * 1000), last_seq, stored))
    items = [row for b in batches for row in b.items]
    deliveries = [row for b in batches for row in b.deliveries]
    entries = [row for b in batches for row in b.entries]
    assert len(items) == len(entries) == 500
    ids = [row[0] for row in items]
    assert ids == sorted(ids), "UUIDv7 ids in log order"
    for row in items:
        assert row[8] == len(row[10]) == 256
        assert row[9] == hashlib.sha256(row[10]).hexdigest()
    seqs: dict[str, list[int]] = defaultdict(list)
    for _, recipient, seq, *_ in deliveries:
        seqs[recipient].append(seq)
    for recipient, numbers in seqs.items():
        assert numbers == list(range(1, len(numbers) + 1)), recipient
        assert last_seq[recipient] == len(numbers)
    assert len(seqs[BIG_INBOX]) == sum(1 for row in items if row[1] != BIG_INBOX)
    assert 2 <= len(deliveries) / 500 <= 3
    assert any(row[3] == "pending" for row in deliveries)
    for index, (log_index, _, ref, leaf_hash, _, leaf) in enumerate(entries):
        assert (log_index, ref) == (index, ids[index])
        assert leaf_hash == merkle.leaf_hash(leaf)


def test_loaded_store_serves_proofs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'growth.db'}"
    bootstrap(url, int(time.time() * 1000))
    enrol_observer(url)
    loaded = load_store(url, 300, 128)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            counters = dict(conn.execute(text("SELECT recipient, last_seq FROM inbox_counters")).all())
            assert all(counters[r] == seq for r, seq in loaded.last_seq.items())
            leaves = [
                bytes(h)
                for (h,) in conn.execute(text("SELECT leaf_hash FROM log_entries ORDER BY log_index"))
            ]
        with make_sessionmaker(engine)() as session:
            (leaf, proof) = log_service.inclusions(session, [123], 300)[123]
            root = merkle.CompactRange().append_many(leaves)[0].root()
            merkle.verify_inclusion(merkle.leaf_hash(leaf), 123, 300, proof, root)
    finally:
        engine.dispose()
