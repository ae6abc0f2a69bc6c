"""Gateway figures (issue 12): inbox -> local store items/s, and TAXII 2.1 objects/s served.

    .venv/bin/python bench/gateway.py [--stix 1000] [--markdown 1000] [--objects 4]
                                      [--backend sqlite|postgresql|both] [--rounds 3]
                                      [--limits 100 1000] [--consumers 4] [--first-pages 30]

One real `msmt-broker serve` process (on SQLite) holds, in USA's inbox, `--stix` STIX 2.1
bundles (`--objects` objects each, marked TLP:GREEN, plus the TLP 2.0 marking-definition), then
`--markdown` Markdown reports of ~2 KiB: all sealed by KOR for USA and stored before any clock
starts.

1. **inbox -> store.** USA's gateway follower, `msmt.gateway.store.follow_once` (what
   `msmt-gateway follow` and `serve` run), here in this process, drains the inbox into a fresh
   gateway database in pages of 100: each delivery's signature, log inclusion and decryption
   verified, the page stored in one transaction (a bundle validated with stix2, its markings
   checked against the envelope's, its objects indexed for TAXII), then a signed delivery
   receipt per item and the acknowledgement, then the cursor. Items/s per kind, with the
   gateway's database on SQLite and on PostgreSQL (a schema of its own, dropped afterwards);
   beside them, the same inbox read by the client library alone (verify, decrypt, signed
   receipts, acknowledgement; nothing stored): the ratio is what storing costs. Medians of
   `--rounds` drains, each into a new database (the broker re-lists acknowledged deliveries
   from cursor 0; the receipts and acknowledgements sent again are no-ops).
2. **TAXII.** A real `msmt-gateway serve` process over the last round's database: a consumer
   walks KOR's collection, `GET /msmt/collections/{id}/objects/?limit=L` then `next` until
   `more` is false (keep-alive HTTP, an API token, as `taxii2client.v21.as_pages` does):
   objects/s for one consumer and for `--consumers` at once (threads of this process, each
   walking the whole collection), the latency of the first page, and the gateway process's
   CPU per 1,000 objects served (from /proc). Medians of `--rounds` walks, after one untimed.

Everything shares the machine's cores: on 2 cores the follower (this process), the broker,
the gateway and PostgreSQL compete; read the rates as floors and compare them as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import tomli_w
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.services.submit import join_batch
from msmt.auth import mint_token
from msmt.client import Client
from msmt.core import Markings, seal
from msmt.gateway.config import hash_token
from msmt.gateway.stix import TLP2_IDS, check_markings, parse_bundle, tlp2_definition
from msmt.gateway.store import Store, follow_once
from msmt.gateway.taxii import collection_id
from msmt.trust import TrustStore
from tests.e2e.servers import broker_server, free_port
from tests.integration.conftest import _KEYS, AUDIENCE, PG_BASE, bootstrap, postgresql_schema, root_of

SENDER, RECIPIENT = "KOR", "USA"
MARKINGS = Markings.create("RESTRICTED", "GREEN", [RECIPIENT], topics=["maritime"])
TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
PASSPHRASE = "bench passphrase, not a secret"
FAST_KDF = {"memory_kib": 19456, "iterations": 2, "lanes": 1}  # the least key files accept
PAGE = 100  # the follower's page (msmt-gateway's default)
TICKS = os.sysconf("SC_CLK_TCK")

MARKDOWN = (
    "# Port call report {i}\n\n"
    "**Summary.** General cargo vessel observed loading at berth 3; AIS dark for 31 h before.\n\n"
    "| date | place | observation |\n|---|---|---|\n"
    + "".join(
        f"| 2026-10-{d:02d} | Rajin, berth 3 | containers staged, draught +{d / 10:.1f} m |\n"
        for d in range(1, 29)
    )
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def stix_payload(i: int, objects: int) -> bytes:
    """A bundle of `objects` objects marked TLP:GREEN (indicators, then a sighting of the
    first), plus the TLP:GREEN marking-definition."""
    when = "2026-11-02T03:14:00.000Z"
    marked = {"object_marking_refs": [TLP2_IDS["GREEN"]]}
    indicators = [
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": f"indicator--{uuid.uuid4()}",
            "created": when,
            "modified": when,
            "name": f"Ship-to-ship transfer {i}.{j}",
            "pattern": f"[x-vessel:imo = '9{i:05d}{j}']",
            "pattern_type": "stix",
            "valid_from": "2026-11-02T03:14:00Z",
            **marked,
        }
        for j in range(max(1, objects - 1))
    ]
    sighting = {
        "type": "sighting",
        "spec_version": "2.1",
        "id": f"sighting--{uuid.uuid4()}",
        "created": when,
        "modified": when,
        "sighting_of_ref": indicators[0]["id"],
        "count": 1,
        **marked,
    }
    body = [*indicators, sighting] if objects > 1 else indicators
    bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": [tlp2_definition("GREEN"), *body]}
    return json.dumps(bundle).encode()


def sealed(args: argparse.Namespace) -> list[bytes]:
    payloads = [(stix_payload(i, args.objects), "application/stix+json") for i in range(args.stix)]
    payloads += [(MARKDOWN.format(i=i).encode(), "text/markdown") for i in range(args.markdown)]
    return [
        seal(
            payload,
            content_type=content_type,
            markings=MARKINGS,
            recipients=[(RECIPIENT, _KEYS[RECIPIENT].encryption.public_key)],
            originator=SENDER,
            signing_key=_KEYS[SENDER].signing,
        )
        for payload, content_type in payloads
    ]


def validation_ms(args: argparse.Namespace, count: int = 200) -> float:
    """What the gateway pays per bundle to validate it (stix2, object by object) and check its
    TLP markings against the envelope's, in this process: the median of `count` bundles."""
    times = []
    for i in range(count):
        payload = stix_payload(i, args.objects)
        began = time.perf_counter()
        check_markings(parse_bundle(payload), MARKINGS)
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def submit(base: str, envelopes: list[bytes], last_seq: int) -> None:
    """Store the envelopes at the broker (POST /v1/items/batch, 100 a request), then wait until
    USA's inbox lists them all, up to `last_seq` (the integrator numbers inbox entries in
    batches)."""
    with httpx.Client(base_url=base, timeout=120) as http:
        for i in range(0, len(envelopes), 100):
            body = join_batch(envelopes[i : i + 100])
            target = "/v1/items/batch"
            token = mint_token(_KEYS[SENDER].api, SENDER, AUDIENCE, method="POST", target=target, body=body)
            r = http.post(
                target,
                content=body,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/vnd.msmt.envelope-batch",
                },
            )
            r.raise_for_status()
            refused = [x for x in r.json()["results"] if x["status"] not in (201, 202)]
            if refused:
                raise SystemExit(f"the broker refused {len(refused)} envelope(s): {refused[0]}")
        deadline = time.monotonic() + 120
        target = f"/v1/inbox?after={last_seq - 1}&limit=1"
        while True:
            token = mint_token(_KEYS[RECIPIENT].api, RECIPIENT, AUDIENCE, method="GET", target=target)
            if http.get(target, headers={"Authorization": f"Bearer {token}"}).json()["deliveries"]:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"USA's inbox did not reach entry {last_seq} within 120 s")
            time.sleep(0.2)


