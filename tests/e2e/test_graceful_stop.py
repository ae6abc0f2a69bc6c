"""A stopping broker releases its long-polls at once (issue 10, finding 4).

Before: on SIGTERM uvicorn closed its listener and waited for every open request, and a
long-poll waits up to 30 s, so a graceful stop took up to 30 s with new connections refused all
along. Now every waiting long-poll is answered `503 shutting-down` (with `Retry-After`, and
`Connection: close`) as soon as the signal arrives, and the process is gone within a second or two.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from msmt.auth import mint_token
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap

from .servers import broker_server

POLLERS = ("USA", "JPN", "FRA", "GBR", "DEU", "DEU")


def test_sigterm_releases_waiting_long_polls_and_the_process_exits_promptly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    log = tmp_path / "broker.log"
    answers: dict[int, tuple[float, httpx.Response | Exception]] = {}

    with broker_server(url, AUDIENCE, log) as (base, proc):

        def poll(i: int, country: str) -> None:
            target = "/v1/inbox?wait=30"
            token = mint_token(_KEYS[country].api, country, AUDIENCE, method="GET", target=target)
            try:
                response = httpx.get(base + target, headers={"Authorization": f"Bearer {token}"}, timeout=40)
                answers[i] = (time.monotonic(), response)
            except Exception as exc:
                answers[i] = (time.monotonic(), exc)

        threads = [threading.Thread(target=poll, args=(i, c)) for i, c in enumerate(POLLERS)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # every long-poll is in, checked its inbox (empty) and waits
        assert not answers, answers

        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for thread in threads:
            thread.join(timeout=10)
        proc.wait(timeout=10)
        exited = time.monotonic() - signalled

    assert len(answers) == len(POLLERS)
    for at, response in answers.values():
        assert isinstance(response, httpx.Response), response
        assert at - signalled < 1.5, at - signalled
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:msmt:problem:shutting-down"
        assert response.headers.get("retry-after")
        assert response.headers.get("connection", "").lower() == "close"
    assert exited < 3.0, exited
    text = log.read_text()
    assert "broker stopped" in text
    assert "Traceback" not in text
