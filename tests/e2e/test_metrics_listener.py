"""`/metrics` of a real `msmt-broker serve --workers 2` on PostgreSQL, on a port of its own:
a small load through the client library moves the counters by exactly the requests made,
added up over both worker processes; the API port has no /metrics; the workers' metrics
folder is private and gone when the broker stops."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.store.db import migrate
from msmt.client import Client
from msmt.core import Markings, seal
from msmt.errors import BrokerError
from msmt.trust import TrustStore
from tests.integration.conftest import (
    _KEYS,
    AUDIENCE,
    bootstrap,
    log_key_file,
    postgresql_schema,
    root_of,
)
from tests.integration.test_metrics import Samples, deltas, parse, series, value

from .servers import free_port

RESTRICTED = Markings.create("RESTRICTED", "GREEN", ["ALL"], topics=["maritime"])
CONFIDENTIAL = Markings.create("CONFIDENTIAL", "AMBER", ["ALL"], topics=["maritime"])
ITEMS, DUPLICATES, REFUSED = 20, 5, 3


@contextmanager
def serve(url: str, folder: Path, workers: int) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """`msmt-broker serve --workers N` with metrics on; yields the API and metrics base URLs."""
    port, metrics_port = free_port(), free_port()
    assert port != metrics_port
    (folder / "tmp").mkdir()
    env = {
        **os.environ,
        "MSMT_DATABASE_URL": url,
        "MSMT_AUDIENCE": AUDIENCE,
        "MSMT_LOG_KEY_FILE": log_key_file(folder),
        "MSMT_METRICS_PORT": str(metrics_port),
        "MSMT_METRICS_CACHE_S": "0",  # the inbox gauges read afresh at every scrape
        "TMPDIR": str(folder / "tmp"),  # where the workers' metrics folder is made
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [sys.executable, "-m", "broker.cli", "serve", "--port", str(port), "--workers", str(workers)]
    log_path = folder / "broker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*argv, "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    base, metrics_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"broker exited early: {log_path.read_text()[-2000:]}")
            try:
                if (
                    httpx.get(f"{base}/v1/health", timeout=1).status_code == 200
                    and httpx.get(f"{metrics_base}/metrics", timeout=1).status_code == 200
                ):
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "broker did not start within 60 s"
            time.sleep(0.1)
        yield base, metrics_base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scrape(metrics_base: str) -> Samples:
    r = httpx.get(f"{metrics_base}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def wait_until(metrics_base: str, check: Any, timeout: float = 20.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(metrics_base)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.postgresql
@pytest.mark.parametrize("workers", [2, 1])  # one: uvicorn serves in `serve`'s own process
def test_metrics_listener_counts_a_load(tmp_path: Path, workers: int) -> None:
    with postgresql_schema() as url:
        bootstrap(url, int(time.time() * 1000))
        root = root_of(url)
        with serve(url, tmp_path, workers=workers) as (base, metrics_base, _):
            run(base, metrics_base, root, tmp_path / "tmp", workers)
    assert list((tmp_path / "tmp").iterdir()) == [], "the metrics folder outlived the broker"


def client(base: str, root: bytes, country: str) -> Client:
    return Client(base, _KEYS[country], trust=TrustStore.pin(root), audience=AUDIENCE)


def envelope(origin: str, recipients: list[str], payload: bytes, markings: Markings = RESTRICTED) -> bytes:
    return seal(
        payload,
        content_type="text/plain",
        markings=markings,
        recipients=[(r, _KEYS[r].encryption.public_key) for r in recipients],
        originator=origin,
        signing_key=_KEYS[origin].signing,
    )


def run(base: str, metrics_base: str, root: bytes, tmp: Path, workers: int) -> None:
    # every worker is up once its pool is counted (5 connections each: SQLAlchemy's default)
    pool = 5 * workers
    before = wait_until(metrics_base, lambda s: value(s, "msmt_db_pool_size") == pool, timeout=90)
    assert value(before, "msmt_database_up") == 1
    (folder,) = tmp.iterdir()
    assert folder.name.startswith("msmt-metrics-")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert urlport(metrics_base) != urlport(base)
    assert httpx.get(f"{base}/metrics", timeout=5).status_code == 404  # not on the API port
    assert httpx.get(f"{metrics_base}/v1/health", timeout=5).status_code == 404  # nothing else there

    # the load: each request on a connection of its own, so that every worker takes some
    sent = [envelope("KOR", ["USA", "JPN"], f"report {n}".encode()) for n in range(ITEMS)]
    for data in sent:
        with client(base, root, "KOR") as kor:
            kor.submit(data)
    for data in sent[:DUPLICATES]:
        with client(base, root, "KOR") as kor:
            kor.submit(data)
    for n in range(REFUSED):  # NZL is accredited RESTRICTED; the default ceiling is RESTRICTED
        with client(base, root, "KOR") as kor, pytest.raises(BrokerError) as refused:
            kor.submit(envelope("KOR", ["USA", "NZL"], f"secret {n}".encode(), CONFIDENTIAL))
        assert refused.value.code == "recipients-refused"

    # a long-poll waits (in whichever worker took it) until an item for NZL arrives
    pages: list[Any] = []
    with client(base, root, "NZL") as nzl:
        poll = threading.Thread(target=lambda: pages.append(nzl.inbox(wait=20)))
        poll.start()
        wait_until(metrics_base, lambda s: value(s, "msmt_inbox_longpolls_waiting") == 1)
        with client(base, root, "KOR") as kor:
            kor.submit(envelope("KOR", ["NZL"], b"for NZL"))
        poll.join(timeout=30)
    assert len(pages) == 1 and len(pages[0].deliveries) == 1

    after = wait_until(metrics_base, lambda s: value(s, "msmt_inbox_longpolls_waiting") == 0)
    assert deltas(before, after, "msmt_submissions_total") == {
        series(outcome="accepted", problem="none"): ITEMS + 1,
        series(outcome="duplicate", problem="none"): DUPLICATES,
        series(outcome="refused", problem="recipients-refused"): REFUSED,
    }
    assert deltas(before, after, "msmt_policy_refusals_total") == {
        series(rule="above-accreditation"): REFUSED,
        series(rule="above-agreement-ceiling"): REFUSED,
    }
    assert value(after, "msmt_inbox_unacknowledged") == 2 * ITEMS + 1  # nobody acknowledged
    assert value(after, "msmt_inbox_oldest_unacknowledged_age_seconds") > 0
    assert value(after, "msmt_db_pool_size") == pool
    assert 0 <= value(after, "msmt_db_pool_connections_checked_out") <= 3 * pool  # pool + overflow
    assert not any("recipient" in dict(labels) for (_, labels) in after)  # no country labels

    with client(base, root, "USA") as usa:
        page = usa.inbox(limit=1000)
        usa.acknowledge([d.seq for d in page.deliveries])
    assert value(scrape(metrics_base), "msmt_inbox_unacknowledged") == ITEMS + 1


def urlport(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def test_serve_refuses_metrics_on_the_api_port(tmp_path: Path) -> None:
    port, url = free_port(), f"sqlite:///{tmp_path}/broker.db"
    migrate(url)
    env = {**os.environ, "MSMT_METRICS_PORT": str(port), "MSMT_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", "serve", "--port", str(port)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr.decode()[-2000:]
    assert b"is the API port" in done.stderr
