"""Prometheus metrics (broker/metrics.py), on both databases, scraped through the exposition
format: counters move by exactly the submissions made; long-polls waiting go up and back
down; the inbox gauges follow deliveries and acknowledgements, with no country in any label
unless the operator asks; a database outage is `msmt_database_up 0`, never an error."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from broker import metrics
from broker.services import sequencer as sequencer_module
from broker.services import submit as submit_module
from broker.services.submit import join_batch
from msmt.core import Markings
from msmt.core import parse as parse_envelope

from .conftest import MEMBERS, World

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CONFIDENTIAL = Markings.create("CONFIDENTIAL", "AMBER", ["ALL"], topics=["maritime"])


def scrape(*collectors: Any) -> Samples:
    """What a scrape of these collectors (or registries) shows, parsed back from the text."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return parse(generate_latest(registry).decode())


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def deltas(before: Samples, after: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every series of `name` that moved, and by how much."""
    keys = {labels for (n, labels) in (*before, *after) if n == name}
    moved = {labels: after.get((name, labels), 0.0) - before.get((name, labels), 0.0) for labels in keys}
    return {labels: delta for labels, delta in moved.items() if delta}


def series(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def own() -> Samples:
    """This process's instruments (a worker's files, in `serve`)."""
    return scrape(metrics.registry())


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def _metrics_on() -> None:
    """Metrics on, as `MSMT_METRICS_PORT` turns them on in `serve`; autouse fixtures come
    first, so `world`'s broker (and its engine) is made with them on."""
    metrics.enable()


# --- submissions --------------------------------------------------------------------------


def test_submissions_are_counted_by_outcome_problem_and_refusal_rule(world: World) -> None:
    before = own()

    accepted = world.seal("KOR", ["USA", "JPN"], b"one")
    assert world.submit("KOR", accepted).status_code == 201
    assert world.submit("KOR", accepted).status_code == 200  # identical re-submission
    # KOR -> USA may be CONFIDENTIAL (its agreement); FRA (default ceiling) and NZL
    # (RESTRICTED accreditation, default ceiling) may not
    refused = world.submit("KOR", world.seal("KOR", ["USA", "FRA", "NZL"], markings=CONFIDENTIAL))
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["type"] == "urn:msmt:problem:recipients-refused"
    rules = sorted((country, r["rule"]) for country, rs in body["recipients"].items() for r in rs)
    assert rules == [
        ("FRA", "above-agreement-ceiling"),
        ("NZL", "above-accreditation"),
        ("NZL", "above-agreement-ceiling"),
    ]
    mismatch = world.submit("KOR", world.seal("USA", ["JPN"]))  # USA's envelope, sent by KOR
    assert mismatch.status_code == 403 and mismatch.json()["type"].endswith(":originator-mismatch")
    garbage = world.submit("KOR", b"not an envelope")
    assert garbage.status_code == 422
    garbage_code = garbage.json()["type"].rsplit(":", 1)[1]

    # a batch counts per envelope: new, the same again, refused
    fresh = world.seal("KOR", ["GBR"], b"two")
    batch = join_batch([fresh, fresh, world.seal("KOR", ["NZL"], markings=CONFIDENTIAL)])
    r = world.client.post(
        "/v1/items/batch",
        content=batch,
        headers={**world.auth("KOR"), "Content-Type": "application/vnd.msmt.envelope-batch"},
    )
    assert r.status_code == 200, r.text
    assert [result["status"] for result in r.json()["results"]] == [201, 200, 403]

    after = own()
    assert deltas(before, after, "msmt_submissions_total") == {
        series(outcome="accepted", problem="none"): 2,
        series(outcome="duplicate", problem="none"): 2,
        series(outcome="refused", problem="recipients-refused"): 2,
        series(outcome="refused", problem="originator-mismatch"): 1,
        series(outcome="refused", problem=garbage_code): 1,
    }
    assert deltas(before, after, "msmt_policy_refusals_total") == {
        series(rule="above-agreement-ceiling"): 3,
        series(rule="above-accreditation"): 2,
    }


def test_a_batch_from_someone_else_is_refused_per_envelope(world: World) -> None:
    before = own()
    batch = join_batch([world.seal("KOR", ["USA"]), world.seal("USA", ["JPN"]), world.seal("KOR", ["JPN"])])
    r = world.client.post(
        "/v1/items/batch",
        content=batch,
        headers={**world.auth("KOR"), "Content-Type": "application/vnd.msmt.envelope-batch"},
    )
    assert r.status_code == 403, r.text
    assert deltas(before, own(), "msmt_submissions_total") == {
        series(outcome="refused", problem="originator-mismatch"): 3
    }