@dataclass
class Drain:
    wall: float
    stix: float  # seconds spent on the pages of STIX items
    markdown: float
    cpu: float  # this process's CPU seconds
    broker_cpu: float
    items: int
    objects: int


def settle(pid: int, seconds: float = 30) -> None:
    """Wait until the broker is idle (its log integration of what came before done)."""
    deadline = time.monotonic() + seconds
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - before < 0.02:
            return
        before = now


def drain(
    base: str, root: bytes, broker_pid: int, args: argparse.Namespace, store_url: str | None, start_seq: int
) -> Drain:
    """Drain USA's inbox from `start_seq` (the deliveries after it are new: never received,
    receipted nor acknowledged): into a new gateway database (`store_url`), or with the client
    library alone (None)."""
    total, first_markdown = args.stix + args.markdown, start_seq + args.stix
    store = Store(store_url) if store_url is not None else None  # the schema is made before the clock
    if store is not None:
        store.set_cursor(start_seq)  # a gateway that starts following here
    client = Client(base, _KEYS[RECIPIENT], trust=TrustStore.pin(root), audience=AUDIENCE)
    client.directory()
    spent = {"stix": 0.0, "markdown": 0.0}
    cursor, end = start_seq, start_seq + total
    deadline = time.monotonic() + 600
    broker_before, cpu_before = cpu_seconds(broker_pid), time.process_time()
    start = time.perf_counter()
    while cursor < end:
        began = time.perf_counter()
        if store is not None:
            followed = follow_once(client, store, limit=PAGE, read_ahead=True)
            if followed.saved.rejected:
                raise SystemExit(
                    f"the gateway rejected {followed.saved.rejected} deliveries: see gateway_rejected"
                )
            new = followed.cursor
        else:
            batch = client.receive(cursor, limit=PAGE)
            if batch.rejected:
                raise SystemExit(f"the client rejected a delivery: {batch.rejected[0].error}")
            client.confirm(batch.received, unavailable=batch.unavailable)
            new = batch.cursor
        took = time.perf_counter() - began
        if new <= cursor:
            if time.monotonic() > deadline:
                raise SystemExit(f"the inbox stopped at {cursor - start_seq} of {total} deliveries")
            time.sleep(0.05)
            continue
        stix_here = max(0, min(new, first_markdown) - cursor)  # the STIX items come first
        spent["stix"] += took * stix_here / (new - cursor)
        spent["markdown"] += took * (new - cursor - stix_here) / (new - cursor)
        cursor = new
    wall = time.perf_counter() - start
    cpu, broker_cpu = time.process_time() - cpu_before, cpu_seconds(broker_pid) - broker_before
    client.close()
    items = objects = 0
    if store is not None:
        engine = create_engine(store_url or "")
        with engine.connect() as conn:
            items = int(conn.execute(text("SELECT count(*) FROM gateway_items")).scalar_one())
            objects = int(conn.execute(text("SELECT count(*) FROM gateway_stix_objects")).scalar_one())
        engine.dispose()
        store.close()
    return Drain(wall, spent["stix"], spent["markdown"], cpu, broker_cpu, items, objects)


