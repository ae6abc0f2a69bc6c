"""Issue 10 finding 1 against real broker processes: a report sent while the broker dies is
stored exactly once, whether the broker died before or after it committed the item.

An unmodified `Client` (and the `msmt` command line) talks to a real `msmt-broker serve`; the
only test instrumentation is a transport that SIGKILLs the broker at the worst moment.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from msmt.agency import AgencyKeys
from msmt.client import Client
from msmt.core import Markings
from msmt.errors import SubmitPending
from msmt.trust import TrustStore

from .servers import broker_server
from .test_cli import AUDIENCE, run, setup

__all__ = ["setup"]  # the module-scoped agencies and broker database of test_cli

MARKINGS = Markings.create("RESTRICTED", "AMBER", ["USA"], topics=["maritime"])


class KillingTransport(httpx.HTTPTransport):
    """Kills the broker process on the first submission: before it reaches the broker, or
    after the broker answered (the item committed, the answer never delivered)."""

    def __init__(self, proc: subprocess.Popen[bytes], when: str) -> None:
        super().__init__()
        self.proc, self.when, self.killed = proc, when, False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        submit = (request.method, request.url.path) == ("POST", "/v1/items")
        if submit and not self.killed and self.when == "before":
            self._kill()
        response = super().handle_request(request)
        if submit and not self.killed and self.when == "after":
            response.read()
            assert response.status_code == 201, response.text
            self._kill()
            raise httpx.ReadError("connection reset by peer")
        return response

    def _kill(self) -> None:
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _inbox_ids(env: dict[str, str]) -> list[str]:
    return [d["item_id"] for d in json.loads(run("--json", "inbox", env=env).stdout)["deliveries"]]


@pytest.mark.parametrize("when", ["before", "after"])
def test_broker_killed_during_send_stores_the_report_once(setup: dict[str, object], when: str) -> None:
    tmp, db, env = Path(str(setup["tmp"])), str(setup["db"]), dict(setup["env"])  # type: ignore[call-overload]
    keys = AgencyKeys.load(tmp / "KOR", env["MSMT_PASSPHRASE"])
    with broker_server(db, AUDIENCE, tmp / f"outbox-{when}-1.log") as (base, proc):
        usa = {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / "USA")}
        before = set(_inbox_ids(usa))
        trust = TrustStore.load(tmp / "KOR" / "trust")
        with (
            Client(
                base,
                keys,
                trust=trust,
                audience=AUDIENCE,
                transport=KillingTransport(proc, when),
                retries=2,
                backoff_s=0.05,
            ) as kor,
            pytest.raises(SubmitPending) as info,
        ):
            kor.send(
                b"sent while the broker died",
                content_type="text/plain",
                markings=MARKINGS,
                recipients=["USA"],
            )
    item_id = info.value.item_id
    kor_env = {**env, "MSMT_KEYS": str(tmp / "KOR")}
    listed = json.loads(run("--json", "outbox", env=kor_env).stdout)
    assert [(row["item_id"], row["state"]) for row in listed] == [(item_id, "pending")]
    # while the broker is down, the answer says the item is kept and how to send it, never
    # "try again" (which would seal a second item)
    down = run("outbox", "send", env={**kor_env, "MSMT_BROKER_URL": "http://127.0.0.1:9"}, expect=4)
    assert f"item {item_id} is not acknowledged yet" in down.stderr
    assert "`msmt outbox send` re-sends the same bytes" in down.stderr

    with broker_server(db, AUDIENCE, tmp / f"outbox-{when}-2.log") as (base, _):
        kor_env["MSMT_BROKER_URL"] = base
        usa["MSMT_BROKER_URL"] = base
        sent = json.loads(run("--json", "outbox", "send", env=kor_env).stdout)
        assert [(row["item_id"], row["result"]) for row in sent] == [(item_id, "acknowledged")]
        assert "nothing to send" in run("outbox", "send", env=kor_env).stdout
        new = [i for i in _inbox_ids(usa) if i not in before]
        assert new == [item_id]  # exactly one item, the one sealed before the broker died
        status = json.loads(run("--json", "status", item_id, env=kor_env).stdout)
        assert [d["recipient"] for d in status["deliveries"]] == ["USA"]
    assert "the outbox is empty" in run("outbox", env=kor_env).stdout
