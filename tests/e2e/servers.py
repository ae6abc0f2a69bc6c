"""Real broker server processes for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def broker_process(database_url: str, audience: str, log_path: Path) -> Iterator[str]:
    """Start `msmt-broker serve` in its own process; yield its base URL; stop it."""
    with broker_server(database_url, audience, log_path) as (base, _):
        yield base


@contextmanager
def broker_server(
    database_url: str, audience: str, log_path: Path, **settings: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`broker_process`, yielding the process too (benchmarks read its CPU time); `settings`
    are extra MSMT_* environment variables."""
    from tests.integration.conftest import log_key_file

    port = free_port()
    env = {
        **os.environ,
        "MSMT_DATABASE_URL": database_url,
        "MSMT_AUDIENCE": audience,
        "MSMT_LOG_KEY_FILE": log_key_file(log_path.parent),  # the key the members' root pins
        **{f"MSMT_{name.upper()}": value for name, value in settings.items()},
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"broker exited early: {log_path.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("broker did not start within 30 s")
                time.sleep(0.1)
            yield base, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            keep_log(log_path)


def keep_log(log_path: Path) -> None:
    """CI collects every broker's log (MSMT_TEST_LOG_DIR) and greps them all for secrets
    (.ci/check_logs.py)."""
    folder = os.environ.get("MSMT_TEST_LOG_DIR")
    if folder and log_path.exists():
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, Path(folder) / f"{uuid.uuid4().hex}-{log_path.name}")


@contextmanager
def broker_processes(count: int, database_url: str, audience: str, log_dir: Path) -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(broker_process(database_url, audience, log_dir / f"broker-{i}.log"))
            for i in range(count)
        ]
