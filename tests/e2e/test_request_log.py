"""A real broker process writes one JSON line per request, and nothing secret in any line.

The client is the unmodified library; a counting transport tells how many requests it made.
Secrets put within the broker's reach on purpose: the database password in its URL, every
token the client sends, an agency's private key file, and a marker in every payload.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from msmt.client import Client
from msmt.core import Markings
from msmt.trust import TrustStore
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, postgresql_schema, root_of

from .servers import broker_server

PAYLOAD_MARKER = "MSMT-PAYLOAD-CANARY-5d1e"
PASSWORD = "log-canary-password-71c4"  # the test database trusts every connection: any password works


class Counting(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        self.tokens: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.tokens.append(request.headers.get("authorization", "").removeprefix("Bearer "))
        return super().handle_request(request)


def test_one_json_line_per_request_and_no_secret_in_any(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    with postgresql_schema() as plain_url:
        bootstrap(plain_url, int(time.time() * 1000))
        url = make_url(plain_url).set(password=PASSWORD).render_as_string(hide_password=False)
        root = root_of(plain_url)
        with broker_server(url, AUDIENCE, log) as (base, _):
            sent = Counting()
            received = Counting()
            markings = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])
            with Client(
                base, _KEYS["KOR"], trust=TrustStore.pin(root), audience=AUDIENCE, transport=sent
            ) as kor:
                for n in range(3):
                    kor.send(
                        f"{PAYLOAD_MARKER} report {n}".encode(), content_type="text/plain", markings=markings
                    )
            with Client(
                base, _KEYS["USA"], trust=TrustStore.pin(root), audience=AUDIENCE, transport=received
            ) as usa:
                page = usa.inbox(envelopes=True)
                opened = [usa.open(d) for d in page.deliveries]
                assert all(PAYLOAD_MARKER.encode() in o.payload for o in opened) and len(opened) == 3
                usa.acknowledge(d.seq for d in page.deliveries)
            for n in range(5):  # refused ones are logged too
                r = httpx.get(
                    f"{base}/v1/inbox", headers={"Authorization": "Bearer x.y.z", "X-Request-ID": f"bad-{n}"}
                )
                assert r.status_code == 401
            made = sent.requests + received.requests + 5

        text = log.read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # each line is JSON
        requests = [x for x in lines if x.get("logger") == "msmt.request"]
        readiness_probes = [x for x in requests if x["route"] == "/v1/health"]
        assert len(requests) - len(readiness_probes) == made, (len(requests), made)
        for line in requests:
            assert {"time", "request_id", "method", "route", "status", "latency_ms"} <= set(line)
        by_id = {x["request_id"]: x for x in requests}
        for n in range(5):
            assert by_id[f"bad-{n}"]["status"] == 401 and by_id[f"bad-{n}"]["problem"]
        submits = [x for x in requests if x["route"] == "/v1/items" and x["method"] == "POST"]
        assert len(submits) == 3 and all(x["caller"] == "KOR" and x.get("item") for x in submits)

        starts = [x for x in lines if x["event"] == "broker starting"]
        assert len(starts) == 1 and starts[0]["database"].startswith(
            "postgresql+psycopg://postgres:***@127.0.0.1"
        )
        assert PASSWORD not in text
        assert PAYLOAD_MARKER not in text
        for token in sent.tokens + received.tokens:
            assert token[:40] not in text
        assert "PRIVATE KEY" not in text and "Traceback" not in text