@contextmanager
def gateway_database(backend: str, folder: Path, name: str) -> Iterator[str]:
    """A fresh gateway database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'{name}.db'}"
        return
    with postgresql_schema() as url:  # the test suite's: a fresh schema, dropped afterwards
        yield url


@contextmanager
def gateway_process(
    base: str, store_url: str, keys: Path, workdir: Path, name: str
) -> Iterator[tuple[str, str, int]]:
    """`msmt-gateway serve` over the database; yields its URL, an API token, and its pid.
    Stopped with SIGTERM."""
    token = os.urandom(24).hex()
    port = free_port()
    config = workdir / f"{name}.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "broker_url": base,
                "audience": AUDIENCE,
                "keys": str(keys),
                "database_url": store_url,
                "listen": f"127.0.0.1:{port}",
                "tokens": {"bench": hash_token(token)},
            }
        )
    )
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "msmt.gateway.cli",
                "serve",
                "--config",
                str(config),
                "--log-level",
                "warning",
            ],
            env={**os.environ, "MSMT_PASSPHRASE": PASSPHRASE},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"msmt-gateway serve exited ({proc.returncode}): {log_path.read_text()[-1500:]}"
                )
            try:
                r = httpx.get(f"{url}/taxii2/", headers=taxii_headers(token), timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"msmt-gateway serve did not answer within 60 s: {log_path.read_text()[-1500:]}"
                )
            time.sleep(0.1)
        yield url, token, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)  # the follower's long-poll (30 s) ends first
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def taxii_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}", "Accept": TAXII_MEDIA_TYPE}


def walk(http: httpx.Client, path: str, limit: int) -> tuple[int, int, float]:
    """Objects, pages and seconds to read the whole collection, `next` after `next`."""
    objects = pages = 0
    params: dict[str, str | int] = {"limit": limit}
    start = time.perf_counter()
    while True:
        r = http.get(path, params=params)
        if r.status_code != 200:
            raise SystemExit(f"the gateway answered {r.status_code} to {r.url}: {r.text[:300]}")
        envelope = r.json()
        objects += len(envelope.get("objects", []))
        pages += 1
        if not envelope.get("more"):
            return objects, pages, time.perf_counter() - start
        params = {"limit": limit, "next": envelope["next"]}


def concurrent_walks(
    client: Callable[[], httpx.Client], path: str, limit: int, consumers: int
) -> tuple[list[tuple[int, int, float]], float]:
    """`consumers` threads, each on its own connection, walk the collection at once; their
    walks and the wall-clock seconds from the start to the last one's end."""
    clients = [client() for _ in range(consumers)]
    barrier = threading.Barrier(consumers + 1)
    results: list[tuple[int, int, float]] = []
    lock = threading.Lock()

    def consume(http: httpx.Client) -> None:
        barrier.wait()
        result = walk(http, path, limit)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=consume, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    for c in clients:
        c.close()
    if len(results) != consumers:
        raise SystemExit(f"{consumers - len(results)} concurrent consumer(s) failed")
    return results, wall


