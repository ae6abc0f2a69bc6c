"""Bodies before authentication, and bodies that stop arriving (issue 10, finding 4): an
anonymous body is never read, and a stalled one is refused (408) and its connection closed."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from tests.integration.conftest import AUDIENCE, bootstrap

from .servers import broker_server


def _answer(sock: socket.socket, within_s: float) -> tuple[int, dict[str, str], bytes, bool]:
    """Status, headers, body, and whether the server closed the connection after it."""
    sock.settimeout(within_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed without an answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    sock.settimeout(0.5)
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    return int(lines[0].split()[1]), headers, body, closed


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_an_anonymous_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _), _connect(base) as sock:
        # headers promise a 60 MiB envelope; not one byte of it is sent
        sock.sendall(b"POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Length: 62914560\r\n\r\n")
        status, headers, body, _closed = _answer(sock, 5)
        assert status == 401 and json.loads(body)["type"].endswith(":missing-token")
        assert headers["www-authenticate"] == "Bearer"
        with _connect(base) as other:  # a JSON route too: FastAPI would otherwise parse it first
            other.sendall(b"POST /v1/preflight HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n{")
            assert _answer(other, 5)[0] == 401


def test_a_stalled_body_is_refused_and_its_connection_closed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    with broker_server(url, AUDIENCE, tmp_path / "broker.log", body_timeout_s="1") as (base, _):
        with _connect(base) as sock:
            sock.sendall(
                b"POST /v1/preflight HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a.b.c\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b'{"classification": '
            )
            started = time.monotonic()
            status, headers, body, closed = _answer(sock, 10)
            assert status == 408 and json.loads(body)["type"].endswith(":body-timeout")
            assert 0.9 < time.monotonic() - started < 5
            assert headers.get("connection") == "close" and closed
        # a body that keeps coming, slowly but within the timeout each time, is fine
        with _connect(base) as sock:
            sock.sendall(
                b"POST /v1/preflight HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a.b.c\r\n"
                b"Content-Type: application/json\r\nContent-Length: 4\r\n\r\n{"
            )
            for part in (b'"', b'"', b"}"):
                time.sleep(0.5)
                sock.sendall(part)
            assert _answer(sock, 10)[0] in (401, 422)  # read whole, then judged as usual
