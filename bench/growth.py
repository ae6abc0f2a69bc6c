"""Growth (issue 14): submit and inbox-page latency, and broker RSS, at 10^3 and at N stored
items (default 10^6), in one run, with the query plans at N.

    .venv/bin/python bench/growth.py [--backend sqlite|postgresql|both] [--items 1000000]
                                     [--quick] [--submits 300] [--pages 200]

For each size a fresh store is migrated and bootstrapped as the other benches do it (the 11
members' root, an admin, the observer member: bench/broker.py), given quotas no bench
reaches, and then filled by a bulk loader with what N accepted and integrated submissions
would have left behind:

- `items`: one row per item, a UUIDv7 id in creation order, a placeholder envelope of
  `--envelope-bytes` random bytes (default 2 KiB) with its real SHA-256 and size;
- `deliveries`: NZL receives every item it did not originate (its inbox is the large one)
  and one or two other members each item, so ~2.4 deliveries per item; per-recipient
  `seq`s gap-free in log order; all acknowledged but the newest 1% of items;
- `inbox_counters` at each recipient's last seq, `member_usage` at each originator's bytes;
- the transparency log: `log_entries` (placeholder leaf bytes: the index as 8 bytes) and the
  Merkle tree over their hashes in `log_nodes` / `log_state`, loaded by bench/log.py's
  `load_tree` (the same leaves): inclusion proofs served for the stored items are proofs
  in that tree.

SQLite: executemany in transactions of 20,000 items; PostgreSQL: COPY, then VACUUM ANALYZE
(what autovacuum does after a bulk change). Both stores (10^3 and N) are loaded first; then a
real `msmt-broker serve` process is started on each and the two are measured with real
requests, one at a time (keep-alive HTTP), alternating between the two brokers (ABAB..., the
order flipped every round) so that whatever else runs on the machine weighs on both alike;
tokens are minted and envelopes sealed (1 KiB payloads, 11 recipients) before each request's
clock starts:

1. submit latency (POST /v1/items, 201 = stored and integrated): median and p90;
2. inbox-page latency for NZL: GET /v1/inbox?after=<recent cursor>&limit=100, plain and with
   include=envelope&proofs=<log size>: median and p90;
3. broker RSS: idle on the loaded store, and after the requests.

The ratios N / 10^3 are printed (target: latency <= 1.2). At N, the statements the broker's
own code runs for one submit (store + integrate) and one inbox page (with and without
envelopes and proofs, plus an acknowledgement) are captured in this process and explained
(SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN ANALYZE, in a transaction rolled back):
a full scan of items, deliveries, log_entries or log_nodes is flagged.

Other processes may share the cores: the load average is printed before and after; the
ratios, measured in one run with interleaved requests, are what to compare.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, event, inspect, text

from bench.broker import ROSTER, enrol_observer, seal_items
from bench.inbox import headers, rss_mib
from bench.log import load_tree
from broker.services import inbox as inbox_service
from broker.services import log as log_service
from broker.services import policy as policy_service
from broker.services.auth import Caller
from broker.services.registry import RegistryCache
from broker.services.submit import accept_batch, prepare
from broker.settings import Settings
from broker.store import queries
from broker.store.db import make_engine, make_sessionmaker, transaction
from msmt.core import merkle
from msmt.core.ids import new_item_id
from tests.e2e.servers import broker_server
from tests.integration.conftest import AUDIENCE, MEMBERS, bootstrap, postgresql_schema

BIG_INBOX = "NZL"  # receives every item it did not originate
BATCH = 20_000
LARGE_TABLES = ("items", "deliveries", "log_entries", "log_nodes")  # grow with the items
HOT_TABLES = (*LARGE_TABLES, "inbox_counters", "member_usage", "log_pending", "log_state")
ITEM_COLUMNS = (
    "item_id",
    "originator",
    "originator_key_id",
    "created_ms",
    "received_ms",
    "classification",
    "tlp",
    "content_type",
    "size",
    "envelope_sha256",
    "envelope",
    "log_index",
    "submitted_with_key",
    "recipients",
    "policy_version",
)
DELIVERY_COLUMNS = ("item_id", "recipient", "seq", "state", "created_ms", "acked_ms")
ENTRY_COLUMNS = ("log_index", "kind", "ref", "leaf_hash", "created_ms", "leaf")


# --- the bulk loader -------------------------------------------------------------------------


@dataclass
class Loaded:
    items: int
    deliveries: int
    seconds: float
    last_seq: dict[str, int]
    stored_bytes: dict[str, int]


@dataclass
class _Rows:
    items: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    entries: list[tuple[Any, ...]] = field(default_factory=list)


def generate(
    n: int, envelope_bytes: int, now_ms: int, last_seq: dict[str, int], stored: dict[str, int], seed: int = 14
) -> Iterator[_Rows]:
    """Batches of rows for items 0..n-1 (log index = item number); `last_seq` (each
    recipient's last inbox number) and `stored` (each originator's bytes) are kept up to date."""
    rng = random.Random(seed)
    roster = list(ROSTER)  # the 11 members and the observer
    pending_from = n - max(10, n // 100)  # the newest 1% are not acknowledged yet
    step_ms = 10  # one item every 10 ms, ending a minute ago: new submissions sort after them
    first_ms = now_ms - 60_000 - n * step_ms
    last_seq.update(dict.fromkeys(roster, 0))
    for start in range(0, n, BATCH):
        rows = _Rows()
        for i in range(start, min(n, start + BATCH)):
            origin = MEMBERS[i % len(MEMBERS)]
            at = first_ms + i * step_ms
            item_id = new_item_id(at)
            envelope = rng.randbytes(envelope_bytes)
            others = [c for c in roster if c not in (origin, BIG_INBOX)]
            recipients = rng.sample(others, 1 + i % 2)
            if origin != BIG_INBOX:
                recipients.append(BIG_INBOX)
            rows.items.append(
                (
                    item_id,
                    origin,
                    "bulk",
                    at,
                    at,
                    "RESTRICTED",
                    "GREEN",
                    "application/octet-stream",
                    envelope_bytes,
                    hashlib.sha256(envelope).hexdigest(),
                    envelope,
                    i,
                    "bulk",
                    ",".join(sorted(recipients)),
                    1,
                )
            )
            stored[origin] = stored.get(origin, 0) + envelope_bytes
            acked = i < pending_from
            for r in sorted(recipients):
                last_seq[r] += 1
                rows.deliveries.append(
                    (
                        item_id,
                        r,
                        last_seq[r],
                        "acknowledged" if acked else "pending",
                        at,
                        at + 1000 if acked else None,
                    )
                )
            leaf = i.to_bytes(8, "big")  # bench/log.py load_tree's leaf i
            rows.entries.append((i, "item", item_id, merkle.leaf_hash(leaf), at, leaf))
        yield rows


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _write_sqlite(url: str, batches: Iterator[_Rows]) -> None:
    conn = sqlite3.connect(_sqlite_path(url), isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # the loader's own connection only
    conn.execute("PRAGMA foreign_keys=ON")

    def insert(table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns))
        conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    for rows in batches:
        conn.execute("BEGIN IMMEDIATE")
        insert("items", ITEM_COLUMNS, rows.items)
        insert("deliveries", DELIVERY_COLUMNS, rows.deliveries)
        insert("log_entries", ENTRY_COLUMNS, rows.entries)
        conn.execute("COMMIT")
    conn.close()


def _write_postgresql(engine: Engine, batches: Iterator[_Rows]) -> None:
    raw = engine.raw_connection()
    try:
        pg = raw.driver_connection
        assert pg is not None
        for rows in batches:
            with pg.cursor() as cur:
                for table, columns, data in (
                    ("items", ITEM_COLUMNS, rows.items),
                    ("deliveries", DELIVERY_COLUMNS, rows.deliveries),
                    ("log_entries", ENTRY_COLUMNS, rows.entries),
                ):
                    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in data:
                            copy.write_row(row)
            pg.commit()
    finally:
        raw.close()


def load_store(url: str, n: int, envelope_bytes: int = 2048) -> Loaded:
    """Fill a bootstrapped store (bench/broker.py's members, nothing integrated yet) with `n`
    integrated items, their deliveries and their log."""
    engine = make_engine(url)
    with engine.connect() as conn:
        size = conn.execute(text("SELECT size FROM log_state WHERE id = 1")).scalar_one()
        assert size == 0, f"the log already holds {size} leaves: load before the broker integrates"
    start = time.perf_counter()
    load_tree(url, n)  # bench/log.py: the Merkle tree of leaves 0..n-1 (index as 8 bytes)
    tree_s = time.perf_counter() - start
    last_seq: dict[str, int] = {}
    stored: dict[str, int] = {}
    batches = generate(n, envelope_bytes, int(time.time() * 1000), last_seq, stored)
    if engine.dialect.name == "sqlite":
        _write_sqlite(url, batches)
    else:
        _write_postgresql(engine, batches)
    with engine.begin() as conn:
        for recipient, seq in last_seq.items():
            conn.execute(
                text("UPDATE inbox_counters SET last_seq = :s WHERE recipient = :r"),
                {"s": seq, "r": recipient},
            )
        if "member_usage" in inspect(conn).get_table_names():  # per-member quotas (migration 0008)
            conn.execute(text("DELETE FROM member_usage"))
            conn.execute(
                text("INSERT INTO member_usage (country, stored_bytes) VALUES (:c, :b)"),
                [{"c": c, "b": b} for c, b in sorted(stored.items())],
            )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))  # what autovacuum does after a bulk change
    with engine.connect() as conn:
        deliveries = int(conn.execute(text("SELECT count(*) FROM deliveries")).scalar_one())
    engine.dispose()
    seconds = time.perf_counter() - start
    print(
        f"    loaded {n:,} items, {deliveries:,} deliveries, {n:,} log leaves in {seconds:,.1f} s "
        f"(tree {tree_s:,.1f} s; {n / seconds:,.0f} items/s)",
        flush=True,
    )
    return Loaded(n, deliveries, seconds, last_seq, stored)


def high_quotas(url: str) -> bool:
    """A policy document whose quotas no bench reaches (sequential requests of one member
    would otherwise meet the default 100 requests/s). False if the broker has no quotas."""
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    try:
        with transaction(factory) as session:
            document = policy_service.export_document(session)
            quotas = getattr(document, "quotas", None)
            if quotas is None:
                return False
            generous = quotas.model_copy(
                update={
                    "requests_per_second": 1_000_000.0,
                    "burst": 1_000_000,
                    "long_polls": 100_000,
                    "stored_bytes": 1 << 50,
                }
            )
            policy_service.apply_document(
                session,
                "bench",
                document.model_copy(update={"quotas": generous}),
                int(time.time() * 1000),
                with_access=False,
            )
        return True
    finally:
        engine.dispose()


# --- measuring with a real broker ----------------------------------------------------------


@dataclass
class Figures:
    submit: list[float] = field(default_factory=list)
    page: list[float] = field(default_factory=list)
    page_full: list[float] = field(default_factory=list)
    rss_idle: float = 0.0
    rss_after: float = 0.0


@dataclass
class Target:
    """One store and the broker serving it."""

    n: int
    url: str
    base: str
    pid: int
    http: httpx.Client
    figures: Figures = field(default_factory=Figures)
    last_seq: int = 0
    size: int = 0


def _scalar(url: str, sql: str, **params: Any) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql), params).scalar_one())
    finally:
        engine.dispose()


def _settle(url: str, timeout_s: float = 60) -> None:
    """Wait until the broker integrated what bootstrap staged (directory, policy versions)."""
    deadline = time.monotonic() + timeout_s
    while _scalar(url, "SELECT count(*) FROM log_pending") and time.monotonic() < deadline:
        time.sleep(0.2)


def _timed(http: httpx.Client, method: str, target: str, body: bytes, who: str, **extra: str) -> float:
    hdrs = {**headers(who, method, target, body), **extra}  # minted before the clock starts
    start = time.perf_counter()
    r = http.request(method, target, content=body or None, headers=hdrs)
    elapsed = time.perf_counter() - start
    if r.status_code not in (200, 201):
        raise RuntimeError(f"{method} {target}: {r.status_code} {r.text[:300]}")
    return elapsed


def _alternate(targets: list[Target], count: int, one: Callable[[Target, int], float]) -> list[list[float]]:
    """`count` requests to each target, interleaved (ABAB..., the order flipped every round) so
    that whatever else runs on the machine weighs on both alike."""
    out: list[list[float]] = [[] for _ in targets]
    for k in range(count):
        order = list(range(len(targets)))
        if k % 2:
            order.reverse()
        for t in order:
            out[t].append(one(targets[t], k))
    return out


def measure(targets: list[Target], submits: int, pages: int) -> None:
    """Submit and inbox-page latency against every target's broker, interleaved; RSS."""
    warm = 20
    envelope_type = {"Content-Type": "application/vnd.msmt.envelope"}
    for t in targets:
        _settle(t.url)
    time.sleep(1)
    for t in targets:
        t.figures.rss_idle = rss_mib(t.pid)
    # 1 KiB for 11 recipients, sealed now (fresh), one list per store
    sealed = [seal_items(submits + warm) for _ in targets]
    index = {id(t): i for i, t in enumerate(targets)}

    def submit(t: Target, k: int) -> float:
        origin, envelope = sealed[index[id(t)]][k]
        return _timed(t.http, "POST", "/v1/items", envelope, origin, **envelope_type)

    for t, times in zip(targets, _alternate(targets, submits + warm, submit), strict=True):
        t.figures.submit = times[warm:]
    for t in targets:
        t.last_seq = _scalar(t.url, "SELECT last_seq FROM inbox_counters WHERE recipient = :r", r=BIG_INBOX)
        t.size = _scalar(t.url, "SELECT size FROM log_state WHERE id = 1")
    rng = random.Random(1)
    # recent pages (within the newest 2,000 entries), never short ones; the same for every store
    newest = min(2000, min(t.last_seq for t in targets) - 100)
    cursors = [rng.randrange(100, newest) for _ in range(pages + warm)]

    def page(t: Target, k: int) -> float:
        target = f"/v1/inbox?after={t.last_seq - cursors[k]}&limit=100"
        return _timed(t.http, "GET", target, b"", BIG_INBOX)

    def page_full(t: Target, k: int) -> float:
        target = f"/v1/inbox?after={t.last_seq - cursors[k]}&limit=100&include=envelope&proofs={t.size}"
        return _timed(t.http, "GET", target, b"", BIG_INBOX)

    for t, times in zip(targets, _alternate(targets, pages + warm, page), strict=True):
        t.figures.page = times[warm:]
    for t, times in zip(targets, _alternate(targets, pages + warm, page_full), strict=True):
        t.figures.page_full = times[warm:]
    for t in targets:
        t.figures.rss_after = rss_mib(t.pid)


def _ms(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=10)
    return 1000 * statistics.median(values), 1000 * q[8]


# --- query plans -----------------------------------------------------------------------------


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every statement (and its first parameter set) run on `engine` meanwhile."""
    statements: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, executemany: bool) -> None:
        if executemany and parameters:
            parameters = parameters[0]
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", grab)


def _run_paths(url: str, engine: Engine) -> dict[str, list[tuple[str, Any]]]:
    """Run one submit (stored and integrated, committed) and one inbox page each way through
    the broker's own service code; return the statements of each."""
    factory = make_sessionmaker(engine)
    settings = Settings(database_url=url, audience=AUDIENCE)
    cache = RegistryCache()
    (origin, envelope), *_ = seal_items(1)
    paths: dict[str, list[tuple[str, Any]]] = {}
    now = int(time.time() * 1000)
    with captured(engine) as statements:
        prepared = prepare(factory, cache, settings, Caller(origin, "bench"), envelope, now)
        with transaction(factory) as session:
            accept_batch(session, cache, [prepared])
            log_service.integrate(session, None, now)
    paths["submit"] = statements
    with factory() as session:
        last = int(
            session.execute(
                text("SELECT last_seq FROM inbox_counters WHERE recipient = :r"), {"r": BIG_INBOX}
            ).scalar_one()
        )
        size = log_service.current_size(session)
    after = last - 1000
    for name, kwargs in (
        ("inbox page", {}),
        (
            "inbox page + envelopes + proofs",
            {"max_envelope_bytes": settings.inbox_max_page_bytes, "proofs_at": size},
        ),
    ):
        with captured(engine) as statements, factory() as session:
            inbox_service.list_inbox(session, BIG_INBOX, after, 100, now_ms=now, **kwargs)
        paths[name] = statements
    with captured(engine) as statements, factory() as session:
        queries.acknowledge(session, BIG_INBOX, list(range(after + 1, after + 101)), now)
        session.rollback()
    paths["acknowledge 100"] = statements
    return paths


_SCAN_SQLITE = re.compile(r"^SCAN (\w+)")
_SCAN_PG = re.compile(r"Seq Scan on (\w+)")


def explain(url: str) -> list[str]:
    """The plans of the submit and inbox paths' statements; a line per statement."""
    engine = make_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    out: list[str] = []
    bad: list[str] = []
    small = 0
    try:
        paths = _run_paths(url, engine)
        seen: set[str] = set()
        for path, statements in paths.items():
            for sql, params in statements:
                head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
                if head not in ("SELECT", "UPDATE", "DELETE", "WITH") or sql in seen:
                    continue
                if "pg_try_advisory" in sql:
                    continue
                seen.add(sql)
                with engine.connect() as conn:
                    prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, COSTS OFF) "
                    rows = conn.exec_driver_sql(prefix + sql, params).all()
                    conn.rollback()  # EXPLAIN ANALYZE runs an UPDATE: undone
                if sqlite:
                    plan = [str(r[-1]) for r in rows]
                    scans = [m.group(1) for p in plan if (m := _SCAN_SQLITE.match(p))]
                    took = ""
                else:
                    plan = [str(r[0]).strip() for r in rows]
                    scans = [m.group(1) for p in plan if (m := _SCAN_PG.search(p))]
                    took = next(
                        (p.split(":", 1)[1].strip() for p in plan if p.startswith("Execution Time")), ""
                    )
                big = [s for s in scans if s in LARGE_TABLES]
                if not big and not re.search(r"\b(" + "|".join(HOT_TABLES) + r")\b", sql):
                    small += 1  # the registry's reads of small tables (directory, policy, keys)
                    continue
                short = " ".join(sql.split())
                short = short if len(short) <= 100 else short[:97] + "..."
                verdict = f"FULL SCAN of {', '.join(big)}" if big else "ok"
                access = list(
                    dict.fromkeys(
                        p
                        for p in plan
                        if re.search(r"Scan|SCAN|SEARCH", p) and not p.startswith(("Planning", "Execution"))
                    )
                )
                out.append(f"      [{path}] {verdict}{f', {took}' if took else ''}: {short}")
                out.append(f"          plan: {' | '.join(access)[:240]}")
                if big:
                    bad.append(f"[{path}] {short}")
    finally:
        engine.dispose()
    out.insert(
        0,
        f"    plans ({'EXPLAIN QUERY PLAN' if sqlite else 'EXPLAIN ANALYZE'}) of one submit and inbox "
        f"pages: {len(bad)} statement(s) scan {'/'.join(LARGE_TABLES)}; {small} reads of small "
        "registry tables not shown" + (":" if bad else ""),
    )
    for line in bad:
        out.insert(1, f"      !! {line}")
    return out


