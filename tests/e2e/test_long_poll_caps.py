"""Long-polls are capped per member and per process (issue 10, finding 4): one member cannot
hold every connection, and the broker stays below its file-descriptor limit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from msmt.auth import mint_token
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap

from .servers import broker_server


def _poll(base: str, who: str, wait: float) -> httpx.Response:
    target = f"/v1/inbox?wait={wait}"
    token = mint_token(_KEYS[who].api, who, AUDIENCE, method="GET", target=target)
    return httpx.get(f"{base}{target}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_long_polls_are_capped_per_member_and_in_all(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    caps = {"inbox_max_waiting_per_member": "3", "inbox_max_waiting": "5"}
    with broker_server(url, AUDIENCE, tmp_path / "broker.log", **caps) as (base, _):
        answers: list[int] = []
        waiting = [
            threading.Thread(target=lambda who=who: answers.append(_poll(base, who, 3).status_code))
            for who in ("NZL", "NZL", "NZL", "JPN", "JPN")
        ]
        for thread in waiting:
            thread.start()
        time.sleep(1.0)  # all five are waiting now

        over_member = _poll(base, "NZL", 3)
        assert over_member.status_code == 429, over_member.text
        assert over_member.json()["type"].endswith(":too-many-long-polls")
        assert over_member.headers["retry-after"] == "1"
        over_all = _poll(base, "USA", 3)
        assert over_all.status_code == 503 and over_all.json()["type"].endswith(":busy")
        assert _poll(base, "NZL", 0).status_code == 200  # a poll that does not wait is not capped

        for thread in waiting:
            thread.join(timeout=10)
        assert answers == [200] * 5  # the waiting ones were never disturbed
        assert _poll(base, "NZL", 0.2).status_code == 200  # and the slots are free again
        assert _poll(base, "USA", 0.2).status_code == 200
