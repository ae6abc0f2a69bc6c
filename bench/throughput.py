"""Accepted submissions per second, and broker CPU per submission (issue 14's figures).

    .venv/bin/python bench/throughput.py [--items 3000] [--backend sqlite|postgresql|both]
                                         [--brokers N] [--load-procs 2] [--threads 8]

Real `msmt-broker serve` processes (SQLite: one; PostgreSQL: `--brokers`, default 2, the load
split between them), 1 KiB payloads sealed for 11 recipients and their tokens minted (bound to
their request, docs/protocol.md) BEFORE the clock starts: the figures are the broker's — HTTP,
authentication, parsing, signature verification, policy, group commit and log integration
with a signed checkpoint per batch. The load comes from `--load-procs` processes of plain
keep-alive HTTP/1.1 connections on the same 2 cores as the brokers, so read the rate as a
floor; the broker's CPU time per accepted submission is read from /proc and set beside the
cost of verifying one envelope's signatures in this process (the one cost the broker cannot
avoid), timed DURING the run (`VerifySampler`: bursts of 10 verifications every 0.25 s on a thread
of this otherwise idle process, the median of their own CPU time): the ratio's denominator.
Timings just before and just after the run are printed too, and the ratio against their mean.
(This machine's speed drifts by up to ~1.6x between minutes: one verification measured 0.384
and 0.606 ms in runs a minute apart, so a single timing before the load moved the ratio from
2.4x to 3.9x with the broker's CPU unchanged; before and after can both miss the run's minutes.) The
signature workers' own CPU per submission (verification, plus each envelope's framing, the
pipe and two SHA-256s) is set beside it too: measured in the same window as the broker's, it
is an upper bound of verification under that load. On PostgreSQL the CPU of the server's
processes on this machine over the run is shown per submission beside it (the server shares
the same two cores).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from bench.broker import ROSTER, enrol_observer, seal_items
from bench.procs import cpu_seconds, own_cpu_seconds  # the broker's and its signature workers'
from broker.services.submit import join_batch
from broker.store.db import make_engine
from msmt.auth import mint_token
from msmt.core import parse, verify
from tests.e2e.servers import broker_server
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, postgresql_schema

TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds() -> float:
    """CPU seconds of every PostgreSQL server process on this machine (the server shares the
    two cores with the brokers and the load): what the run cost it is the difference."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")].startswith("postgres"):
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def _requests(work: list[tuple[str, bytes]], batch: int) -> list[tuple[str, bytes, str, int]]:
    """(path, body, token, envelopes) per request: one envelope each, or batches of one
    originator's envelopes (POST /v1/items/batch)."""
    if batch <= 1:
        return [
            (
                "/v1/items",
                envelope,
                mint_token(
                    _KEYS[origin].api, origin, AUDIENCE, method="POST", target="/v1/items", body=envelope
                ),
                1,
            )
            for origin, envelope in work
        ]
    by_origin: dict[str, list[bytes]] = {}
    for origin, envelope in work:
        by_origin.setdefault(origin, []).append(envelope)
    out = []
    for origin, envelopes in by_origin.items():
        for i in range(0, len(envelopes), batch):
            body = join_batch(envelopes[i : i + batch])
            token = mint_token(
                _KEYS[origin].api, origin, AUDIENCE, method="POST", target="/v1/items/batch", body=body
            )
            out.append(("/v1/items/batch", body, token, len(envelopes[i : i + batch])))
    return out


def _load(base: str, work: list[tuple[str, bytes]], threads: int, batch: int, ready: Any, out: Any) -> None:
    """One load process: mint every token first, then POST as fast as the broker answers."""
    requests = _requests(work, batch)
    parts = urlsplit(base)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def run(chunk: list[tuple[str, bytes, str, int]]) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        seen: Counter[int] = Counter()
        for path, body, token, _ in chunk:
            kind = "envelope-batch" if path.endswith("batch") else "envelope"
            conn.request(
                "POST",
                path,
                body=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": f"application/vnd.msmt.{kind}"},
            )
            response = conn.getresponse()
            answer = response.read()
            if path.endswith("batch") and response.status == 200:
                for result in json.loads(answer)["results"]:
                    seen[result["status"]] += 1
            else:
                seen[response.status] += 1
        conn.close()
        with lock:
            statuses.update(seen)

    workers = [threading.Thread(target=run, args=(requests[i::threads],)) for i in range(threads)]
    ready.wait()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put(dict(statuses))