# --- the run -------------------------------------------------------------------------------


@contextmanager
def store(backend: str, tmp: Path, label: str) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp / f"growth-{label}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        with postgresql_schema() as url:
            yield url


def prepare_store(url: str, n: int, envelope_bytes: int) -> Loaded:
    print(f"  {n:,} items: load average {_loadavg()}", flush=True)
    bootstrap(url, int(time.time() * 1000))
    enrol_observer(url)
    if not high_quotas(url):
        print("    (this broker has no quotas)")
    return load_store(url, n, envelope_bytes)


def store_size(url: str) -> str:
    if url.startswith("sqlite"):
        return f"SQLite file {Path(_sqlite_path(url)).stat().st_size / 2**20:,.0f} MiB"
    return f"PostgreSQL schema {_pg_size(url) / 2**20:,.0f} MiB"


def run_backend(backend: str, tmp: Path, sizes: list[int], args: argparse.Namespace) -> None:
    with ExitStack() as stores:
        urls = [stores.enter_context(store(backend, tmp, str(n))) for n in sizes]
        for url, n in zip(urls, sizes, strict=True):
            prepare_store(url, n, args.envelope_bytes)
        with ExitStack() as stack:
            targets = _serve(stack, backend, tmp, urls, sizes)
            measure_and_print(targets, args)
        for line in explain(urls[-1]):  # the brokers are stopped: nothing else runs on the store
            print(line, flush=True)


