"""What every chaos scenario shares: the counts (small in `make test`, large in `make soak`),
real broker processes that can be killed, frozen and restarted on their port, raw submissions
with their latency, and the end-of-run check that every item is stored exactly once."""

from __future__ import annotations

import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from broker.store.db import make_engine
from msmt.auth import mint_token
from msmt.client import Client
from msmt.core import Markings, parse, seal
from msmt.trust import TrustStore
from tests.e2e.servers import free_port, keep_log
from tests.integration.conftest import _KEYS, AUDIENCE, log_key_file

MARKINGS = Markings.create("RESTRICTED", "GREEN", ["ALL"], topics=["maritime"])
ENVELOPE = "application/vnd.msmt.envelope"
PROBLEM = "application/problem+json"
ACCEPTED = {200, 201, 202}  # 200: identical re-submission, 202: stored, not yet in the log


@dataclass(frozen=True)
class Counts:
    """How hard each scenario pushes: `MSMT_CHAOS_SCALE=soak` (make soak) or the default
    small counts of `make test`."""

    name: str
    kills: int  # kill -9 of a broker under load, on each database
    pg_restarts: int  # restarts of the test's own PostgreSQL server under load
    hung: int  # brokers frozen (SIGSTOP) while holding the integration lock
    hostile: int  # hostile requests
    long_polls: int  # concurrent long-polls
    fd_limit: int  # RLIMIT_NOFILE of the broker serving the long-polls
    poll_wait_s: float  # how long each long-poll asks to wait
    per_member_polls: int  # MSMT_INBOX_MAX_WAITING_PER_MEMBER of that broker
    max_waiting_polls: int  # MSMT_INBOX_MAX_WAITING of that broker


SCALES = {
    "test": Counts("test", 5, 1, 1, 2_000, 300, 1024, 4.0, 20, 150),
    "soak": Counts("soak", 25, 3, 1, 100_000, 1_500, 1024, 10.0, 150, 800),
}


def counts() -> Counts:
    name = os.environ.get("MSMT_CHAOS_SCALE", "test")
    if name not in SCALES:
        raise ValueError(f"MSMT_CHAOS_SCALE={name!r}: expected one of {sorted(SCALES)}")
    return SCALES[name]


def with_query(url: str, **params: str) -> str:
    """`url` with extra query parameters (e.g. application_name, to tell brokers apart in
    pg_stat_activity)."""
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


class Broker:
    """`msmt-broker serve` as a real process on a fixed port, so that a killed one comes back
    where its clients expect it. `nofile` sets its file-descriptor limit (ulimit -n)."""

    def __init__(
        self, database_url: str, log_path: Path, *, nofile: int | None = None, **settings: str
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.nofile = nofile
        self.env = {
            **os.environ,
            "MSMT_DATABASE_URL": database_url,
            "MSMT_AUDIENCE": AUDIENCE,
            "MSMT_LOG_KEY_FILE": log_key_file(log_path.parent),  # the key the members' root pins
            **{f"MSMT_{name.upper()}": value for name, value in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _limits(self) -> None:  # in the child, before exec
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def start(self, within_s: float = 60) -> float:
        """Start (or restart) it; seconds until /readyz answers 200."""
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "broker.cli",
                    "serve",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limits,
            )
        self.starts += 1
        last = "no answer"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited early: {self.log_text()[-2000:]}")
            try:
                r = httpx.get(f"{self.base}/readyz", timeout=2)
                if r.status_code == 200:
                    return time.monotonic() - started
                last = f"{r.status_code} {r.text[:300]}"
            except httpx.TransportError as exc:
                last = repr(exc)
            if time.monotonic() - started > within_s:
                raise RuntimeError(
                    f"broker not ready within {within_s} s (/readyz: {last}); log: {self.log_text()[-3000:]}"
                )
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._drop_torn_line()

    def _drop_torn_line(self) -> None:
        """A line the killed process was writing may be cut short: drop it, so that the log
        stays JSON lines (CI checks every line: .ci/check_logs.py) when the restarted process
        appends to it."""
        data = self.log_path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.log_path, "r+b") as log:
                log.truncate(data.rfind(b"\n") + 1)

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running(*brokers: Broker) -> Iterator[tuple[Broker, ...]]:
    """Start the brokers; stop them (and keep their logs for CI's secret scan) however the
    test ends."""
    with ExitStack() as stack:
        for broker in brokers:
            stack.callback(keep_log, broker.log_path)
            stack.callback(broker.stop)
            broker.start()
        yield brokers


def envelope(origin: str, recipients: list[str], payload: bytes) -> bytes:
    return seal(
        payload,
        content_type="text/plain",
        markings=MARKINGS,
        recipients=[(r, _KEYS[r].encryption.public_key) for r in recipients],
        originator=origin,
        signing_key=_KEYS[origin].signing,
    )


@dataclass
class Sent:
    """One raw submission: when, to whom, how long it took, and the answer (0: no answer)."""

    broker: str
    started: float
    latency: float
    status: int
    retry_after: str | None = None
    problem: str = ""


def submit(http: httpx.Client, base: str, origin: str, data: bytes, timeout: float = 60) -> Sent:
    """POST one envelope with a token bound to it; the answer and its latency (status 0 when
    the connection failed)."""
    token = mint_token(_KEYS[origin].api, origin, AUDIENCE, method="POST", target="/v1/items", body=data)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": ENVELOPE}
    started = time.monotonic()
    try:
        r = http.post(f"{base}/v1/items", content=data, headers=headers, timeout=timeout)
    except httpx.TransportError:
        return Sent(base, started, time.monotonic() - started, 0)
    problem = ""
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith(PROBLEM):
        problem = str(r.json().get("type", "")).rsplit(":", 1)[-1]
    return Sent(
        base, started, time.monotonic() - started, r.status_code, r.headers.get("retry-after"), problem
    )


@dataclass
class Load:
    """Submitter threads, each sending fresh envelopes (origin -> USA) in a loop to its broker
    until stopped; every envelope and every answer is kept, to re-send the unanswered ones and
    to count afterwards."""

    bases: list[str]
    threads: int = 4
    origins: tuple[str, ...] = ("KOR", "JPN", "FRA", "GBR", "DEU", "ITA")
    pause_s: float = 0.0
    sent: list[Sent] = field(default_factory=list)
    envelopes: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # item id -> (origin, bytes)
    unacknowledged: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def start(self) -> Load:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _run(self, index: int) -> None:
        origin = self.origins[index % len(self.origins)]
        base = self.bases[index % len(self.bases)]
        n = 0
        try:
            with httpx.Client() as http:
                while not self._stop.is_set():
                    data = envelope(origin, ["USA"], f"load {origin} {index} {n}".encode())
                    n += 1
                    key = parse(data).header.item_id
                    with self._lock:
                        self.envelopes[key] = (origin, data)
                    answer = submit(http, base, origin, data)
                    with self._lock:
                        self.sent.append(answer)
                        if answer.status not in ACCEPTED:
                            self.unacknowledged[key] = (origin, data)
                    if self.pause_s:
                        time.sleep(self.pause_s)
        except BaseException as exc:  # surfaced by stop()
            self.errors.append(exc)

    def accepted(self) -> int:
        with self._lock:
            return sum(s.status in ACCEPTED for s in self.sent)

    def wait_accepted(self, more: int, within_s: float = 60) -> None:
        """Until `more` further submissions were accepted (load is really flowing)."""
        target = self.accepted() + more
        deadline = time.monotonic() + within_s
        while self.accepted() < target:
            assert time.monotonic() < deadline, f"load stalled: {self.accepted()} < {target}"
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=90)
        assert not any(w.is_alive() for w in self._workers), "a submitter never returned"
        assert not self.errors, self.errors[:3]

    def resend_unacknowledged(self, base: str, within_s: float = 60) -> int:
        """Re-send every envelope that got no 2xx (same bytes) until each is acknowledged; how
        many there were."""
        pending = dict(self.unacknowledged)
        deadline = time.monotonic() + within_s
        with httpx.Client() as http:
            while pending:
                assert time.monotonic() < deadline, f"{len(pending)} envelopes never acknowledged"
                for key, (origin, data) in list(pending.items()):
                    if submit(http, base, origin, data).status in ACCEPTED:
                        del pending[key]
                if pending:
                    time.sleep(0.2)
        count = len(self.unacknowledged)
        self.unacknowledged.clear()
        return count