def verify_cost(items: list[tuple[str, bytes]], repeat: int = 400) -> float:
    """Seconds of CPU to verify one envelope's signatures (parse excluded)."""
    envelopes = [parse(e) for _, e in items[:repeat]]
    keys = {c: ROSTER[c].signing.public_key for c in ROSTER}
    start = time.process_time()
    for envelope in envelopes:
        verify(envelope, keys[envelope.header.originator])
    return (time.process_time() - start) / len(envelopes)


class VerifySampler:
    """Verifications timed DURING the run, in a thread of this process (otherwise idle while
    the load runs): every `every_s`, `burst` envelopes back to back (as a signature worker
    verifies its share of a part, caches warm), timed by this thread's own CPU clock; a sample
    is a burst's mean. So the ratio's denominator is what a verification cost on this machine
    at the same moments as the broker's CPU was spent (the machine's speed drifts between
    minutes, and timings before and after the run can both miss the run's minutes). Lone
    verifications 20 ms apart, caches cold, cost ~1.5x a warm one under the same load: not
    what the workers pay. It adds ~2% of a core (10 x ~0.4 ms every 0.25 s)."""

    def __init__(self, items: list[tuple[str, bytes]], every_s: float = 0.25, burst: int = 10) -> None:
        self.envelopes = [parse(e) for _, e in items[:200]]
        self.keys = {c: ROSTER[c].signing.public_key for c in ROSTER}
        self.every_s = every_s
        self.burst = burst
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="verify-sampler", daemon=True)

    def _loop(self) -> None:
        n = 0
        while not self._stop.wait(self.every_s):
            start = time.thread_time()
            for _ in range(self.burst):
                envelope = self.envelopes[n % len(self.envelopes)]
                verify(envelope, self.keys[envelope.header.originator])
                n += 1
            self.samples.append((time.thread_time() - start) / self.burst)

    def __enter__(self) -> VerifySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def median_ms(self) -> float:
        ordered = sorted(self.samples)
        return 1000 * ordered[len(ordered) // 2] if ordered else float("nan")


def integration_figures(url: str) -> dict[str, float]:
    """Integration against submission, from what the run left in the store: items accepted per
    second (their `received_ms`) and item leaves integrated per second (their log entries'
    `created_ms`) over the run's window, and how long each item waited between the two."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT i.received_ms, e.created_ms FROM items i LEFT JOIN log_entries e "
                    "ON e.kind = 'item' AND e.ref = i.item_id"
                )
            ).all()
    finally:
        engine.dispose()
    received = sorted(r[0] for r in rows)
    integrated = sorted(r[1] for r in rows if r[1] is not None)
    lags = sorted(r[1] - r[0] for r in rows if r[1] is not None)
    if not rows or not integrated:
        return {"integrated": 0.0}

    def rate(times: list[int]) -> float:
        return 1000 * (len(times) - 1) / max(times[-1] - times[0], 1)

    def pct(p: float) -> float:
        return float(lags[min(len(lags) - 1, int(p * len(lags)))])

    return {
        "integrated": len(integrated) / len(rows),
        "accept_rate": rate(received),
        "integrate_rate": rate(integrated),
        "lag_p50": pct(0.50),
        "lag_p99": pct(0.99),
        "lag_max": float(lags[-1]),
    }


def run(
    url: str,
    items: list[tuple[str, bytes]],
    brokers: int,
    procs: int,
    threads: int,
    batch: int,
    workdir: Path,
) -> dict[str, float]:
    bootstrap(url, int(time.time() * 1000))
    enrol_observer(url)
    with ExitStack() as stack:
        servers = [
            stack.enter_context(broker_server(url, AUDIENCE, workdir / f"bench-{i}.log"))
            for i in range(brokers)
        ]
        ctx = mp.get_context("spawn")
        ready = ctx.Barrier(procs + 1)
        out = ctx.Queue()
        loaders = [
            ctx.Process(
                target=_load,
                args=(servers[i % brokers][0], items[i::procs], threads, batch, ready, out),
            )
            for i in range(procs)
        ]
        for loader in loaders:
            loader.start()
        cpu_before = sum(cpu_seconds(proc.pid) for _, proc in servers)
        own_before = sum(own_cpu_seconds(proc.pid) for _, proc in servers)
        server_before = server_cpu_seconds()
        with VerifySampler(items) as sampler:
            ready.wait()
            start = time.perf_counter()
            statuses: Counter[int] = Counter()
            for _ in loaders:
                statuses.update(out.get())
            elapsed = time.perf_counter() - start
        cpu = sum(cpu_seconds(proc.pid) for _, proc in servers) - cpu_before
        own = sum(own_cpu_seconds(proc.pid) for _, proc in servers) - own_before
        server_cpu = server_cpu_seconds() - server_before
        for loader in loaders:
            loader.join()
    accepted = statuses[201] + statuses[202]
    if accepted != len(items):
        print(f"  not every submission was accepted: {dict(statuses)}", file=sys.stderr)
    return {
        "rate": accepted / elapsed,
        "cpu_ms": 1000 * cpu / max(accepted, 1),
        "own_cpu_ms": 1000 * own / max(accepted, 1),  # the server processes' alone, no workers
        "server_cpu_ms": 1000 * server_cpu / max(accepted, 1),
        "logged": statuses[201] / max(accepted, 1),
        "verify_during_ms": sampler.median_ms(),
        "verify_samples": len(sampler.samples),
        **integration_figures(url),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--brokers", type=int, default=2, help="broker processes on PostgreSQL")
    parser.add_argument("--load-procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="connections per load process")
    parser.add_argument(
        "--batch", type=int, default=1, help="envelopes per request (>1: POST /v1/items/batch)"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}")
    print(
        f"python {platform.python_version()}; {args.items} items of 1 KiB to 11 recipients, "
        f"{args.load_procs} load processes x {args.threads} connections, "
        f"{args.batch} envelope(s) per request, same machine"
    )
    items = seal_items(args.items)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            before_ms = 1000 * verify_cost(items)
            if backend == "sqlite":
                brokers = 1
                figures = run(
                    f"sqlite:///{tmp}/bench.db",
                    items,
                    1,
                    args.load_procs,
                    args.threads,
                    args.batch,
                    Path(tmp),
                )
            else:
                brokers = args.brokers
                with postgresql_schema() as url:
                    figures = run(url, items, brokers, args.load_procs, args.threads, args.batch, Path(tmp))
            after_ms = 1000 * verify_cost(items)
            verify_ms = (before_ms + after_ms) / 2
            workers_ms = figures["cpu_ms"] - figures["own_cpu_ms"]
            during_ms = figures["verify_during_ms"]
            print(
                f"{backend:>10}: verifying one envelope's signatures (Ed25519 + ML-DSA-65) in this process: "
                f"{before_ms:.3f} ms of CPU before the run, {after_ms:.3f} ms after, "
                f"{during_ms:.3f} ms during it (median of {figures['verify_samples']:.0f})"
            )
            print(
                f"{backend:>10} ({brokers} broker process{'es' if brokers > 1 else ''}): "
                f"{figures['rate']:7.1f} accepted submissions/s | broker CPU {figures['cpu_ms']:.2f} ms "
                f"per submission = {figures['cpu_ms'] / during_ms:.1f}x signature verification timed "
                f"during the run ({figures['cpu_ms'] / verify_ms:.1f}x the mean of before and after) "
                f"({figures['cpu_ms'] / workers_ms:.1f}x the signature workers' CPU in the same run) "
                f"({figures['own_cpu_ms']:.2f} ms in the server process{'es' if brokers > 1 else ''}, "
                f"the rest in {'their' if brokers > 1 else 'its'} signature workers) | "
                + (
                    f"PostgreSQL server CPU {figures['server_cpu_ms']:.2f} ms per submission | "
                    if backend == "postgresql"
                    else ""
                )
                + f"{100 * figures['logged']:.0f}% answered 201 (in the log)"
            )
            if figures["integrated"]:
                print(
                    f"{'':>10}   log integration in the same run: {figures['integrate_rate']:7.1f} item leaves/s "
                    f"against {figures['accept_rate']:.1f} items stored/s (ratio "
                    f"{figures['integrate_rate'] / figures['accept_rate']:.2f}); "
                    f"{100 * figures['integrated']:.1f}% of the items integrated; stored -> integrated "
                    f"p50 {figures['lag_p50']:.0f} ms, p99 {figures['lag_p99']:.0f} ms, max {figures['lag_max']:.0f} ms"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
