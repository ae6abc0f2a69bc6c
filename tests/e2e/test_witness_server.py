"""The witness's HTTP server: `msmt witness serve` in its own process, and `make_server` in a thread."""

from __future__ import annotations

import argparse
import hashlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from msmt.core.merkle import MemoryTree
from msmt.core.note import (
    Checkpoint,
    Ed25519NoteSigner,
    MLDSA65NoteSigner,
    format_note,
    open_checkpoint,
    open_note,
    parse_signature_lines,
    verifier_from_vkey,
)
from msmt.witness import (
    CONTENT_TYPE_SIZE,
    Witness,
    WitnessResponse,
    WitnessState,
    add_checkpoint_body,
    add_witness_parser,
    make_server,
    submit_checkpoint,
)

from .servers import free_port

ORIGIN = "broker.example/log"
NAME = "witness.kor.example"


def seed(label: str) -> bytes:
    return hashlib.shake_256(f"msmt witness e2e {label}".encode()).digest(32)


LOG_ED = Ed25519NoteSigner.from_seed(ORIGIN, seed("log ed25519"))
LOG_PQ = MLDSA65NoteSigner.from_seed(ORIGIN, seed("log mldsa65"))
LOG_VERIFIERS = [LOG_ED.verifier, LOG_PQ.verifier]

