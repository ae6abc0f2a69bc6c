"""deploy/healthcheck.py, the containers' health probe, run as the image runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .support import HEALTHCHECK


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/livez": 200, "/readyz": 503}.get(self.path, 404)
        body = b'{"status": "ok"}' if status == 200 else b'{"status": "not ready"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_healthy_on_200(server: str) -> None:
    result = probe(f"{server}/livez")
    assert result.returncode == 0, result.stderr


def test_unhealthy_on_503(server: str) -> None:
    result = probe(f"{server}/readyz")
    assert result.returncode == 1
    assert "503" in result.stderr


def test_unhealthy_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = probe(f"http://127.0.0.1:{port}/livez", "2")
    assert result.returncode == 1


def test_refuses_other_schemes() -> None:
    assert probe("file:///etc/passwd").returncode == 1


def test_ignores_proxy_settings(server: str) -> None:
    # A proxy set for the brokers' outbound calls must not carry the local probe.
    result = probe(
        f"{server}/livez", env={"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    )
    assert result.returncode == 0, result.stderr