def test_a_submission_the_database_loses_is_counted_failed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:

    def lost(*_: Any, **__: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("the database went away"))

    before = own()
    monkeypatch.setattr(sequencer_module, "accept_batch", lost)
    r = world.submit("KOR", world.seal("KOR", ["USA"]))
    assert r.status_code == 503, r.text
    assert deltas(before, own(), "msmt_submissions_total") == {
        series(outcome="failed", problem="database-unavailable"): 1
    }


LARGE_BATCH = 32


def _post_batch(world: World, envelopes: list[bytes]) -> Any:
    return world.client.post(
        "/v1/items/batch",
        content=join_batch(envelopes),
        headers={**world.auth("KOR"), "Content-Type": "application/vnd.msmt.envelope-batch"},
    )


def test_a_large_batch_prepared_in_parts_answers_each_envelope_in_its_place(world: World) -> None:
    """Each answer of a large batch stays in its envelope's place, refusals included, and each
    envelope is counted once."""
    envelopes = [world.seal("KOR", ["GBR"], f"part {i}".encode()) for i in range(LARGE_BATCH)]
    refused_at = {3, len(envelopes) - 2}
    for i in refused_at:
        envelopes[i] = world.seal("KOR", ["NZL"], markings=CONFIDENTIAL)
    before = own()
    r = _post_batch(world, envelopes)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [403 if i in refused_at else 201 for i in range(len(envelopes))]
    for i, (envelope, result) in enumerate(zip(envelopes, results, strict=True)):
        if i not in refused_at:
            assert result["receipt"]["item_id"] == parse_envelope(envelope).header.item_id
    assert deltas(before, own(), "msmt_submissions_total") == {
        series(outcome="accepted", problem="none"): len(envelopes) - 2,
        series(outcome="refused", problem="recipients-refused"): 2,
    }


def test_a_large_batch_that_fails_midway_counts_each_envelope_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database goes away while a batch's envelopes are being prepared: the whole batch is
    answered 503 and nothing is stored; every envelope is counted exactly once, refused (the
    one that is not an envelope, before the failure) or failed (the rest, prepared or not)."""
    envelopes = [world.seal("KOR", ["GBR"], f"lost {i}".encode()) for i in range(LARGE_BATCH)]
    envelopes[1] = b"not an envelope"  # refused while being prepared
    doomed = envelopes[len(envelopes) - 3]
    real_prepare = submit_module.prepare_unsigned

    def failing(*args: Any, **kwargs: Any) -> Any:
        if args[4] == doomed:  # the envelope's bytes
            raise OperationalError("SELECT", {}, Exception("the database went away"))
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(submit_module, "prepare_unsigned", failing)
    before = world.count("items")
    counted = own()
    r = _post_batch(world, envelopes)
    assert r.status_code == 503, r.text
    assert world.count("items") == before
    moved = deltas(counted, own(), "msmt_submissions_total")
    assert moved.pop(series(outcome="failed", problem="database-unavailable")) == len(envelopes) - 1
    ((refusal, count),) = moved.items()  # the one envelope that is not an envelope
    assert ("outcome", "refused") in refusal and count == 1


# --- requests, long-polls, the pool -------------------------------------------------------


def test_request_latency_by_method_route_template_and_status_class() -> None:
    route = "/v1/test-metrics/{item_id}"  # a template of its own: no other test moves it
    before = own()
    metrics.observe_request("GET", route, 200, 0.004)
    metrics.observe_request("GET", route, 204, 0.2)
    metrics.observe_request("GET", route, 404, 40.0)
    metrics.observe_request("BREW", route, 500, 0.02)  # not an HTTP method: one series for all
    after = own()
    count = "msmt_http_request_duration_seconds_count"
    assert deltas(before, after, count) == {
        series(method="GET", route=route, status_class="2xx"): 2,
        series(method="GET", route=route, status_class="4xx"): 1,
        series(method="OTHER", route=route, status_class="5xx"): 1,
    }
    ok = {"method": "GET", "route": route, "status_class": "2xx"}
    bucket = "msmt_http_request_duration_seconds_bucket"
    assert value(after, bucket, **ok, le="0.005") - value(before, bucket, **ok, le="0.005") == 1
    assert value(after, bucket, **ok, le="0.25") - value(before, bucket, **ok, le="0.25") == 2
    slow = {"method": "GET", "route": route, "status_class": "4xx"}
    assert value(after, bucket, **slow, le="30.0") - value(before, bucket, **slow, le="30.0") == 0
    assert value(after, bucket, **slow, le="+Inf") - value(before, bucket, **slow, le="+Inf") == 1
    sum_ = "msmt_http_request_duration_seconds_sum"
    assert value(after, sum_, **ok) - value(before, sum_, **ok) == pytest.approx(0.204)


def test_the_request_log_middleware_observes_route_templates(world: World) -> None:
    """What `observe_request` sees behind the request-log middleware (broker/observability.py):
    the route's template, whatever the item id in the path."""
    from fastapi.testclient import TestClient

    from broker.observability import RequestLog

    data = world.seal("KOR", ["USA"])
    r = world.submit("KOR", data)
    assert r.status_code == 201
    item_id = r.json()["item_id"]
    app: Any = world.client.app
    wired = any(
        metrics.observe_request in (m.kwargs.get("observers") or ()) for m in app.user_middleware
    )  # by create_app; until it is, the test puts the middleware around the app itself
    logged = world.client if wired else TestClient(RequestLog(app, observers=[metrics.observe_request]))
    before = own()
    assert logged.get(f"/v1/items/{item_id}", headers=world.auth("USA")).status_code == 200
    assert logged.get(f"/v1/items/{item_id}", headers=world.auth("JPN")).status_code in (403, 404)
    assert logged.get("/v1/no-such-route/123").status_code == 404
    moved = deltas(before, own(), "msmt_http_request_duration_seconds_count")
    assert moved == {
        series(method="GET", route="/v1/items/{item_id}", status_class="2xx"): 1,
        series(method="GET", route="/v1/items/{item_id}", status_class="4xx"): 1,
        series(method="GET", route="unmatched", status_class="4xx"): 1,
    }