# What `msmt witness ...` will run once cli.py registers the parser.
CLI = (
    "import argparse, sys\n"
    "from msmt.witness import add_witness_parser\n"
    "parser = argparse.ArgumentParser(prog='msmt')\n"
    "add_witness_parser(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


def signed(tree: MemoryTree, size: int | None = None, origin: str = ORIGIN) -> bytes:
    size = tree.size if size is None else size
    text = Checkpoint(origin, size, tree.root(size)).to_text()
    return format_note(text, [LOG_ED.sign(text), LOG_PQ.sign(text)])


def tree_of(size: int) -> MemoryTree:
    tree = MemoryTree()
    tree.extend(f"leaf {i}".encode() for i in range(size))
    return tree


@dataclass
class RunningWitness:
    url: str
    vkeys: list[str]
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def witness_process(folder: Path) -> Iterator[RunningWitness]:
    """`msmt witness init` then `msmt witness serve` on a free port; stopped with SIGINT."""
    config = folder / "witness.toml"
    init = subprocess.run(
        [
            *(sys.executable, "-c", CLI, "witness", "init", NAME, "--config", str(config), "--mldsa44"),
            *("--origin", ORIGIN, "--log-vkey", LOG_ED.verifier.vkey, "--log-vkey", LOG_PQ.verifier.vkey),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    vkeys = init.stdout.split()
    port = free_port()
    log = folder / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", CLI, "witness", "serve", "--config", str(config), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the witness exited early: {log.read_text()}")
            try:
                if httpx.get(f"{url}/", timeout=1).status_code == 404:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the witness did not start within 30 s")
            time.sleep(0.05)
        yield RunningWitness(url, vkeys, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWitness]:
    with witness_process(tmp_path_factory.mktemp("witness")) as started:
        yield started


def test_cosigns_then_answers_409_then_grows(running: RunningWitness) -> None:
    tree = tree_of(5)
    note = signed(tree)
    with httpx.Client(timeout=10) as http:  # one keep-alive connection for all requests
        status, body = submit_checkpoint(running.url, 0, [], note, http=http)
        assert status == 200, body
        verifiers = [verifier_from_vkey(v) for v in running.vkeys]
        assert len(parse_signature_lines(body.decode())) == 2
        _, verified = open_note(note + body, verifiers, require_all=True)
        assert len(verified) == 2

        response = http.post(f"{running.url}/add-checkpoint", content=add_checkpoint_body(0, [], note))
        assert response.status_code == 409
        assert response.headers["content-type"] == CONTENT_TYPE_SIZE
        assert response.content == b"5\n"

        tree.extend([b"leaf 5", b"leaf 6", b"leaf 7"])
        status, body = submit_checkpoint(
            running.url, 5, tree.consistency_proof(5, 8), signed(tree), http=http
        )
        assert status == 200, body
        open_note(signed(tree) + body, verifiers, require_all=True)

        # The monitoring endpoint serves the cosigned checkpoint.
        origin_hash = hashlib.sha256(ORIGIN.encode()).hexdigest()
        response = http.get(f"{running.url}/{origin_hash}/checkpoint")
        assert response.status_code == 200
        checkpoint, _ = open_checkpoint(response.content, LOG_VERIFIERS)
        assert (checkpoint.size, checkpoint.root_hash) == (8, tree.root())
        open_note(response.content, verifiers, require_all=True)


def test_the_other_statuses_over_http(running: RunningWitness) -> None:
    other = MemoryTree()
    other.extend([b"x"])
    with httpx.Client(timeout=10) as http:
        assert (
            submit_checkpoint(running.url, 0, [], signed(other, origin="unknown.example/log"), http=http)[0]
            == 404
        )
        text = Checkpoint(ORIGIN, 1, other.root()).to_text()
        assert (
            submit_checkpoint(running.url, 0, [], format_note(text, [LOG_ED.sign(text)]), http=http)[0] == 403
        )
        assert submit_checkpoint(running.url, 99, [], signed(tree_of(3)), http=http)[0] == 400
        response = http.post(f"{running.url}/add-checkpoint", content=b"old 0\n")
        assert response.status_code == 400
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert b"Traceback" not in response.content


def test_body_limit(running: RunningWitness) -> None:
    body = b"old 0\n\n" + b"x" * (64 * 1024)
    response = httpx.post(f"{running.url}/add-checkpoint", content=body, timeout=10)
    assert response.status_code == 413
    assert b"larger than 65536 bytes" in response.content


def test_chunked_bodies_are_refused(running: RunningWitness) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"old 0\n\n"

    response = httpx.post(f"{running.url}/add-checkpoint", content=chunks(), timeout=10)
    assert response.status_code == 411


def test_unknown_paths_and_methods(running: RunningWitness) -> None:
    with httpx.Client(timeout=10) as http:
        for path in ("/", "/add-checkpoint/", "/witness/add-checkpoint", "/v1/add-checkpoint"):
            assert http.post(f"{running.url}{path}", content=b"old 0\n\n").status_code == 404, path
        assert http.get(f"{running.url}/nothing").status_code == 404
        assert http.get(f"{running.url}/{'0' * 64}/checkpoint").status_code == 404
        response = http.get(f"{running.url}/add-checkpoint")
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        assert http.put(f"{running.url}/add-checkpoint", content=b"").status_code == 405


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_cleanly_on_interrupt(tmp_path: Path, stop: signal.Signals) -> None:
    with witness_process(tmp_path) as started:
        assert submit_checkpoint(started.url, 0, [], signed(tree_of(2)))[0] == 200
        started.process.send_signal(stop)
        assert started.process.wait(timeout=10) == 0
    log = started.log.read_text()
    assert f"witness {NAME} listening on http://127.0.0.1:" in log
    assert "Traceback" not in log


# --- make_server in a thread ---------------------------------------------------------------------


@pytest.fixture
def in_thread(tmp_path: Path) -> Iterator[tuple[str, Witness]]:
    from msmt.core.note import Ed25519Cosigner

    state = WitnessState(tmp_path / "state.sqlite")
    witness = Witness(NAME, Ed25519Cosigner.from_seed(NAME, seed("witness")), {ORIGIN: LOG_VERIFIERS}, state)
    server = make_server(
        witness, "127.0.0.1", 0, prefix="/witness", max_body=8192, clock=lambda: 1_700_000_000
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/witness", witness
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        state.close()


def test_prefix_clock_and_limit_of_make_server(in_thread: tuple[str, Witness]) -> None:
    url, witness = in_thread
    tree = tree_of(3)
    status, body = submit_checkpoint(url, 0, [], signed(tree))
    assert status == 200
    line = parse_signature_lines(body.decode())[0]
    ed = witness.cosigners[0].verifier
    assert ed.verify_cosignature(Checkpoint(ORIGIN, 3, tree.root()), line.signature) == 1_700_000_000
    assert httpx.post(url.removesuffix("/witness") + "/add-checkpoint", content=b"").status_code == 404
    response = httpx.post(f"{url}/add-checkpoint", content=b"old 0\n\n" + b"x" * 8192)
    assert response.status_code == 413


def test_an_internal_error_is_a_500_without_detail(
    in_thread: tuple[str, Witness], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, witness = in_thread

    def broken(body: bytes, now_s: int) -> WitnessResponse:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(witness, "add_checkpoint", broken)
    response = httpx.post(f"{url}/add-checkpoint", content=b"old 0\n\n")
    assert response.status_code == 500
    assert response.content == b"internal error\n"


def test_the_cli_parser_registers_witness() -> None:
    parser = argparse.ArgumentParser(prog="msmt")
    add_witness_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["witness", "serve", "--config", "x.toml", "--port", "0"])
    assert (args.config, args.port, args.host) == ("x.toml", 0, None)
