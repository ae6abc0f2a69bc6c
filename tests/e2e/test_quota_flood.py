"""A real broker process under one member's flood (issue 10, finding 4): the flooding member
gets `429 rate-limited` with Retry-After, every other member's requests pass, and an envelope
over a member's quota is refused from its declared length, before any of its body is sent."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from broker import policydoc
from broker.services import policy as policy_service
from broker.store.db import make_engine, make_sessionmaker, transaction
from msmt.auth import mint_token
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap

from .servers import broker_server


def _quotas(url: str, countries: dict[str, dict[str, object]]) -> None:
    engine = make_engine(url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            data = policy_service.export_document(session).model_dump()
            data["quotas"]["countries"] = countries
            policy_service.apply_document(session, "test", policydoc.from_dict(data), int(time.time() * 1000))
    finally:
        engine.dispose()


def _get(client: httpx.Client, who: str) -> httpx.Response:
    target = "/v1/inbox?limit=1"
    token = mint_token(_KEYS[who].api, who, AUDIENCE, method="GET", target=target)
    return client.get(target, headers={"Authorization": f"Bearer {token}"})


def test_one_members_flood_is_refused_while_the_others_pass(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    _quotas(url, {"NZL": {"requests_per_second": 5, "burst": 10}, "JPN": {"largest_envelope": "1 MiB"}})
    with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _):
        flood: list[httpx.Response] = []
        others: list[httpx.Response] = []
        done = threading.Event()

        def flood_from_nzl() -> None:
            with httpx.Client(base_url=base, timeout=30) as client:
                while not done.is_set():
                    flood.append(_get(client, "NZL"))

        def kor_meanwhile() -> None:
            with httpx.Client(base_url=base, timeout=30) as client:
                for _ in range(30):
                    others.append(_get(client, "KOR"))
                    time.sleep(0.05)

        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            floods = [pool.submit(flood_from_nzl) for _ in range(4)]
            kor = pool.submit(kor_meanwhile)
            kor.result(timeout=120)
            done.set()
            for f in floods:
                f.result(timeout=60)
        elapsed = time.monotonic() - started

        statuses = [r.status_code for r in flood]
        passed = statuses.count(200)
        assert set(statuses) == {200, 429}, set(statuses)
        assert len(flood) > 100  # a real flood
        assert passed <= 10 + 5 * elapsed + 1  # the burst, then 5 per second
        refused = next(r for r in flood if r.status_code == 429)
        assert refused.json()["type"] == "urn:msmt:problem:rate-limited"
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        assert [r.status_code for r in others] == [200] * 30  # KOR never noticed

        # JPN's envelope over its 1 MiB quota: refused from the declared length alone, with a
        # token bound to the body (read after authentication) or not (read by the route)
        for token in (
            mint_token(_KEYS["JPN"].api, "JPN", AUDIENCE),
            mint_token(_KEYS["JPN"].api, "JPN", AUDIENCE, method="POST", target="/v1/items", body=b"big"),
        ):
            status, problem = _declare_only(base, token, 10 * 1024 * 1024)
            assert status == 413 and problem["type"] == "urn:msmt:problem:envelope-too-large", problem


def _declare_only(base: str, token: str, length: int) -> tuple[int, dict[str, object]]:
    """Send a submission's headers declaring `length` bytes, and none of the body."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host is not None and port is not None
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(
            (
                "POST /v1/items HTTP/1.1\r\n"
                f"Host: {host}\r\n"
                f"Authorization: Bearer {token}\r\n"
                "Content-Type: application/vnd.msmt.envelope\r\n"
                f"Content-Length: {length}\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)  # a broker waiting for the body: times out after 10 s
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)
