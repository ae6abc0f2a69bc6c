"""Envelope signatures checked in worker processes, so that they do not hold this process's GIL.

An envelope's signature (`msmt.core.envelope.verify_signature`: ML-DSA-65 + Ed25519 over the
header) is ~0.3-0.5 ms of CPU that keeps the GIL for most of it (two threads verify
only 1.3x as fast as one). In the broker's process that time competes with the event loop, the
writer thread and the long-polls' answers: on PostgreSQL each of the writer's round trips waits
for the GIL behind a check thread (bench/README.md, "a GIL convoy"). A `SignaturePool` runs the
verifications in a few worker processes of its own instead, started with `sys.executable -m`
this module, which imports only `msmt.core` (not the broker: ~28 MiB and 0.1 s each, where a
`multiprocessing` child would import the whole server as its main module).

What a worker is sent and answers, over its stdin / stdout, framed as 4-byte big-endian lengths:
a pickled list of `Job`s (the envelope, the originator's signing public key bytes, the originator
and the key id its header names, and the payload size and SHA-256 its header states), and a
pickled list of (None or the `msmt.core.errors.EnvelopeError` that refused it, the envelope's
SHA-256 hex). Both ends are this broker's own processes; the key is the one the registry names,
looked up here before the work is sent, and the header fields are those of the request thread's
own parse of the same bytes. The worker does not decode the header (a parse there cost ~0.1 ms
more per envelope: bench/README.md, seventeenth session): it splits the envelope's framing,
checks the signature, then the ciphertext against the stated size and digest (in
`msmt.core.verify`'s order: key, signature, payload), and takes the envelope's digest. Both
hashes are taken here and not in the request's thread because hashlib lets go of the GIL on
anything over 2 KiB, and a thread that lets go of it waits to have it back behind the process's
other threads.

A worker that dies or answers nonsense is replaced and the envelopes it held are verified in
this process: the check is never skipped, and never decided by a worker that failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import IO

import msmt
from msmt.core import SigningPublicKey, errors
from msmt.core.envelope import check_ciphertext, split, verify_signature

log = logging.getLogger("msmt.broker.signatures")

# (envelope, the originator's signing public key, originator, the key id its header names, the
# payload size and payload SHA-256 its header states)
Job = tuple[bytes, bytes, str, str, int, bytes]
Checked = tuple[errors.EnvelopeError | None, str]  # (what refused it, or None; SHA-256 hex)
MIN_CHUNK = 4  # fewer envelopes than this per worker cost more in hand-offs than they save
FRAME = 4
# A worker's share of a part (~5 envelopes of ~23 KB) is larger than a pipe's default 64 KiB:
# the sender's write would wait for the worker to read before the next worker is sent its own.
PIPE_BYTES = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size for unprivileged processes


def _widen(fd: int) -> None:
    """Let a frame of a few envelopes fit in the pipe (Linux), so that a write does not wait
    for the reader; elsewhere, or past the system's limit, the pipe keeps its size."""
    try:
        import fcntl  # not on Windows
    except ImportError:
        return
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setsize, PIPE_BYTES)


@lru_cache(maxsize=256)
def _key(raw: bytes) -> SigningPublicKey:
    return SigningPublicKey.from_bytes(raw)


