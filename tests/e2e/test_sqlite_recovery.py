"""A broker on SQLite recovers by itself after its file system was read-only for a while
(issue 10, finding 3).

Before: connections opened while the file system was read-only are read-only for good (SQLite
falls back to a read-only open), the pool kept them, and writes kept failing until the process
restarted. Now an error of that kind discards the connection and the pool: once the file
system is writable again, so is the broker, within a request or two.

How the file system turns read-only under a running `msmt-broker serve`, as root (for whom
file modes are no obstacle): the broker runs in a mount namespace of its own, and for the
outage

- a read-only bind mount is stacked over the database's folder: from then on every open of
  the database files for writing fails with EROFS and SQLite opens them read-only, exactly as
  on a read-only file system (files opened before stay on the writable mount below);
- strace fails every write, fsync and truncate on the files the broker already has open with
  EROFS (`-P` limits it to the three database files), which is what such files meet when their
  file system goes read-only.

Then strace detaches and the read-only mount is lazily unmounted (what the broker opened
through it stays read-only, as it would).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from msmt.auth import mint_token
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, log_key_file

from .servers import free_port, keep_log

TOOLS = ("unshare", "nsenter", "mount", "umount", "strace")


def _require_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: mount namespaces and ptrace")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        message = f"missing {', '.join(missing)} (Debian packages util-linux, mount and strace)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def namespaced_broker(url: str, log_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`msmt-broker serve` (one process) in a private mount namespace of its own."""
    port = free_port()
    env = {
        **os.environ,
        "MSMT_DATABASE_URL": url,
        "MSMT_AUDIENCE": AUDIENCE,
        "MSMT_LOG_KEY_FILE": log_key_file(log_path.parent),
        "MSMT_LOG_SETTLE_TIMEOUT_S": "2",
    }
    command = [sys.executable, "-m", "broker.cli", "serve", "--port", str(port), "--log-level", "warning"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", *command],  # exec: the same pid
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log_path.read_text()[-2000:]
                try:
                    if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "broker did not start within 30 s"
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


@contextmanager
def read_only(pid: int, folder: Path, database: Path) -> Iterator[None]:
    inside = ["nsenter", "-t", str(pid), "-m", "--"]
    subprocess.run([*inside, "mount", "--bind", "-o", "ro", str(folder), str(folder)], check=True)
    paths = [arg for suffix in ("", "-wal", "-shm") for arg in ("-P", f"{database}{suffix}")]
    calls = "pwrite64,pwritev,pwritev2,write,writev,fsync,fdatasync,ftruncate,fallocate"
    fail = ["-e", f"trace={calls}", "-e", f"inject={calls}:error=EROFS"]
    strace = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-p", str(pid), *paths, *fail], stderr=subprocess.PIPE
    )
    try:
        time.sleep(1.0)  # strace has attached to every thread
        assert strace.poll() is None, strace.stderr.read() if strace.stderr else ""
        yield
    finally:
        strace.terminate()  # detaches: the calls work again
        strace.wait(timeout=10)
        subprocess.run([*inside, "umount", "-l", str(folder)], check=True)


def _envelope() -> bytes:
    from msmt.core import Markings, seal

    return seal(
        b"report",
        content_type="text/plain",
        markings=Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"]),
        recipients=[("USA", _KEYS["USA"].encryption.public_key)],
        originator="KOR",
        signing_key=_KEYS["KOR"].signing,
    )


def _submit(base: str) -> httpx.Response:
    envelope = _envelope()
    token = mint_token(_KEYS["KOR"].api, "KOR", AUDIENCE, method="POST", target="/v1/items", body=envelope)
    return httpx.post(
        f"{base}/v1/items",
        content=envelope,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.msmt.envelope"},
        timeout=30,
    )