def statuses(sent: list[Sent]) -> dict[int, int]:
    return dict(sorted(Counter(s.status for s in sent).items()))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def set_quotas(url: str, **values: object) -> None:
    """Change the members' default quotas (the policy document's [quotas]) as an admin would."""
    from broker.policydoc import QuotasDoc
    from broker.services import policy as policy_service
    from broker.store.db import make_sessionmaker, transaction

    engine = make_engine(url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            document = policy_service.export_document(session)
            quotas = QuotasDoc.model_validate({**document.quotas.model_dump(exclude_none=True), **values})
            changed = document.model_copy(update={"quotas": quotas})
            policy_service.apply_document(
                session, "chaos", changed, int(time.time() * 1000), with_access=False
            )
    finally:
        engine.dispose()


def count_rows(url: str, table: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


@dataclass(frozen=True)
class InboxCheck:
    deliveries: int
    payloads: Counter[bytes]
    gaps: int


def read_inbox(base: str, root: bytes, country: str = "USA", within_s: float = 120) -> InboxCheck:
    """Everything in `country`'s inbox, each envelope verified and decrypted by the real
    client; the inbox numbers must run 1..n with no gap."""
    payloads: Counter[bytes] = Counter()
    seqs: list[int] = []
    deadline = time.monotonic() + within_s
    with Client(base, _KEYS[country], trust=TrustStore.pin(root), audience=AUDIENCE) as client:
        cursor = 0
        while True:
            batch = client.receive(cursor, limit=500)
            assert not batch.rejected, batch.rejected[:3]
            for received in batch.received:
                payloads[received.payload] += 1
                seqs.append(received.delivery.seq)
            if not batch.page.deliveries:
                break
            cursor = batch.page.cursor
            assert time.monotonic() < deadline, "reading the inbox took too long"
    gaps = sum(1 for a, b in zip([0, *seqs], seqs, strict=False) if b != a + 1)
    return InboxCheck(len(seqs), payloads, gaps)


def settle(url: str, within_s: float = 60) -> None:
    """Until nothing is left pending for the log (the brokers' sweepers integrate it)."""
    deadline = time.monotonic() + within_s
    while count_rows(url, "log_pending"):
        assert time.monotonic() < deadline, "log_pending never drained"
        time.sleep(0.1)


def tracebacks(*brokers: Broker) -> int:
    return sum(b.log_text().count("Traceback") for b in brokers)


def report(name: str, figures: dict[str, Any], record: Callable[[str, object], None] | None = None) -> None:
    """Print a scenario's figures (make soak quotes them) and attach them to the test report."""
    line = ", ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[chaos:{counts().name}] {name}: {line}", flush=True)
    if record is not None:
        record("chaos", f"{name}: {line}")