def serve_figures(
    url: str, token: str, pid: int, args: argparse.Namespace, expected: int
) -> dict[int, dict[str, Any]]:
    path = f"/msmt/collections/{collection_id(SENDER)}/objects/"
    out: dict[int, dict[str, Any]] = {}

    def client() -> httpx.Client:
        return httpx.Client(base_url=url, headers=taxii_headers(token), timeout=120)

    def checked(result: tuple[int, int, float]) -> tuple[int, int, float]:
        if result[0] != expected:
            raise SystemExit(f"a walk of the collection read {result[0]} objects, not {expected}")
        return result

    for limit in args.limits:
        with client() as http:
            checked(walk(http, path, limit))  # untimed: warm caches and connections
            first = []
            for _ in range(args.first_pages):
                began = time.perf_counter()
                r = http.get(path, params={"limit": limit})
                first.append(time.perf_counter() - began)
                r.raise_for_status()
            single, cpu_per_k = [], []
            for _ in range(args.rounds):
                before = cpu_seconds(pid)
                objects, pages, seconds = checked(walk(http, path, limit))
                single.append(objects / seconds)
                cpu_per_k.append(1000 * (cpu_seconds(pid) - before) / objects)
        together = []
        for _ in range(args.rounds):
            results, wall = concurrent_walks(client, path, limit, args.consumers)
            for result in results:
                checked(result)
            together.append(sum(r[0] for r in results) / wall)
        quantiles = statistics.quantiles(first, n=10)
        out[limit] = {
            "pages": pages,
            "single": statistics.median(single),
            "together": statistics.median(together),
            "first_p50": statistics.median(first),
            "first_p90": quantiles[8],
            "cpu_per_k": statistics.median(cpu_per_k),
        }
    return out