def _inbox(base: str) -> httpx.Response:
    token = mint_token(_KEYS["USA"].api, "USA", AUDIENCE, method="GET", target="/v1/inbox?limit=1000")
    return httpx.get(f"{base}/v1/inbox?limit=1000", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _concurrently(base: str, n: int) -> list[httpx.Response]:
    """n submissions and n inbox reads at once: the pool opens connections meanwhile."""
    answers: list[httpx.Response] = []

    def one(call: object) -> None:
        answers.append(call(base))  # type: ignore[operator]

    threads = [threading.Thread(target=one, args=(call,)) for call in [_submit, _inbox] * n]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_sqlite_recovers_after_its_file_system_was_read_only(tmp_path: Path) -> None:
    _require_tools()
    folder = tmp_path / "db"
    database = folder / "broker.db"
    url = f"sqlite:///{database}"
    bootstrap(url, int(time.time() * 1000))
    log = tmp_path / "broker.log"
    with namespaced_broker(url, log) as (base, proc):
        assert {r.status_code for r in _concurrently(base, 4)} <= {200, 201, 202}

        with read_only(proc.pid, folder, database):
            during = _concurrently(base, 8)
            failed = [r for r in during if r.status_code >= 500]
            assert failed, "nothing failed while the file system was read-only"
            assert {r.status_code for r in failed} == {503}, [r.text for r in failed]
            assert {r.json()["type"] for r in failed} == {"urn:msmt:problem:database-unavailable"}
            assert all(r.headers.get("retry-after") for r in failed)
            time.sleep(0.5)

        # writable again: within a few seconds every write succeeds, with no restart
        recovered_at = time.monotonic()
        deadline = recovered_at + 10
        streak = 0
        failures: list[str] = []
        while streak < 20:  # 20 writes in a row succeed
            response = _submit(base)
            if response.status_code in (201, 202):
                streak += 1
            else:
                streak = 0
                failures.append(response.text)
            assert time.monotonic() < deadline, f"{len(failures)} failed after recovery, last: {failures[-1]}"
        print(f"recovered: {len(failures)} writes failed after the file system was writable again")
        assert {r.status_code for r in _concurrently(base, 8)} <= {200, 201, 202}
        assert proc.poll() is None
        time.sleep(1.2)  # on SQLite an outage ends with a commit a second after its last failure
        assert _submit(base).status_code in (201, 202)
        assert _inbox(base).status_code == 200

    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    down = [x for x in lines if str(x["event"]).startswith("database unavailable")]
    up = [x for x in lines if str(x["event"]).startswith("database available again")]
    assert len(down) == 1, down
    assert len(up) == 1, up
    assert "Traceback" not in text


# Run in a mount namespace of its own (argv[1]: an empty folder): one connection opened while
# the folder is read-only and held, as a pooled or checked-out connection is, while the folder
# becomes writable again; then writes through the same engine.
_HELD_CONNECTION = """
import subprocess, sys
from pathlib import Path
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from broker.store.db import make_engine

folder = Path(sys.argv[1])
engine = make_engine(f"sqlite:///{folder / 'broker.db'}")
with engine.begin() as connection:
    connection.execute(text("CREATE TABLE t (x INTEGER)"))
subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], check=True)
engine.dispose()  # no connection open: the next one is the first of the process
try:
    held = engine.connect()
    held.execute(text("SELECT count(*) FROM t")).scalar()
    print("opened while read-only")
except OperationalError as exc:
    print("refused while read-only")
subprocess.run(["umount", "-l", str(folder)], check=True)
for _ in range(3):
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
        print("write: ok")
    except OperationalError as exc:
        print(f"write: {exc.orig}")
"""


def test_no_connection_is_opened_while_the_database_cannot_be_written(tmp_path: Path) -> None:
    """SQLite shares one -shm mapping among a process's connections to a file, opened by the
    first of them: a connection opened read-only while the file system was read-only, kept
    open (idle in the pool or checked out), made every later connection read-only too, and
    writes failed until the process restarted. Such a connection is now refused."""
    _require_tools()
    folder = tmp_path / "db"
    folder.mkdir()
    result = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-c",
            _HELD_CONNECTION,
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == ["refused while read-only"] + ["write: ok"] * 3, lines
