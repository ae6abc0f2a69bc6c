"""The broker's submit work split in two, in one process, without HTTP or threads:

    .venv/bin/python bench/store.py [--items 600] [--batch 50] [--backend sqlite|postgresql|both]
                                    [--contend N]

- prepare: parse, freshness, the originator's key and both signatures (what each request's
  thread does before its envelope joins the group commit);
- store: one transaction per batch of `--batch` envelopes: accept_batch (the checks made again
  under the registry's share lock, items, deliveries, staging rows, stored-bytes quotas) and
  integrate (log indexes, inbox numbers, leaves, Merkle nodes, the inboxes leaf; no checkpoint
  signature), then the commit.

CPU time per item of each, and each as a multiple of verifying one envelope's signatures in
the same run. bench/throughput.py measures the same work through real broker processes under
concurrent load; this one is steadier on a shared machine (no load generator, no GIL convoy)
and names which half moved.

`--contend N`: the store runs again with N threads preparing envelopes beside it (as request
threads do in a broker under load), and its thread's CPU and wall time per item are shown
against the store alone: what the store pays for the GIL when it is not alone.

The garbage collector runs as a broker's `serve` sets it (`broker.app.settle_collector`): with
CPython's defaults most of what `--contend` showed was not the GIL but collections, which the
preparing threads' allocations set off and which scanned every envelope held in memory
(bench/README.md, "The garbage collector").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore", category=DeprecationWarning)

from bench.broker import enrol_observer, seal_items  # noqa: E402
from bench.throughput import verify_cost  # noqa: E402
from broker.app import settle_collector  # noqa: E402
from broker.services.auth import Caller  # noqa: E402
from broker.services.log import integrate  # noqa: E402
from broker.services.quota import QuotaBook  # noqa: E402
from broker.services.registry import RegistryCache  # noqa: E402
from broker.services.submit import Prepared, accept_batch, prepare  # noqa: E402
from broker.settings import Settings  # noqa: E402
from broker.store import queries  # noqa: E402
from broker.store.db import make_engine, make_sessionmaker, transaction  # noqa: E402
from tests.integration.conftest import _KEYS, bootstrap, postgresql_schema  # noqa: E402


@dataclass
class Store:
    """A fresh broker database with the members enrolled, and what prepare and store need."""

    engine: Engine
    factory: sessionmaker[Session]
    cache: RegistryCache
    settings: Settings
    now: int

    @classmethod
    def at(cls, url: str) -> Store:
        bootstrap(url, int(time.time() * 1000))
        enrol_observer(url)
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        cache = RegistryCache()
        with factory() as session:
            cache.get(session)
        return cls(engine, factory, cache, Settings(database_url=url), int(time.time() * 1000))

    def prepare(self, origin: str, data: bytes) -> Prepared:
        return prepare(
            self.factory, self.cache, self.settings, Caller(origin, _KEYS[origin].api.key_id), data, self.now
        )


def run(url: str, items: list[tuple[str, bytes]], batch: int) -> dict[str, float]:
    store = Store.at(url)
    engine, factory, cache, now = store.engine, store.factory, store.cache, store.now
    started = time.process_time()
    prepared: list[Prepared] = [store.prepare(origin, data) for origin, data in items]
    prepare_s = time.process_time() - started
    quotas = QuotaBook()  # kept across batches, as the sequencer keeps its own
    started = time.process_time()
    for i in range(0, len(prepared), batch):
        with transaction(factory) as session:
            staged: dict[str, dict[str, Any]] = {}  # as the sequencer: item rows written once
            answers = accept_batch(session, cache, prepared[i : i + batch], quotas, staged)
            refused = [a for a in answers if not hasattr(a, "item_id")]
            if refused:
                raise SystemExit(f"refused: {refused[0]}")
            integrate(session, None, now, staged=staged)
            if staged:
                queries.insert_items(session, list(staged.values()))
    store_s = time.process_time() - started
    engine.dispose()
    return {"prepare_ms": 1e3 * prepare_s / len(items), "store_ms": 1e3 * store_s / len(items)}


def contended(url: str, items: list[tuple[str, bytes]], batch: int, threads: int) -> dict[str, float]:
    """The store's thread CPU and wall time per item, alone and with `threads` threads
    preparing envelopes beside it, in four rounds of a quarter of the items each (alone,
    contended, alone, contended)."""
    store = Store.at(url)
    engine, factory, cache, now = store.engine, store.factory, store.cache, store.now

    prepared = [store.prepare(origin, data) for origin, data in items]
    quotas = QuotaBook()
    stop = threading.Event()

    def contend() -> None:  # what request threads do while the writer stores
        while not stop.is_set():
            for origin, data in items[:100]:
                if stop.is_set():
                    return
                store.prepare(origin, data)

    got: dict[str, float] = {}
    quarter = len(prepared) // 4
    for round_, beside in enumerate((0, threads, 0, threads)):
        stop.clear()
        others = [threading.Thread(target=contend) for _ in range(beside)]
        for other in others:
            other.start()
        part = prepared[round_ * quarter : (round_ + 1) * quarter]
        cpu, wall = time.thread_time(), time.perf_counter()
        for i in range(0, len(part), batch):
            with transaction(factory) as session:
                staged: dict[str, dict[str, Any]] = {}
                accept_batch(session, cache, part[i : i + batch], quotas, staged)
                integrate(session, None, now, staged=staged)
                if staged:
                    queries.insert_items(session, list(staged.values()))
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        stop.set()
        for other in others:
            other.join()
        label = "contended" if beside else "alone"
        got[f"{label}_cpu_ms"] = got.get(f"{label}_cpu_ms", 0.0) + 1e3 * cpu / len(part) / 2
        got[f"{label}_wall_ms"] = got.get(f"{label}_wall_ms", 0.0) + 1e3 * wall / len(part) / 2
    engine.dispose()
    return got


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--contend", type=int, default=0, help="also: the store with N threads preparing envelopes beside it"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}")
    print(
        f"python {platform.python_version()}; {args.items} items of 1 KiB to 11 recipients, batches of {args.batch}"
    )
    items = seal_items(args.items)
    settle_collector(Settings().gc_young_threshold)  # as a broker's `serve` does
    verify_ms = 1e3 * verify_cost(items)
    print(f"verifying one envelope's signatures (Ed25519 + ML-DSA-65): {verify_ms:.3f} ms of CPU")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                got = run(f"sqlite:///{folder}/store.db", items, args.batch)
        else:
            with postgresql_schema() as url:
                got = run(url, items, args.batch)
        print(
            f"{backend:>10}: prepare {got['prepare_ms']:.3f} ms CPU per item ({got['prepare_ms'] / verify_ms:.1f}x verify)"
            f" | store {got['store_ms']:.3f} ms ({got['store_ms'] / verify_ms:.1f}x verify)"
            f" | together {(got['prepare_ms'] + got['store_ms']) / verify_ms:.1f}x verify"
        )
        if args.contend:
            if backend == "sqlite":
                with tempfile.TemporaryDirectory() as folder:
                    beside = contended(f"sqlite:///{folder}/store.db", items, args.batch, args.contend)
            else:
                with postgresql_schema() as url:
                    beside = contended(url, items, args.batch, args.contend)
            print(
                f"{'':>10}  the store's thread per item, alone / with {args.contend} threads preparing beside it: "
                f"CPU {beside['alone_cpu_ms']:.3f} / {beside['contended_cpu_ms']:.3f} ms, "
                f"wall {beside['alone_wall_ms']:.3f} / {beside['contended_wall_ms']:.3f} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