def test_long_polls_waiting_go_up_while_waiting_and_back_down(world: World) -> None:
    gauge = "msmt_inbox_longpolls_waiting"
    base = value(own(), gauge)
    answers: list[Any] = []

    def poll() -> None:
        answers.append(world.client.get("/v1/inbox?after=0&wait=20", headers=world.auth("NZL")))

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        wait_for(lambda: value(own(), gauge) == base + 1)
        assert world.submit("KOR", world.seal("KOR", ["NZL"])).status_code in (201, 202)
        thread.join(timeout=20)
    finally:
        thread.join(timeout=30)
    assert answers and answers[0].status_code == 200
    assert len(answers[0].json()["deliveries"]) == 1
    assert value(own(), gauge) == base


def test_pool_checkouts_are_counted(world: World) -> None:
    engine = world.client.app.state.engine  # type: ignore[attr-defined]
    gauge = "msmt_db_pool_connections_checked_out"
    base = value(own(), gauge)
    with engine.connect():
        assert value(own(), gauge) == base + 1
        with engine.connect():
            assert value(own(), gauge) == base + 2
    assert value(own(), gauge) == base
    assert value(own(), "msmt_db_pool_size") == engine.pool.size()


# --- the inbox gauges (computed when scraped) -----------------------------------------------


def test_inbox_depth_and_oldest_age_follow_deliveries_and_acks(world: World) -> None:
    total = metrics.InboxCollector(world.url, cache_s=0, clock=world.clock)
    each = metrics.InboxCollector(world.url, cache_s=0, clock=world.clock, country_labels=True)
    depth, age = "msmt_inbox_unacknowledged", "msmt_inbox_oldest_unacknowledged_age_seconds"

    empty = scrape(total)
    assert value(empty, "msmt_database_up") == 1
    assert value(empty, depth) == 0 and value(empty, age) == 0

    assert world.submit("KOR", world.seal("KOR", ["USA", "JPN"], b"a")).status_code == 201
    world.clock.ms += 5000
    assert world.submit("KOR", world.seal("KOR", ["USA"], b"b")).status_code == 201
    world.settle()
    world.clock.ms += 3000

    samples = scrape(total)
    assert value(samples, depth) == 3
    assert value(samples, age) == 8.0  # the first item, to either recipient
    assert {labels for (name, labels) in samples if name in (depth, age)} == {frozenset()}
    samples = scrape(each)
    assert value(samples, depth, recipient="USA") == 2 and value(samples, age, recipient="USA") == 8.0
    assert value(samples, depth, recipient="JPN") == 1 and value(samples, age, recipient="JPN") == 8.0

    def ack(who: str, seqs: list[int]) -> None:
        r = world.client.post("/v1/inbox/ack", json={"seqs": seqs}, headers=world.auth(who))
        assert r.status_code == 200, r.text

    ack("USA", [1])
    samples = scrape(each)
    assert value(samples, depth, recipient="USA") == 1 and value(samples, age, recipient="USA") == 3.0
    ack("JPN", [1])
    samples = scrape(each)
    assert value(samples, depth, recipient="JPN") == 0 and value(samples, age, recipient="JPN") == 0
    assert value(scrape(total), depth) == 1 and value(scrape(total), age) == 3.0

    # after everything of JPN's was acknowledged (its floor is past its last seq): a new one
    assert world.submit("KOR", world.seal("KOR", ["JPN"], b"c")).status_code == 201
    world.settle()
    world.clock.ms += 1000
    samples = scrape(each)
    assert value(samples, depth, recipient="JPN") == 1 and value(samples, age, recipient="JPN") == 1.0
    ack("USA", [2])
    ack("JPN", [2])
    samples = scrape(each)
    assert value(samples, depth, recipient="USA") == 0 and value(samples, depth, recipient="JPN") == 0
    assert value(scrape(total), depth) == 0 and value(scrape(total), age) == 0


