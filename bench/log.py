"""Transparency log: proof serving from the database at 10^3 and 10^6 leaves, and integration
throughput against submission throughput.

    .venv/bin/python bench/log.py [--backend sqlite|postgresql|both] [--large 1000000]

Proofs: the tree's perfect subtrees are bulk-loaded (what 10^6 integrations would have
stored), then inclusion and consistency proofs are served by the broker's own service code
(one query for the nodes below the cached levels, then hashing; the subtrees of 256 leaves and
more come from the per-database cache the proof routes fill once). The figures are medians of
200 random proofs; the ratio 10^6 / 10^3 should stay near 1 (without the cache it was near
log2(10^6) / log2(10^3) = 2).

Integration: N policy leaves are staged, then the integrator takes them in batches of
log.BATCH with a signed checkpoint each; integration against real submissions, in the same
run, is in bench/throughput.py.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, text

from broker.services import log as log_service
from broker.store.db import make_engine, make_sessionmaker, migrate, transaction
from broker.store.models import LogEntry, LogNode, LogPending, LogState, PolicyVersion
from msmt.core import merkle
from msmt.core.logleaf import LogSigner
from tests.integration.conftest import postgresql_schema


def load_tree(url: str, size: int) -> None:
    factory = make_sessionmaker(make_engine(url))
    frontier = merkle.CompactRange()
    batch = 50_000
    for start in range(0, size, batch):
        leaves = [merkle.leaf_hash(i.to_bytes(8, "big")) for i in range(start, min(size, start + batch))]
        frontier, nodes = frontier.append_many(leaves)
        with transaction(factory) as session:
            session.execute(insert(LogNode), [{"level": lv, "idx": ix, "hash": h} for (lv, ix), h in nodes])
    with transaction(factory) as session:
        session.execute(text("UPDATE log_state SET size = :s WHERE id = 1"), {"s": size})


def median_us(fn: object, n: int = 200) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def proofs(url: str, size: int) -> tuple[float, float]:
    factory = make_sessionmaker(make_engine(url))
    rng = random.Random(size)
    with factory() as session:
        inc = median_us(lambda: log_service.inclusion(session, rng.randrange(size), size))
        con = median_us(lambda: log_service.consistency(session, rng.randrange(1, size), size))
    return inc, con


def integration(url: str, n: int) -> float:
    factory = make_sessionmaker(make_engine(url))
    signer = LogSigner.from_seed("bench/log", bytes(64))
    with transaction(factory) as session:
        session.execute(
            insert(PolicyVersion),
            [
                {
                    "version": v,
                    "applied_ms": 0,
                    "actor": "bench",
                    "change": "x",
                    "document": "",
                    "sha256": "0" * 64,
                }
                for v in range(1, n + 1)
            ],
        )
        session.execute(
            insert(LogPending), [{"kind": "policy", "ref": str(v), "created_ms": 0} for v in range(1, n + 1)]
        )
    start = time.perf_counter()
    while True:
        with transaction(factory) as session:
            if log_service.integrate(session, signer, 0) is None:
                break
    elapsed = time.perf_counter() - start
    with factory() as session:
        assert session.get(LogState, 1).size == n  # type: ignore[union-attr]
        assert session.query(LogEntry).count() == n
    return n / elapsed


def run(url: str, large: int) -> None:
    migrate(url)
    rate = integration(url, 20_000)
    print(
        f"    integration: {rate:,.0f} leaves/s (batches of {log_service.BATCH}, each with a signed checkpoint)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {platform.system()} {platform.release()}, python {platform.python_version()}"
    )
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        print(f"  {backend}:")
        results = {}
        for size in (1000, args.large):
            with tempfile.TemporaryDirectory() as tmp:
                if backend == "sqlite":
                    url = f"sqlite:///{Path(tmp) / 'log.db'}"
                    migrate(url)
                    load_tree(url, size)
                    results[size] = proofs(url, size)
                else:
                    with postgresql_schema() as url:
                        migrate(url)
                        load_tree(url, size)
                        results[size] = proofs(url, size)
            inc, con = results[size]
            print(
                f"    {size:>9,} leaves: inclusion proof {inc:,.0f} µs, consistency proof {con:,.0f} µs (median of 200)"
            )
        (small, big) = (results[1000], results[args.large])
        print(
            f"    ratio {args.large:,} / 1,000: inclusion {big[0] / small[0]:.2f}, consistency {big[1] / small[1]:.2f}"
        )
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                run(f"sqlite:///{Path(tmp) / 'int.db'}", args.large)
            else:
                with postgresql_schema() as url:
                    run(url, args.large)


if __name__ == "__main__":
    main()