def report_drain(label: str, runs: list[Drain], args: argparse.Namespace) -> dict[str, float]:
    total = args.stix + args.markdown
    figures = {
        "all": statistics.median(total / r.wall for r in runs),
        "stix": statistics.median(args.stix / r.stix for r in runs) if args.stix else float("nan"),
        "markdown": statistics.median(args.markdown / r.markdown for r in runs)
        if args.markdown
        else float("nan"),
        "cpu_ms": statistics.median(1000 * r.cpu / total for r in runs),
        "broker_ms": statistics.median(1000 * r.broker_cpu / total for r in runs),
    }
    print(
        f"  {label:<38} {figures['all']:7.0f} items/s   STIX {figures['stix']:6.0f}/s   "
        f"Markdown {figures['markdown']:6.0f}/s   CPU/item: this process {figures['cpu_ms']:.2f} ms, "
        f"broker {figures['broker_ms']:.2f} ms   (walls {', '.join(f'{r.wall:.1f}' for r in runs)} s)"
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stix", type=int, default=1000, help="STIX bundles in the inbox")
    parser.add_argument("--markdown", type=int, default=1000, help="Markdown reports in the inbox")
    parser.add_argument("--objects", type=int, default=4, help="objects per bundle (+ the TLP definition)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3, help="drains / walks per figure (medians)")
    parser.add_argument("--limits", type=int, nargs="+", default=[100, 1000], help="TAXII page sizes")
    parser.add_argument("--consumers", type=int, default=4, help="concurrent TAXII consumers")
    parser.add_argument("--first-pages", type=int, default=30, help="first-page requests timed")
    args = parser.parse_args()
    if args.stix + args.markdown < 1 or args.rounds < 1 or args.consumers < 1 or args.first_pages < 2:
        parser.error("give some items, and at least 1 round, 1 consumer and 2 first pages")

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    libraries = ["sqlalchemy", "fastapi", "uvicorn", "httpx", "stix2", "psycopg", "alembic"]
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}")
    print(
        f"python {platform.python_version()}; sqlite {sqlite3.sqlite_version}; "
        + ", ".join(f"{name} {version(name)}" for name in libraries)
    )
    if "postgresql" in backends:
        try:
            engine = create_engine(PG_BASE)
            with engine.connect() as conn:
                print(
                    f"postgresql {conn.execute(text('SHOW server_version')).scalar_one()} at {engine.url.host}"
                )
            engine.dispose()
        except Exception as exc:
            print(f"postgresql unreachable ({str(exc).splitlines()[0]}): SQLite only")
            backends.remove("postgresql")
            if not backends:
                return 1
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"inbox: {args.stix} STIX bundles of {args.objects} objects (+ the TLP:GREEN definition), then "
        f"{args.markdown} Markdown reports of {len(MARKDOWN) // 1024 + 1} KiB; KOR -> USA; pages of {PAGE}"
    )
    with tempfile.TemporaryDirectory(prefix="msmt-bench-gateway-") as tmp:
        workdir = Path(tmp)
        broker_url = f"sqlite:///{workdir / 'broker.db'}"
        bootstrap(broker_url, int(time.time() * 1000))
        root = root_of(broker_url)
        keys = workdir / "keys"
        _KEYS[RECIPIENT].save(keys, PASSPHRASE, kdf=FAST_KDF)
        TrustStore.pin(root, keys / "trust")
        expected_objects = args.stix * args.objects + (1 if args.stix else 0)
        total = args.stix + args.markdown
        kinds = ["client", *backends]
        runs: dict[str, list[Drain]] = {kind: [] for kind in kinds}
        taxii: dict[str, dict[int, dict[str, Any]]] = {}
        with broker_server(broker_url, AUDIENCE, workdir / "broker.log") as (base, broker):
            seq = 0
            print(
                f"\n1. inbox -> store: {total} new items a drain, median of {args.rounds} drains each "
                f"(interleaved: {', '.join(kinds)}, then again)"
            )
            for round_ in range(args.rounds):
                for kind in kinds:
                    began = time.perf_counter()
                    envelopes = sealed(args)  # new items every drain: their receipts are new too
                    if round_ == 0 and kind == kinds[0]:
                        print(f"  (sealing {total} envelopes: {time.perf_counter() - began:.1f} s, untimed)")
                    submit(base, envelopes, seq + total)
                    settle(broker.pid)
                    if kind == "client":
                        runs[kind].append(drain(base, root, broker.pid, args, None, seq))
                        seq += total
                        continue
                    with gateway_database(kind, workdir, f"gateway-{kind}-{round_}") as store_url:
                        last = drain(base, root, broker.pid, args, store_url, seq)
                        seq += total
                        runs[kind].append(last)
                        if last.items != total or last.objects != expected_objects:
                            raise SystemExit(
                                f"the gateway stored {last.items} items and {last.objects} objects, "
                                f"not {total} and {expected_objects}"
                            )
                        if round_ == args.rounds - 1 and args.stix:  # TAXII over the last one
                            settle(broker.pid)
                            with gateway_process(base, store_url, keys, workdir, f"gateway-{kind}") as served:
                                taxii[kind] = serve_figures(*served, args, expected_objects)
        drains = {
            kind: report_drain(
                "client library alone (no store)"
                if kind == "client"
                else f"gateway follower, store on {kind}",
                runs[kind],
                args,
            )
            for kind in kinds
        }
        for backend in backends:
            share = drains["client"]["all"] / drains[backend]["all"]
            print(
                f"  ratios, {backend}: client alone / gateway {share:.2f} "
                f"(storing takes {100 * (1 - 1 / share):.0f}% of the gateway's time); "
                f"STIX / Markdown {drains[backend]['stix'] / drains[backend]['markdown']:.2f}"
            )
        if "sqlite" in drains and "postgresql" in drains:
            print(f"  PostgreSQL / SQLite: {drains['postgresql']['all'] / drains['sqlite']['all']:.2f}")
        if args.stix:
            print(
                f"  a bundle's validation (stix2) and TLP check alone, in this process: "
                f"{validation_ms(args):.2f} ms (median of 200)"
            )

        if taxii:
            print(
                f"\n2. TAXII 2.1 objects served from KOR's collection ({expected_objects} objects), "
                f"median of {args.rounds} walks; first page: {args.first_pages} requests"
            )
            for backend, by_limit in taxii.items():
                for limit, f in by_limit.items():
                    print(
                        f"  {backend:<10} limit {limit:>4} ({f['pages']:>3} pages): 1 consumer {f['single']:7.0f} "
                        f"objects/s, {args.consumers} consumers {f['together']:7.0f} objects/s "
                        f"(x{f['together'] / f['single']:.2f}); first page p50 {1000 * f['first_p50']:.1f} ms, "
                        f"p90 {1000 * f['first_p90']:.1f} ms; gateway CPU {1000 * f['cpu_per_k']:.0f} ms "
                        "per 1,000 objects"
                    )
            limits = args.limits
            if len(limits) > 1:
                for backend, by_limit in taxii.items():
                    print(
                        f"  ratio, {backend}: limit {limits[-1]} / limit {limits[0]}, 1 consumer "
                        f"{by_limit[limits[-1]]['single'] / by_limit[limits[0]]['single']:.2f}"
                    )
            if "sqlite" in taxii and "postgresql" in taxii:
                for limit in limits:
                    print(
                        f"  ratio, limit {limit}: PostgreSQL / SQLite, 1 consumer "
                        f"{taxii['postgresql'][limit]['single'] / taxii['sqlite'][limit]['single']:.2f}"
                    )
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