def _serve(stack: ExitStack, backend: str, tmp: Path, urls: list[str], sizes: list[int]) -> list[Target]:
    targets = []
    for url, n in zip(urls, sizes, strict=True):
        base, proc = stack.enter_context(broker_server(url, AUDIENCE, tmp / f"growth-{backend}-{n}.log"))
        http = stack.enter_context(httpx.Client(base_url=base, timeout=60))
        targets.append(Target(n, url, base, proc.pid, http))
    return targets


def measure_and_print(targets: list[Target], args: argparse.Namespace) -> None:
    before = os.getloadavg()
    print(f"  measuring both brokers, requests interleaved: load average {_loadavg(before)}", flush=True)
    measure(targets, args.submits, args.pages)
    print(f"  load average after {_loadavg()}")
    for t in targets:
        f = t.figures
        s, p, q = _ms(f.submit), _ms(f.page), _ms(f.page_full)
        print(
            f"  {t.n:>9,} items: submit {s[0]:6.2f} / {s[1]:6.2f} ms, inbox page (100) {p[0]:6.2f} / "
            f"{p[1]:6.2f} ms, with envelopes + proofs {q[0]:6.2f} / {q[1]:6.2f} ms (median / p90); "
            f"broker RSS {f.rss_idle:.0f} MiB idle, {f.rss_after:.0f} MiB after; {store_size(t.url)}"
        )
    small, big = targets[0], targets[-1]
    ratios = []
    for name, a, b in (
        ("submit", small.figures.submit, big.figures.submit),
        ("inbox page", small.figures.page, big.figures.page),
        ("page + envelopes + proofs", small.figures.page_full, big.figures.page_full),
    ):
        (m1, p1), (m2, p2) = _ms(a), _ms(b)
        flag = "" if m2 / m1 <= 1.2 else " (OVER 1.2)"
        ratios.append(f"{name} median {m2 / m1:.2f}{flag}, p90 {p2 / p1:.2f}")
    print(f"  ratio {big.n:,} / {small.n:,}: " + "; ".join(ratios))
    print(
        f"  RSS ratio: idle {big.figures.rss_idle / small.figures.rss_idle:.2f}, "
        f"after the requests {big.figures.rss_after / small.figures.rss_after:.2f}",
        flush=True,
    )


def _pg_size(url: str) -> int:
    return _scalar(
        url,
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'",
    )


def _loadavg(values: tuple[float, ...] | None = None) -> str:
    return "/".join(f"{v:.2f}" for v in (values or os.getloadavg()))


def machine(backends: list[str]) -> None:
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}")
    print(f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}", end="")
    if "postgresql" in backends:
        with postgresql_schema() as url:
            version = make_engine(url).connect().execute(text("SHOW server_version")).scalar_one()
        print(f", PostgreSQL {version} (same machine)", end="")
    print(f"; load average {_loadavg()}; 1 broker process")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="N = 10^4: a smoke run")
    parser.add_argument("--submits", type=int, default=300)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--envelope-bytes", type=int, default=2048)
    args = parser.parse_args()
    large = 10_000 if args.quick else args.items
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    machine(backends)
    print(
        f"stored items: placeholder envelopes of {args.envelope_bytes} B, ~2.4 deliveries each; "
        f"submits: 1 KiB payloads sealed for 11 recipients; inbox pages of 100 for {BIG_INBOX}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for backend in backends:
            print(f"{backend}:", flush=True)
            run_backend(backend, Path(folder), [1000, large], args)
    print(f"load average at the end {_loadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