def check_here(jobs: Sequence[Job]) -> list[Checked]:
    """Verify each envelope's signature against its key, then its ciphertext against the size and
    digest its header states, in this process."""
    out: list[Checked] = []
    for data, key, originator, key_id, payload_size, payload_sha256 in jobs:
        try:
            header_bytes, signature, ciphertext = split(data)
            verify_signature(header_bytes, signature, _key(key), originator, key_id)
            check_ciphertext(ciphertext, payload_size, payload_sha256)
            out.append((None, hashlib.sha256(data).hexdigest()))
        except errors.EnvelopeError as exc:
            out.append((exc, ""))
    return out


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(len(payload).to_bytes(FRAME, "big") + payload)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(FRAME)
    if len(head) < FRAME:
        return None
    size = int.from_bytes(head, "big")
    body = stream.read(size)
    return body if len(body) == size else None


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        # msmt and broker as this process imports them (a benchmark or test may have put them
        # on sys.path itself)
        roots = [str(Path(__file__).resolve().parents[2]), str(Path(msmt.__file__).resolve().parents[1])]
        env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin: IO[bytes] = self.process.stdin
        self.stdout: IO[bytes] = self.process.stdout
        _widen(self.stdin.fileno())

    def send(self, jobs: Sequence[Job]) -> None:
        _write_frame(self.stdin, pickle.dumps(list(jobs), protocol=pickle.HIGHEST_PROTOCOL))

    def receive(self, count: int) -> list[Checked]:
        frame = _read_frame(self.stdout)
        if frame is None:
            raise OSError(f"signature worker {self.process.pid} ended")
        answers = pickle.loads(frame)  # noqa: S301 - our own child, over its own pipe
        if not isinstance(answers, list) or len(answers) != count:
            raise OSError(f"signature worker {self.process.pid} answered {count} jobs wrongly")
        return answers

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stdout.close()


class SignaturePool:
    """`check(jobs)` as `check_here` would answer, computed by `size` worker processes: a call
    spreads its envelopes over the workers idle at that moment (at least one; it waits for one),
    so that one request's envelopes are verified on several cores at once. Thread-safe."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a signature pool needs at least one worker")
        self.size = size
        # idle workers; None once closed (put back by whoever takes it, so every waiter wakes)
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._closed = False
        self.replaced = 0  # workers that failed and were replaced (tests, statistics)
        for _ in range(size):
            worker = _Worker()
            self._workers.append(worker)
            self._idle.put(worker)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._workers]

    def check(self, jobs: Sequence[Job]) -> list[Checked]:
        if not jobs:
            return []
        first = self._idle.get()
        if first is None:  # closed: whoever waited is answered here
            self._idle.put(None)
            return check_here(jobs)
        workers = [first]
        while len(workers) * MIN_CHUNK < len(jobs):
            try:
                more = self._idle.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._idle.put(None)
                break
            workers.append(more)
        step = -(-len(jobs) // len(workers))
        chunks = [jobs[i : i + step] for i in range(0, len(jobs), step)]
        for spare in workers[len(chunks) :]:
            self._idle.put(spare)
        workers = workers[: len(chunks)]
        sent: list[bool] = []
        for worker, chunk in zip(workers, chunks, strict=True):
            try:
                worker.send(chunk)
                sent.append(True)
            except (OSError, ValueError):
                sent.append(False)
        out: list[Checked] = []
        for worker, chunk, ok in zip(workers, chunks, sent, strict=True):
            answers: list[Checked] | None = None
            if ok:
                try:
                    answers = worker.receive(len(chunk))
                except (OSError, ValueError, pickle.UnpicklingError, EOFError):
                    answers = None
            if answers is None:
                self._replace(worker)
                answers = check_here(chunk)  # never skipped, never left to a failed worker
            else:
                self._idle.put(worker)
            out.extend(answers)
        return out

    def _replace(self, worker: _Worker) -> None:
        log.warning("a signature worker (pid %s) failed; starting another", worker.process.pid)
        worker.process.kill()
        worker.close()
        with self._lock:
            self.replaced += 1
            if worker in self._workers:
                self._workers.remove(worker)
            if self._closed:
                return
            fresh = _Worker()
            self._workers.append(fresh)
        self._idle.put(fresh)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        self._idle.put(None)
        for worker in workers:
            worker.close()


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    while (frame := _read_frame(stdin)) is not None:
        jobs = pickle.loads(frame)  # noqa: S301 - from the broker process that started us
        _write_frame(stdout, pickle.dumps(check_here(jobs), protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    # The broker decides when a worker ends (it closes its stdin, or dies and so closes it): a
    # Ctrl-C to the terminal's process group must not end the workers under a running broker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(sys.stdin.buffer, sys.stdout.buffer)
