"""Broker throughput: accepted submissions/s and inbox items/s, SQLite and PostgreSQL.

    .venv/bin/python bench/broker.py [--items 1000] [--threads 4] [--backend sqlite|postgresql|both]

A real `msmt-broker serve` process (one worker) is started per backend; envelopes are sealed
before the clock starts, so the figures are the broker's (HTTP, auth, parse, signature
verification, policy, one transaction), not the clients'. The client threads share the same
machine as the broker, so on a 2-core machine they compete with it: read the figures as a
floor, and compare backends as ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.services import governance as governance_service
from broker.store.db import make_engine, make_sessionmaker, transaction
from msmt.agency import AgencyKeys
from msmt.client import Client
from msmt.core import KeyKind, Markings, seal
from msmt.core import governance as gov
from msmt.trust import TrustStore
from tests.e2e.servers import broker_process
from tests.integration.conftest import _KEYS, AUDIENCE, MEMBERS, bootstrap, postgresql_schema, root_of

MARKINGS = Markings.create("RESTRICTED", "GREEN", ["ALL"], topics=["maritime"])
# An observer member so that every item can go to 11 recipients (the originator never receives).
OBSERVER = "XOB"
ROSTER = {**_KEYS, OBSERVER: AgencyKeys.generate(OBSERVER)}


def enrol_observer(url: str) -> None:
    """The observer joins as any member does: a quorum of members and its own key sign."""
    now = int(time.time() * 1000) - 500
    factory = make_sessionmaker(make_engine(url))
    observer = ROSTER[OBSERVER]
    keys = {
        KeyKind.SIGNING: observer.signing.public_key,
        KeyKind.ENCRYPTION: observer.encryption.public_key,
        KeyKind.API: observer.api.public_key,
    }
    with transaction(factory) as session:
        state = governance_service.replay(session, None)
        assert state is not None
        member = gov.member_body("Observer", "SECRET", [], keys)  # type: ignore[arg-type]
        signed = gov.statement(state, "enrol-member", now, country=OBSERVER, member=member)
        signers = [(c, _KEYS[c].signing) for c in MEMBERS] + [(OBSERVER, observer.signing)]
        applied, _ = governance_service.propose(session, "bench", gov.signed_entry(signed, signers), now)
        assert applied


def seal_items(n: int) -> list[tuple[str, bytes]]:
    payload = os.urandom(1024)
    origins = list(MEMBERS)
    out = []
    for i in range(n):
        origin = origins[i % len(origins)]
        recipients = [c for c in ROSTER if c != origin]  # 11 recipients
        out.append(
            (
                origin,
                seal(
                    payload,
                    content_type="application/octet-stream",
                    markings=MARKINGS,
                    recipients=[(r, ROSTER[r].encryption.public_key) for r in recipients],
                    originator=origin,
                    signing_key=_KEYS[origin].signing,
                ),
            )
        )
    return out


def run(url: str, items: list[tuple[str, bytes]], threads: int, workdir: Path) -> dict[str, float]:
    bootstrap(url, int(time.time() * 1000))
    enrol_observer(url)
    with broker_process(url, AUDIENCE, workdir / "bench-broker.log") as base:
        clients = {
            c: Client(base, _KEYS[c], trust=TrustStore.pin(root_of(url)), audience=AUDIENCE) for c in MEMBERS
        }
        chunks = [items[i::threads] for i in range(threads)]

        def submit(chunk: list[tuple[str, bytes]]) -> None:
            local = {
                c: Client(base, _KEYS[c], trust=TrustStore.pin(root_of(url)), audience=AUDIENCE)
                for c in MEMBERS
            }
            for origin, envelope in chunk:
                local[origin].submit(envelope)
            for client in local.values():
                client.close()

        workers = [threading.Thread(target=submit, args=(chunk,)) for chunk in chunks]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        submit_s = time.perf_counter() - start

        reader = clients["NZL"]  # every item from another member reached NZL
        start = time.perf_counter()
        cursor, listed = 0, 0
        while True:
            page = reader.inbox(after=cursor, limit=500)
            if not page.deliveries:
                break
            listed += len(page.deliveries)
            cursor = page.cursor
        list_s = time.perf_counter() - start

        start = time.perf_counter()
        cursor, fetched = 0, 0
        while fetched < 300:
            page = clients["USA"].inbox(after=cursor, limit=100)
            if not page.deliveries:
                break
            for delivery in page.deliveries:
                clients["USA"].fetch(delivery.item_id)
            clients["USA"].acknowledge([d.seq for d in page.deliveries])
            fetched += len(page.deliveries)
            cursor = page.cursor
        fetch_s = time.perf_counter() - start
        for client in clients.values():
            client.close()
    return {
        "submissions_per_s": len(items) / submit_s,
        "inbox_list_items_per_s": listed / list_s,
        "inbox_fetch_ack_items_per_s": fetched / fetch_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}")
    print(
        f"python {platform.python_version()}; {args.items} items of 1 KiB, each to 11 recipients (12 members), "
        f"{args.threads} client threads, 1 broker worker process"
    )
    items = seal_items(args.items)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            if backend == "sqlite":
                figures = run(f"sqlite:///{tmp}/bench.db", items, args.threads, Path(tmp))
            else:
                with postgresql_schema() as url:
                    figures = run(url, items, args.threads, Path(tmp))
            print(
                f"{backend:>10}: {figures['submissions_per_s']:7.1f} accepted submissions/s | "
                f"inbox listing {figures['inbox_list_items_per_s']:7.0f} items/s | "
                f"fetch+ack {figures['inbox_fetch_ack_items_per_s']:6.1f} items/s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
