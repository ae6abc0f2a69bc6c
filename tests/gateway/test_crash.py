"""`msmt-gateway serve` as a real process, following a real broker: killed with SIGKILL
mid-stream and restarted, then the broker restarted under it; afterwards its database holds
every item exactly once and the broker saw every one acknowledged (issue 12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from msmt.client import Client
from msmt.core import Markings
from msmt.errors import BrokerUnavailable, SubmitPending
from msmt.trust import TrustStore
from tests.e2e.servers import free_port, keep_log
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, log_key_file, root_of

from .stix_samples import bundle, indicator

GATEWAY = [sys.executable, "-m", "msmt.gateway.cli"]
FAST_KDF = {"memory_kib": 19456, "iterations": 2, "lanes": 1}


def start_broker(url: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`msmt-broker serve` on a given port (so that a restart comes back where it was)."""
    env = {
        **os.environ,
        "MSMT_DATABASE_URL": url,
        "MSMT_AUDIENCE": AUDIENCE,
        "MSMT_LOG_KEY_FILE": log_key_file(log_path.parent),
    }
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: _healthy(port), 30, lambda: log_path.read_text()[-2000:], proc)
    return proc


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(
    check: Callable[[], bool],
    seconds: float,
    why: Callable[[], str],
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert proc is None or proc.poll() is None, why()
        assert time.monotonic() < deadline, why()
        time.sleep(0.05)


def count(url: str, query: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


class Stream:
    """KOR sending items to USA from a thread, one every `pause` seconds; riding out a broker
    restart (what could not be sealed is tried again, what was sealed is re-sent from the
    outbox with the same bytes)."""

    def __init__(self, client: Client, pause: float) -> None:
        self.client, self.pause = client, pause
        self.sent: list[str] = []
        self.objects: list[str] = []  # every indicator made, sent or not
        self.wanted = 0
        self.thread: threading.Thread | None = None

    def send(self, n: int) -> None:
        self.wanted += n
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        markings = Markings.create("RESTRICTED", "GREEN", ["USA"], topics=["cyber"])
        while len(self.sent) < self.wanted:
            if self.client.outbox.pending():
                try:
                    self.sent += [r.item_id for r in self.client.resend_pending()]
                except BrokerUnavailable:
                    time.sleep(0.2)
                continue
            obj = indicator("GREEN", value=f"192.0.2.{len(self.sent) % 250}")
            try:
                receipt = self.client.send(
                    json.dumps(bundle(obj, levels=("GREEN",))).encode(),
                    content_type="application/stix+json",
                    markings=markings,
                    recipients=["USA"],
                )
            except SubmitPending:
                continue  # sealed: the outbox sends it
            except BrokerUnavailable:
                # nothing sealed, or sealed and accepted but its receipt not yet proven in the
                # log (the broker went away): the outbox has it then, and re-sends it
                time.sleep(0.2)
                continue
            finally:
                self.objects.append(obj["id"])
            self.sent.append(receipt.item_id)
            time.sleep(self.pause)
        while self.client.outbox.pending():  # what was sealed goes out too, whatever the count
            try:
                self.sent += [r.item_id for r in self.client.resend_pending()]
            except BrokerUnavailable:
                time.sleep(0.2)

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=120)
        assert not self.thread.is_alive()


def test_kill_9_and_a_broker_restart_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    broker_url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(broker_url, int(time.time() * 1000))
    root = root_of(broker_url)
    home = tmp_path / "usa-gateway"
    _KEYS["USA"].save(home / "keys", "usa passphrase", kdf=FAST_KDF)
    TrustStore.pin(root, home / "keys" / "trust")
    store_url = f"sqlite:///{home / 'gateway.db'}"
    port, gateway_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    (home / "gateway.toml").write_text(
        f'broker_url = "{base}"\nkeys = "keys"\naudience = "{AUDIENCE}"\n'
        f'listen = "127.0.0.1:{gateway_port}"\n\n[tokens]\nreader = "sha256$' + "0" * 64 + '"\n'
    )
    env = {**os.environ, "MSMT_PASSPHRASE": "usa passphrase"}
    gateway_log = tmp_path / "gateway.log"

    def start_gateway() -> subprocess.Popen[bytes]:
        with open(gateway_log, "ab") as log:
            return subprocess.Popen(
                [*GATEWAY, "serve", "--config", str(home / "gateway.toml"), "--wait", "1"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stored() -> int:
        try:
            return count(store_url, "SELECT count(*) FROM gateway_items")
        except Exception:  # not made yet
            return 0

    def why() -> str:
        return gateway_log.read_text()[-3000:]

    broker = start_broker(broker_url, port, tmp_path / "broker.log")
    gateway = start_gateway()
    try:
        with Client(
            base, _KEYS["KOR"], trust=TrustStore.pin(root, tmp_path / "kor"), audience=AUDIENCE
        ) as kor:
            stream = Stream(kor, pause=0.05)
            stream.send(30)
            wait_for(lambda: stored() >= 3, 60, why, gateway)
            os.kill(gateway.pid, signal.SIGKILL)  # mid-stream: KOR is still sending
            gateway.wait()
            killed_at = stored()
            assert killed_at < 30
            gateway = start_gateway()
            stream.join()
            wait_for(lambda: stored() == 30, 60, why, gateway)

            stream.send(30)  # the broker restarts under a stream of items
            wait_for(lambda: len(stream.sent) >= 35, 60, why, gateway)
            stop(broker)
            time.sleep(2)  # the gateway and KOR find it gone
            broker = start_broker(broker_url, port, tmp_path / "broker.log")
            stream.join()
            total = len(stream.sent)
            assert total >= 60 and len(set(stream.sent)) == total
            wait_for(lambda: stored() == total, 90, why, gateway)
            # acknowledged after store: the broker hears of every item once the gateway holds it
            wait_for(
                lambda: (
                    count(broker_url, "SELECT count(*) FROM deliveries WHERE state = 'acknowledged'") == 60
                ),
                30,
                why,
                gateway,
            )
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gateway.kill()
        stop(broker)
        keep_log(tmp_path / "broker.log")

    engine = create_engine(store_url)
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(text("SELECT item_id FROM gateway_items"))]
        objects = [row[0] for row in conn.execute(text("SELECT object_id FROM gateway_stix_objects"))]
    engine.dispose()
    assert sorted(ids) == sorted(stream.sent)  # every item, once
    indicators = [o for o in objects if o.startswith("indicator--")]
    assert len(indicators) == len(set(indicators)) == total  # one per item, each once
    assert set(indicators) <= set(stream.objects)
    # (Whether the gateway logged the broker's restart depends on timing: a stopping broker
    # answers its long-poll 503 shutting-down, which the client retries by itself.)