def test_no_country_in_any_label_unless_turned_on(world: World) -> None:
    assert world.submit("KOR", world.seal("KOR", ["USA", "JPN"])).status_code == 201
    world.settle()
    refused = world.submit("KOR", world.seal("KOR", ["NZL"], markings=CONFIDENTIAL))
    assert refused.status_code == 403
    default = scrape(metrics.registry(), metrics.InboxCollector(world.url, cache_s=0))
    assert default
    values_ = {label_value for (_, labels) in default for _, label_value in labels}
    assert not values_ & set(MEMBERS)
    assert not any(name == "recipient" for (_, labels) in default for name, _ in labels)
    labelled = scrape(metrics.InboxCollector(world.url, cache_s=0, country_labels=True))
    depth = {
        dict(labels)["recipient"]: count
        for (name, labels), count in labelled.items()
        if name == "msmt_inbox_unacknowledged"
    }
    assert {code for code, count in depth.items() if count} == {"USA", "JPN"}
    assert set(depth) <= set(MEMBERS)


def test_scrapes_within_the_cache_period_do_not_read_the_database(world: World) -> None:
    collector = metrics.InboxCollector(world.url, cache_s=60)
    scrape(collector)
    assert world.submit("KOR", world.seal("KOR", ["USA"])).status_code == 201
    world.settle()
    for _ in range(5):
        samples = scrape(collector)
    assert collector.refreshes == 1
    assert value(samples, "msmt_inbox_unacknowledged") == 0  # as read a moment ago
    collector.cache_s = 0
    assert value(scrape(collector), "msmt_inbox_unacknowledged") == 1


def unreachable(tmp_path: Path) -> Iterable[str]:
    yield "postgresql+psycopg://postgres@127.0.0.1:1/nothing"  # nobody listens on port 1
    (tmp_path / "empty.db").touch()
    yield f"sqlite:///{tmp_path / 'empty.db'}"  # no schema


def test_a_database_outage_is_database_up_0_never_an_error(tmp_path: Path) -> None:
    for url in unreachable(tmp_path):
        collector = metrics.InboxCollector(url, cache_s=0, timeout_s=1)
        samples = scrape(collector)
        assert samples == {("msmt_database_up", frozenset()): 0.0}, url
        assert scrape(collector) == samples


def test_metrics_off_import_nothing_and_write_nothing(tmp_path: Path) -> None:
    """Without MSMT_METRICS_PORT: the broker works, prometheus_client is never imported and
    the multiprocess folder (were one named) stays empty."""
    folder = tmp_path / "multiproc"
    folder.mkdir()
    program = f"""
import sys
from fastapi.testclient import TestClient
from broker import metrics
from broker.app import create_app
from broker.settings import Settings
from broker.store.db import migrate
url = "sqlite:///{tmp_path / "off.db"}"
migrate(url)
with TestClient(create_app(Settings(database_url=url))) as client:
    assert client.get("/v1/health").status_code == 200
    assert client.get("/v1/inbox?wait=1").status_code == 401
metrics.observe_request("GET", "/v1/health", 200, 0.001)
metrics.submission_stored(True)
metrics.longpoll_waiting(1)
assert not metrics.enabled()
assert "prometheus_client" not in sys.modules, "imported"
"""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MSMT_")},
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert list(folder.iterdir()) == []
