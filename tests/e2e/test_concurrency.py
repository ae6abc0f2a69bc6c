"""Several submitters against two broker processes on PostgreSQL; consumers never miss an item.

Each recipient's inbox must show every item addressed to it exactly once, in sequence
order 1..n with no gap, although commits from many connections interleave.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from msmt.client import Client
from msmt.core import Markings, seal
from msmt.trust import TrustStore
from tests.integration.conftest import _KEYS, AUDIENCE, MEMBERS, bootstrap, postgresql_schema, root_of

from .servers import broker_processes

ITEMS = int(os.environ.get("MSMT_CONCURRENCY_ITEMS", "2000"))
SUBMITTERS = ("KOR", "USA", "JPN", "FRA", "GBR", "DEU", "ITA", "NLD")
MARKINGS = Markings.create("RESTRICTED", "GREEN", ["ALL"], topics=["maritime"])


@pytest.mark.postgresql
@pytest.mark.slow
def test_concurrent_submitters_and_cursor_consumers(tmp_path: Path) -> None:
    with postgresql_schema() as url:
        bootstrap(url, int(time.time() * 1000))
        with broker_processes(2, url, AUDIENCE, tmp_path) as bases:
            run(bases, root_of(url))


def run(bases: list[str], root: bytes) -> None:
    expected: dict[str, set[str]] = {code: set() for code in MEMBERS}
    expected_lock = threading.Lock()
    errors: list[BaseException] = []
    done_submitting = threading.Event()
    per_submitter = ITEMS // len(SUBMITTERS)

    def submitter(index: int, origin: str) -> None:
        rng = random.Random(index)
        clients = [
            Client(base, _KEYS[origin], trust=TrustStore.pin(root), audience=AUDIENCE) for base in bases
        ]
        others = [c for c in MEMBERS if c != origin]
        try:
            for n in range(per_submitter):
                recipients = rng.sample(others, rng.randint(1, 5))
                envelope = seal(
                    f"{origin} report {n}".encode(),
                    content_type="text/plain",
                    markings=MARKINGS,
                    recipients=[(r, _KEYS[r].encryption.public_key) for r in recipients],
                    originator=origin,
                    signing_key=_KEYS[origin].signing,
                )
                receipt = clients[n % len(clients)].submit(envelope)
                with expected_lock:
                    for r in receipt.recipients:
                        expected[r].add(receipt.item_id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            for client in clients:
                client.close()

    seen: dict[str, list[tuple[int, str]]] = {code: [] for code in MEMBERS}

    def consumer(index: int, country: str) -> None:
        clients = [
            Client(base, _KEYS[country], trust=TrustStore.pin(root), audience=AUDIENCE) for base in bases
        ]
        cursor, turn = 0, index
        try:
            while True:
                finished = done_submitting.is_set()
                page = clients[turn % len(clients)].inbox(after=cursor, limit=200, wait=0 if finished else 1)
                turn += 1
                for delivery in page.deliveries:
                    seen[country].append((delivery.seq, delivery.item_id))
                cursor = page.cursor
                if finished and not page.deliveries:
                    return
        except BaseException as exc:
            errors.append(exc)
        finally:
            for client in clients:
                client.close()

    consumers = [threading.Thread(target=consumer, args=(i, c)) for i, c in enumerate(MEMBERS)]
    submitters = [threading.Thread(target=submitter, args=(i, c)) for i, c in enumerate(SUBMITTERS)]
    started = time.monotonic()
    for thread in consumers + submitters:
        thread.start()
    for thread in submitters:
        thread.join()
    done_submitting.set()
    for thread in consumers:
        thread.join(timeout=120)
    elapsed = time.monotonic() - started
    assert not errors, errors[:3]

    total = sum(len(v) for v in expected.values())
    assert len({i for v in expected.values() for i in v}) == per_submitter * len(SUBMITTERS)
    for country in MEMBERS:
        seqs = [seq for seq, _ in seen[country]]
        assert seqs == list(range(1, len(seqs) + 1)), f"{country}: gap or disorder in sequence"
        items = [item for _, item in seen[country]]
        assert len(items) == len(set(items)), f"{country}: an item was delivered twice"
        assert set(items) == expected[country], f"{country}: missing or foreign items"
    print(f"\n{per_submitter * len(SUBMITTERS)} items, {total} deliveries, 2 brokers, {elapsed:.1f} s")
