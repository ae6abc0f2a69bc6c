"""Inbox figures (issue 14): consumption rate, submit -> delivery latency, broker memory.

    .venv/bin/python bench/inbox.py [--items 2000] [--backend sqlite|postgresql|both]
                                    [--rates 10 25 50] [--wakeups poll stream]
                                    [--latency-items 300] [--batch 1] [--polls 1000]
                                    [--brokers 1]

Against one real `msmt-broker serve` process per backend (on PostgreSQL, `--brokers` of them
for the latency figure, as throughput.py measures the maximum rate):

1. broker RSS at idle (members enrolled, nothing stored);
2. `--items` items of 1 KiB to 11 recipients stored through POST /v1/items/batch; RSS after;
3. **consumption** by one consumer (NZL) with the client library, as `msmt pull` does it: pages
   of 200 with their envelopes and log proofs, each delivery's signature, log entry and
   decryption verified (`Client.receive`), then acknowledged — with plain acknowledgements
   and, separately, with signed delivery receipts (`Client.confirm`, one ML-DSA-65 + Ed25519
   signature per item, which the plain rate does not pay);
4. **latency**: 11 recipients wait, by long-poll (`wait=2`, each from a process of its own on
   a plain keep-alive connection) or by event stream (`GET /v1/inbox/stream`, all from one
   process on one event loop), while one member
   submits single envelopes at each of `--rates` per second, open-loop (each POST starts on its
   schedule from a pool of threads), or with `--batch N` the same number of items per second in
   POST /v1/items/batch requests of N (as `throughput.py` submits); for every (item, recipient),
   the time from the start of its POST to the recipient having it: p50, p90 and p99, and the
   POSTs' own answer time;
5. RSS with `--polls` long-polls waiting at once (their connections held open).

Everything shares the machine's cores with the broker; figures are wall-clock.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.broker import MARKINGS, OBSERVER, ROSTER, enrol_observer
from bench.procs import cpu_seconds, own_cpu_seconds, rss_mib  # with / without its signature workers
from broker.services.submit import join_batch
from msmt.auth import mint_token
from msmt.client import Client
from msmt.core import parse, seal
from msmt.trust import TrustStore
from tests.e2e.servers import broker_server
from tests.integration.conftest import _KEYS, AUDIENCE, MEMBERS, bootstrap, postgresql_schema, root_of


def sealed(origin: str, n: int, payload: bytes) -> list[bytes]:
    recipients = [c for c in ROSTER if c != origin]
    return [
        seal(
            payload,
            content_type="application/octet-stream",
            markings=MARKINGS,
            recipients=[(r, ROSTER[r].encryption.public_key) for r in recipients],
            originator=origin,
            signing_key=_KEYS[origin].signing,
        )
        for _ in range(n)
    ]


def headers(who: str, method: str, target: str, body: bytes = b"") -> dict[str, str]:
    keys = ROSTER[who]
    token = mint_token(keys.api, who, AUDIENCE, method=method, target=target, body=body)
    return {"Authorization": f"Bearer {token}"}


def store(base: str, envelopes: list[tuple[str, bytes]]) -> None:
    by_origin: dict[str, list[bytes]] = {}
    for origin, envelope in envelopes:
        by_origin.setdefault(origin, []).append(envelope)
    with httpx.Client(base_url=base, timeout=120) as http:
        for origin, mine in by_origin.items():
            for i in range(0, len(mine), 100):
                body = join_batch(mine[i : i + 100])
                r = http.post(
                    "/v1/items/batch",
                    content=body,
                    headers={
                        **headers(origin, "POST", "/v1/items/batch", body),
                        "Content-Type": "application/vnd.msmt.envelope-batch",
                    },
                )
                r.raise_for_status()
                assert all(x["status"] in (201, 202) for x in r.json()["results"]), r.text[:500]


def consume(base: str, url: str, who: str, signed_receipts: bool) -> tuple[int, float]:
    client = Client(base, ROSTER[who], trust=TrustStore.pin(root_of(url)), audience=AUDIENCE)
    client.directory()
    count, cursor = 0, 0
    start = time.perf_counter()
    while True:
        batch = client.receive(cursor, limit=200, read_ahead=True)
        if not batch.page.deliveries:
            break
        assert not batch.rejected, batch.rejected[:1]
        if signed_receipts:
            client.confirm(batch.received)
        else:
            client.acknowledge(r.delivery.seq for r in batch.received)
        count += len(batch.received)
        cursor = batch.cursor
    elapsed = time.perf_counter() - start
    client.close()
    return count, elapsed


async def _follow_all(base: str, cursors: dict[str, int], stop: Any, out: Any) -> None:
    """The recipients' event streams, one task each on one event loop: (item id, recipient,
    when) for every delivery, `when` on the system-wide monotonic clock that perf_counter
    reads."""
    seen: list[tuple[str, float]] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def follow(who: str) -> None:  # GET /v1/inbox/stream: one request, events pushed
            after = cursors[who]
            while True:
                target = f"/v1/inbox/stream?after={after}"
                async with http.stream("GET", target, headers=headers(who, "GET", target)) as r:
                    assert r.status_code == 200, await r.aread()
                    kind = ""
                    async for line in r.aiter_lines():
                        if line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: ") and kind == "deliveries":
                            now = time.perf_counter()
                            page = json.loads(line[6:])
                            seen.extend((d["item_id"], who, now) for d in page["deliveries"])
                            after = page["cursor"]

        async def until_stopped() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.05)

        tasks = [asyncio.ensure_future(follow(who)) for who in cursors]
        await until_stopped()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out.put(seen)


def _followers(base: str, cursors: dict[str, int], stop: Any, ready: Any, out: Any) -> None:
    ready.set()
    asyncio.run(_follow_all(base, cursors, stop, out))


def _recipient(base: str, who: str, after: int, stop: Any, ready: Any, out: Any) -> None:
    """One recipient's long-polls, from a process of its own (as each agency waits from its own
    machine), on a plain keep-alive connection (as throughput.py's load processes submit):
    (item id, recipient, when) for every delivery, `when` once the page's body is read."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    seen: list[tuple[str, str, float]] = []
    ready.set()
    while not stop.is_set():
        target = f"/v1/inbox?after={after}&limit=1000&wait=2"
        conn.request("GET", target, headers=headers(who, "GET", target))
        response = conn.getresponse()
        body = response.read()
        now = time.perf_counter()
        if response.status != 200:
            print(f"{who}'s long-poll: {response.status} {body[:300]!r}", file=sys.stderr)
            break
        page = json.loads(body)
        seen.extend((d["item_id"], who, now) for d in page["deliveries"])
        after = page["cursor"]
    conn.close()
    out.put(seen)


def latency(
    bases: list[str],
    rate: float,
    items: int,
    broker_pids: list[int],
    streams: bool = False,
    batch: int = 1,
) -> list[float]:
    """Seconds from each POST's start to each recipient's long-poll returning the item; with
    `batch` > 1, `rate` items per second go as POST /v1/items/batch of `batch` envelopes each
    (`rate / batch` requests per second, as the throughput figures submit), and each item's
    time runs from the start of its batch's POST.

    With several broker processes (`bases`, PostgreSQL), as the maximum rate was measured
    (throughput.py --brokers 2): the POSTs go to each in turn, and the recipients' long-polls
    are spread over them likewise, so that most wake-ups cross from the process that stored an
    item to another one (LISTEN/NOTIFY) as they would behind a load balancer.

    Long-polls: each recipient waits from a process of its own on a plain keep-alive
    connection (`_recipient`). Until the ninth session they shared one process and one httpx
    event loop (as the streams still do, `_follow_all`), whose ~2 ms of client CPU per
    long-poll cycle took 37-45% of a core at 500 items/s in POSTs of 25, from the two cores the
    broker runs on: the figure then held the load generator's share of the machine. With all in
    one interpreter (as this script first had them, 12 threads) a response waited for the GIL
    behind the others, and the figure was the load generator's likewise."""
    origin = "KOR"
    recipients = [c for c in ROSTER if c != origin]
    envelopes = sealed(origin, items, b"l" * 1024)
    cursors: dict[str, int] = {}
    base = bases[0]
    with httpx.Client(base_url=base, timeout=30) as http:
        for who in recipients:  # start after whatever is there already
            cursors[who] = 0
            while True:
                target = f"/v1/inbox?after={cursors[who]}&limit=1000"
                page = http.get(target, headers=headers(who, "GET", target)).json()
                if not page["deliveries"]:
                    break
                cursors[who] = page["cursor"]
        context = mp.get_context("fork")  # the observer's keys are made at import: inherit them
        stop, out = context.Event(), context.Queue()
        readies = [context.Event() for _ in range(1 if streams else len(cursors))]
        if streams:
            pollers = [context.Process(target=_followers, args=(base, cursors, stop, readies[0], out))]
        else:
            pollers = [
                context.Process(target=_recipient, args=(bases[i % len(bases)], who, after, stop, ready, out))
                for i, ((who, after), ready) in enumerate(zip(cursors.items(), readies, strict=True))
            ]
        for process in pollers:
            process.start()
        for ready in readies:
            ready.wait(30)
        time.sleep(2.0)  # every long-poll waiting
        sent_at: dict[str, float] = {}
        answered: list[float] = []
        statuses: list[int] = []
        path, media = ("/v1/items", "application/vnd.msmt.envelope")
        if batch > 1:
            path, media = ("/v1/items/batch", "application/vnd.msmt.envelope-batch")
        groups = [envelopes[i : i + batch] for i in range(0, len(envelopes), batch)]
        bodies = [group[0] if batch == 1 else join_batch(group) for group in groups]
        prepared = [
            ([parse(e).header.item_id for e in group], body, headers(origin, "POST", path, body))
            for group, body in zip(groups, bodies, strict=True)
        ]
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        with ExitStack() as clients, ThreadPoolExecutor(max_workers=32) as pool:
            postings = [
                clients.enter_context(httpx.Client(base_url=b, timeout=30, limits=limits)) for b in bases
            ]

            def post(item_ids: list[str], body: bytes, auth: dict[str, str], posting: httpx.Client) -> None:
                started = time.perf_counter()
                for item_id in item_ids:
                    sent_at[item_id] = started
                r = posting.post(path, content=body, headers={**auth, "Content-Type": media})
                answered.append(time.perf_counter() - started)
                if batch == 1:
                    statuses.append(r.status_code)
                else:
                    statuses.extend(x["status"] for x in r.json()["results"])

            # open loop: each submission starts on its schedule, whether or not the ones before
            # it were answered (a closed loop measured its own queue: at 25/s its POSTs took
            # ~100 ms each and it submitted ~10/s)
            interval = len(prepared[0][0]) / rate
            next_at = time.perf_counter()
            cpu_before = (
                sum(cpu_seconds(pid) for pid in broker_pids),
                sum(cpu_seconds(process.pid or 0) for process in pollers),
                time.process_time(),
                time.perf_counter(),
                sum(own_cpu_seconds(pid) for pid in broker_pids),
            )
            for n, (item_ids, body, auth) in enumerate(prepared):
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                next_at += interval
                pool.submit(post, item_ids, body, auth, postings[n % len(postings)])
        assert statuses == [201] * len(envelopes), Counter(statuses)
        broker_cpu = sum(cpu_seconds(pid) for pid in broker_pids) - cpu_before[0]
        pollers_cpu = sum(cpu_seconds(process.pid or 0) for process in pollers) - cpu_before[1]
        submitter_cpu = time.process_time() - cpu_before[2]
        server_cpu = sum(own_cpu_seconds(pid) for pid in broker_pids) - cpu_before[4]
        wall = time.perf_counter() - cpu_before[3]
        time.sleep(3.0)  # the last deliveries reach every poller
        stop.set()
        seen = [delivery for _ in pollers for delivery in out.get(timeout=60)]
        for process in pollers:
            process.join(30)
    waits = [when - sent_at[item] for item, _, when in seen if item in sent_at]
    got = Counter(who for item, who, _ in seen if item in sent_at)
    assert got == dict.fromkeys(recipients, items), got
    print(
        f"    ({rate:.0f}/s {'streams' if streams else 'long-polls'}: POST answered p50 "
        f"{1000 * statistics.median(answered):.1f} ms; CPU while submitting: broker "
        f"{1000 * broker_cpu / len(envelopes):.1f} ms per submission ({100 * broker_cpu / wall:.0f}% of a core"
        f"{f' over {len(bases)} processes' if len(bases) > 1 else ''}; "
        f"the server process{'es' if len(bases) > 1 else ''} alone {100 * server_cpu / wall:.0f}%, "
        "the rest its signature workers), "
        f"recipients {100 * pollers_cpu / wall:.0f}%, submitter {100 * submitter_cpu / wall:.0f}%)",
        flush=True,
    )
    if not streams:  # a long-poll's deliveries share the time its page was read: one per answer
        answers = len({(who, when) for item, who, when in seen if item in sent_at})
        print(
            f"    ({answers / len(recipients):.0f} long-poll answers with items per recipient for "
            f"{len(prepared)} POSTs, {items * len(recipients) / max(answers, 1):.1f} items each)",
            flush=True,
        )
    return waits


async def hold_polls(base: str, count: int, pid: int) -> tuple[float, int]:
    """RSS while `count` long-polls wait; how many got an answer early (should be none)."""
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    members = [c for c in ROSTER]
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:

        async def one(i: int) -> int:
            who = members[i % len(members)]
            target = f"/v1/inbox?after={10**9 + i}&wait=20"
            r = await http.get(target, headers=headers(who, "GET", target))
            if r.status_code != 200:
                print(f"    a long-poll of {who}: {r.status_code} {r.text[:200]}", file=sys.stderr)
            return r.status_code

        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        await asyncio.sleep(8)
        early = sum(t.done() for t in tasks)
        rss = rss_mib(pid)
        statuses = await asyncio.gather(*tasks)
        assert all(s == 200 for s in statuses), sorted(set(statuses))
    return rss, early


def run(url: str, args: argparse.Namespace, workdir: Path, brokers: int = 1) -> None:
    # enough long-polls for --polls of them spread over the 12 members (the defaults: 20 each)
    per_member = max(20, -(-args.polls // 12) + 2)
    bootstrap(url, int(time.time() * 1000), quotas={"long_polls": per_member})
    enrol_observer(url)
    per_origin = max(1, args.items // len(MEMBERS))
    envelopes = [(o, e) for o in MEMBERS for e in sealed(o, per_origin, os.urandom(1024))]
    caps = {
        "inbox_max_waiting_per_member": str(per_member),
        "inbox_max_waiting": str(12 * per_member),
        "max_connections": str(15 * per_member + 100),  # long-polls may hold 80% of the connections
    }
    with broker_server(url, AUDIENCE, workdir / "bench-inbox.log", **caps) as (base, proc):
        time.sleep(1)
        idle = rss_mib(proc.pid)
        store(base, envelopes)
        stored = rss_mib(proc.pid)
        n1, s1 = consume(base, url, OBSERVER, signed_receipts=False)
        n2, s2 = consume(base, url, "NZL", signed_receipts=True)
        with ExitStack() as more:  # further processes for the latency figure (--brokers)
            others = [
                more.enter_context(broker_server(url, AUDIENCE, workdir / f"bench-inbox-{i}.log", **caps))
                for i in range(1, brokers)
            ]
            bases, pids = [base] + [b for b, _ in others], [proc.pid] + [p.pid for _, p in others]
            waits = {
                (mode, rate): latency(
                    bases, rate, args.latency_items, pids, streams=mode == "stream", batch=args.batch
                )
                for mode in args.wakeups
                for rate in args.rates
            }
        polls_rss, early = asyncio.run(hold_polls(base, args.polls, proc.pid))
        after = rss_mib(proc.pid)
    print(
        f"  consumption (one consumer, pages of 200, verify + open each): {n1 / s1:7.0f} items/s with plain "
        f"acks ({n1} items), {n2 / s2:6.0f} items/s with signed delivery receipts ({n2} items)"
    )
    for (mode, rate), seen in waits.items():
        q = statistics.quantiles(seen, n=100)
        how = "long-poll return" if mode == "poll" else "stream event"
        batches = f" (POSTs of {args.batch})" if args.batch > 1 else ""
        print(
            f"  submit -> {how} at {rate:.0f} submits/s{batches}, 11 recipients {'polling' if mode == 'poll' else 'streaming'}: "
            f"p50 {1000 * q[49]:.1f} ms, p90 {1000 * q[89]:.1f} ms, p99 {1000 * q[98]:.1f} ms "
            f"({len(seen)} deliveries)"
        )
    print(
        f"  broker RSS: idle {idle:.0f} MiB, after {len(envelopes)} items stored {stored:.0f} MiB, "
        f"{args.polls} long-polls waiting {polls_rss:.0f} MiB ({early} answered early), after {after:.0f} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[10.0, 25.0, 50.0], help="single submissions per second"
    )
    parser.add_argument("--latency-items", type=int, default=300)
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="latency: envelopes per POST (1: POST /v1/items; more: POST /v1/items/batch, as throughput.py)",
    )
    parser.add_argument(
        "--wakeups",
        nargs="+",
        choices=["poll", "stream"],
        default=["poll", "stream"],
        help="how the recipients wait: long-polls (GET /v1/inbox?wait=), event streams (GET /v1/inbox/stream)",
    )
    parser.add_argument("--polls", type=int, default=1000)
    parser.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="PostgreSQL: broker processes for the latency figure (as throughput.py --brokers measures the maximum)",
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))  # the broker inherits it
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}")
    print(
        f"python {platform.python_version()}; 1 broker process"
        f"{f' ({args.brokers} for the latency figure on PostgreSQL)' if args.brokers > 1 else ''}"
        "; payloads of 1 KiB to 11 recipients"
    )
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            print(f"{backend}:")
            if backend == "sqlite":
                run(f"sqlite:///{tmp}/bench.db", args, Path(tmp))
            else:
                with postgresql_schema() as url:
                    run(url, args, Path(tmp), brokers=args.brokers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
