"""Merkle log cost: batched appends, and inclusion proofs served from stored perfect subtrees.

    .venv/bin/python bench/merkle.py [--leaves 1000000] [--batch 1000] [--repeat 2000] [--json]

Builds the stored-node dict of a tree of --leaves leaves the way an integrator would:
`CompactRange.append_many` on batches of --batch leaf hashes, each batch's new perfect
subtrees inserted into a dict that stands in for the node table. Append throughput counts
append_many plus the inserts (leaf hashing is reported on its own line).

Then an inclusion proof is generated the way a server would: `nodes_needed_for_inclusion`,
one "batched query" (dict lookups of those addresses), and `inclusion_proof` over the
result; median and p90 over --repeat random leaves, at tree sizes 10^3 and --leaves. The
ratio of the two medians shows the cost grows with log n, not n. A consistency proof at
the full size is timed the same way. Pure CPU, one thread, no I/O.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from typing import Any

from msmt.core.merkle import (
    Address,
    CompactRange,
    GetNode,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    nodes_needed_for_consistency,
    nodes_needed_for_inclusion,
    verify_consistency,
    verify_inclusion,
)


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def fetched_nodes(fetched: dict[Address, bytes]) -> GetNode:
    """get_node over the rows one batched query returned."""
    return lambda level, index: fetched[(level, index)]


def summary(samples: list[float]) -> dict[str, float]:
    p90 = statistics.quantiles(samples, n=10, method="inclusive")[-1]
    return {"median_us": statistics.median(samples), "p90_us": p90}


def build(leaves: int, batch: int) -> tuple[dict[Address, bytes], dict[int, bytes], dict[str, float]]:
    """The stored nodes of the tree, its roots at sizes 10^3 and `leaves`, and timing figures."""
    start = time.perf_counter()
    hashes = [leaf_hash(i.to_bytes(8, "big")) for i in range(leaves)]
    hashing_s = time.perf_counter() - start

    store: dict[Address, bytes] = {}
    roots: dict[int, bytes] = {}
    frontier = CompactRange()
    elapsed = 0.0
    for first in range(0, leaves, batch):
        chunk = hashes[first : first + batch]
        start = time.perf_counter()
        frontier, new = frontier.append_many(chunk)
        store.update(new)
        elapsed += time.perf_counter() - start
    assert frontier.size == leaves
    for size in (10**3, leaves):
        roots[size] = CompactRange.from_store(size, lambda level, index: store[(level, index)]).root()
    figures = {
        "leaf_hashing_per_s": leaves / hashing_s,
        "append_per_s": leaves / elapsed,
        "append_total_s": elapsed,
        "stored_nodes": float(len(store)),
    }
    return store, roots, figures


def time_proofs(
    store: dict[Address, bytes], sizes: tuple[int, ...], repeat: int, rng: random.Random
) -> dict[int, list[float]]:
    """Inclusion proofs of random leaves, the sizes taken in turn so that drift hits all alike."""
    samples: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeat):
        for size in sizes:
            index = rng.randrange(size)
            start = time.perf_counter()
            needed = nodes_needed_for_inclusion(index, size)
            fetched = {address: store[address] for address in needed}  # the one batched query
            proof = inclusion_proof(index, size, fetched_nodes(fetched))
            samples[size].append((time.perf_counter() - start) * 1e6)
            assert len(proof) <= size.bit_length()
    return samples


def time_consistency(store: dict[Address, bytes], size: int, repeat: int, rng: random.Random) -> list[float]:
    samples = []
    for _ in range(repeat):
        size1 = rng.randrange(1, size)
        start = time.perf_counter()
        needed = nodes_needed_for_consistency(size1, size)
        fetched = {address: store[address] for address in needed}
        consistency_proof(size1, size, fetched_nodes(fetched))
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def check(store: dict[Address, bytes], roots: dict[int, bytes], size: int) -> None:
    """One proof of each kind verifies against the roots, so the figures are of correct work."""

    def get(level: int, index: int) -> bytes:
        return store[(level, index)]

    index = size // 3
    verify_inclusion(store[(0, index)], index, size, inclusion_proof(index, size, get), roots[size])
    verify_consistency(1000, size, consistency_proof(1000, size, get), roots[1000], roots[size])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=10**6, help="tree size (>= 2000)")
    parser.add_argument("--batch", type=int, default=1000, help="leaves per append_many call")
    parser.add_argument("--repeat", type=int, default=2000, help="timed proofs per size (>= 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    if args.leaves < 2000 or args.repeat < 2 or args.batch < 1:
        parser.error("need --leaves >= 2000, --repeat >= 2, --batch >= 1")

    facts = machine()
    if not args.json:
        print(
            f"machine: {facts['cpu_count']} cores ({facts['machine']}), {facts['platform']}\n"
            f"python {facts['python']}; {args.leaves:,} leaves in batches of {args.batch:,}, "
            f"{args.repeat:,} timed proofs per size, one thread"
        )
        sys.stdout.flush()

    store, roots, build_figures = build(args.leaves, args.batch)
    check(store, roots, args.leaves)
    rng = random.Random(1)
    samples = time_proofs(store, (10**3, args.leaves), args.repeat, rng)
    small, large = summary(samples[10**3]), summary(samples[args.leaves])
    consistency = summary(time_consistency(store, args.leaves, args.repeat, rng))
    ratio = large["median_us"] / small["median_us"]

    if args.json:
        report = {
            "machine": facts,
            "leaves": args.leaves,
            "batch": args.batch,
            "repeat": args.repeat,
            "build": build_figures,
            "inclusion_1000": small,
            f"inclusion_{args.leaves}": large,
            "inclusion_ratio": ratio,
            f"consistency_{args.leaves}": consistency,
        }
        print(json.dumps(report, indent=2))
        return 0
    print(f"\nleaf hashing:            {build_figures['leaf_hashing_per_s']:12,.0f} leaves/s")
    print(
        f"append (batches of {args.batch:,}): {build_figures['append_per_s']:10,.0f} leaves/s "
        f"({build_figures['append_total_s']:.2f} s, {int(build_figures['stored_nodes']):,} stored nodes)"
    )
    print(f"\n{'proof':<28} {'median us':>10} {'p90 us':>8}")
    print(f"{'inclusion at 1,000':<28} {small['median_us']:10.1f} {small['p90_us']:8.1f}")
    print(f"{f'inclusion at {args.leaves:,}':<28} {large['median_us']:10.1f} {large['p90_us']:8.1f}")
    print(
        f"{f'consistency at {args.leaves:,}':<28} {consistency['median_us']:10.1f} {consistency['p90_us']:8.1f}"
    )
    print(f"\nratio of inclusion medians ({args.leaves:,} / 1,000): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
