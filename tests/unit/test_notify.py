"""InboxNotifier: long-poll wake-ups within one process, and across broker processes through
PostgreSQL LISTEN/NOTIFY (section "PostgreSQL" below; skipped when it is unreachable)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session

from broker.services.notify import (
    InboxNotifier,
    listener_conninfo,
    notify_in_transaction,
    parse_payload,
    payloads,
    split_origin,
)

T = TypeVar("T")


def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


def later(delay: float, action: Callable[[], object]) -> threading.Thread:
    def go() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=go)
    thread.start()
    return thread


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def test_a_publish_from_another_thread_wakes_the_waiter_at_once() -> None:
    notifier = InboxNotifier()

    async def scenario() -> tuple[bool, float]:
        start = time.monotonic()
        thread = later(0.1, lambda: notifier.publish(["USA"]))
        woken = await notifier.wait("USA", 10)
        elapsed = time.monotonic() - start
        thread.join()
        return woken, elapsed

    woken, elapsed = run(scenario())
    assert woken
    assert elapsed < 2  # not the 10 s timeout


def test_without_a_publish_the_wait_times_out() -> None:
    notifier = InboxNotifier()
    start = time.monotonic()
    assert run(notifier.wait("USA", 0.3)) is False
    assert 0.25 <= time.monotonic() - start < 2


def test_a_publish_for_other_recipients_does_not_wake_the_waiter() -> None:
    notifier = InboxNotifier()
    thread = later(0.05, lambda: notifier.publish(["JPN", "GBR"]))
    start = time.monotonic()
    assert run(notifier.wait("USA", 0.5)) is False
    assert time.monotonic() - start >= 0.45
    thread.join()
    assert notifier.generation("JPN") == notifier.generation("GBR") == 1
    assert notifier.generation("USA") == 0


def test_a_publish_between_the_database_check_and_the_wait_is_not_lost() -> None:
    notifier = InboxNotifier()
    seen = notifier.generation("USA")  # a long-poll takes this, then checks the database
    notifier.publish(["USA"])  # the integrator commits and publishes right after the check
    start = time.monotonic()
    assert run(notifier.wait("USA", 10, since=seen)) is True
    assert time.monotonic() - start < 1  # at once, not after the timeout
    # nothing newer than what a caller has seen: the wait does wait
    assert run(notifier.wait("USA", 0.2, since=notifier.generation("USA"))) is False
    # without `since`, only a publish after the wait began counts
    assert run(notifier.wait("USA", 0.2)) is False


def test_every_waiter_of_a_recipient_wakes_and_no_waiter_is_left_behind() -> None:
    notifier = InboxNotifier()

    async def scenario() -> None:
        usa = [asyncio.create_task(notifier.wait("USA", 10)) for _ in range(5)]
        jpn = asyncio.create_task(notifier.wait("JPN", 0.3))
        cancelled = asyncio.create_task(notifier.wait("GBR", 10))
        await until(lambda: notifier.waiting("USA") == 5 and notifier.waiting("GBR") == 1)
        cancelled.cancel()
        thread = later(0, lambda: notifier.publish(["USA"]))
        assert await asyncio.gather(*usa) == [True] * 5
        assert await jpn is False
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        thread.join()

    run(scenario())
    assert notifier.waiting("USA") == notifier.waiting("JPN") == notifier.waiting("GBR") == 0


def test_waiters_on_several_event_loops_are_woken() -> None:
    notifier = InboxNotifier()
    results: list[bool] = []

    def waiter() -> None:
        results.append(run(notifier.wait("USA", 10)))

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while notifier.waiting("USA") < 3:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    start = time.monotonic()
    notifier.publish(["USA"])
    for thread in threads:
        thread.join()
    assert results == [True] * 3
    assert time.monotonic() - start < 2


def test_payloads_stay_under_the_postgresql_limit_and_round_trip() -> None:
    recipients = [f"R{i:05d}" for i in range(3000)]
    chunks = payloads(recipients)
    assert len(chunks) > 1
    assert all(len(chunk.encode()) < 8000 for chunk in chunks)
    assert sorted(r for chunk in chunks for r in parse_payload(chunk)) == recipients
    assert payloads(["USA", "USA", "JPN"]) == ["JPN,USA"]
    assert payloads([]) == []
    assert parse_payload(" USA,,JPN ," + "x" * 81) == ["USA", "JPN"]
    assert split_origin("0123abcd|USA,JPN") == ("0123abcd", "USA,JPN")
    assert split_origin("USA,JPN") == (None, "USA,JPN")  # a broker that does not name itself


def test_on_sqlite_nothing_is_notified_and_no_listener_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    engine = create_engine(url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(str(args[2])))
    try:
        with Session(engine) as session, session.begin():
            session.execute(text("SELECT 1"))
            notify_in_transaction(session, ["USA"])  # pg_notify does not exist on SQLite
        assert statements == ["SELECT 1"]
    finally:
        engine.dispose()
    assert listener_conninfo(url) is None
    notifier = InboxNotifier()
    notifier.start(url)
    assert not any(t.name == "msmt-inbox-listener" for t in threading.enumerate())
    notifier.stop()


def test_a_postgresql_url_becomes_a_libpq_url() -> None:
    url = "postgresql+psycopg://postgres:pw@127.0.0.1:5432/test?options=-csearch_path%3Dmsmt_x"
    assert (
        listener_conninfo(url)
        == "postgresql://postgres:pw@127.0.0.1:5432/test?options=-csearch_path%3Dmsmt_x"
    )


# --- PostgreSQL: several broker processes ---------------------------------------------------


def _unique() -> str:
    """A recipient no other test (or xdist worker) notifies: the channel is database-wide."""
    return f"T{uuid.uuid4().hex[:12]}"


@contextmanager
def _two_processes() -> Iterator[tuple[InboxNotifier, InboxNotifier, Engine]]:
    """Two broker processes' notifiers listening on one fresh schema, and an engine on it;
    stopped and disposed of on the way out."""
    from tests.integration.conftest import postgresql_schema

    with postgresql_schema() as url:
        sender, receiver = InboxNotifier(), InboxNotifier()
        sender.start(url)
        receiver.start(url)
        engine = create_engine(url)
        try:
            assert sender.wait_listening(10) and receiver.wait_listening(10)
            yield sender, receiver, engine
        finally:
            sender.stop()
            receiver.stop()
            engine.dispose()


@pytest.mark.postgresql
def test_a_notify_in_a_committed_transaction_wakes_the_other_processes_waiters() -> None:
    with _two_processes() as (sender, receiver, engine):
        recipient, other = _unique(), _unique()

        def rolled_back() -> None:
            with Session(engine) as session:
                session.begin()
                notify_in_transaction(session, [recipient])
                session.rollback()

        async def scenario() -> None:
            # rolled back: nobody is woken
            waiter = asyncio.create_task(receiver.wait(recipient, 1.0))
            await until(lambda: receiver.waiting(recipient) == 1)
            await asyncio.to_thread(rolled_back)
            assert await waiter is False

            # committed: woken when it commits, not before
            waiter = asyncio.create_task(receiver.wait(recipient, 10))
            await until(lambda: receiver.waiting(recipient) == 1)
            session = Session(engine)
            session.begin()
            await asyncio.to_thread(notify_in_transaction, session, [recipient, other])
            await asyncio.sleep(0.5)
            assert not waiter.done()
            start = time.monotonic()
            await asyncio.to_thread(session.commit)
            assert await waiter is True
            assert time.monotonic() - start < 3
            session.close()

        run(scenario())
        # every listening process heard it, the sender's own included
        assert receiver.generation(other) == 1
        deadline = time.monotonic() + 5
        while sender.generation(other) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert not sender.listening and not receiver.listening
    assert not any(t.name == "msmt-inbox-listener" for t in threading.enumerate())


@pytest.mark.postgresql
def test_recipients_past_one_payloads_limit_are_all_notified_in_one_commit() -> None:
    with _two_processes() as (_sender, receiver, engine):
        many = [f"{_unique()}{i:04d}" for i in range(1200)]
        assert len(payloads(many)) > 1  # several NOTIFYs, one statement
        with Session(engine) as session, session.begin():
            notify_in_transaction(session, many)
        deadline = time.monotonic() + 10
        while not all(receiver.generation(r) == 1 for r in many):
            assert time.monotonic() < deadline, sum(receiver.generation(r) for r in many)
            time.sleep(0.02)


@pytest.mark.postgresql
def test_a_process_ignores_the_echo_of_its_own_notify_and_hears_the_others() -> None:
    """The integrating process publishes its deliveries itself, with the deliveries: its own
    NOTIFY's echo would wake its waiters a second time, for nothing they can use."""
    with _two_processes() as (sender, receiver, engine):
        mine, theirs = _unique(), _unique()
        with Session(engine) as session, session.begin():
            notify_in_transaction(session, [mine], origin=sender.origin)
        with Session(engine) as session, session.begin():
            notify_in_transaction(session, [theirs], origin=receiver.origin)
        deadline = time.monotonic() + 5
        while sender.generation(theirs) == 0 or receiver.generation(mine) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # what the listeners heard, in order: the echoes came first
        assert sender.generation(mine) == 0 and receiver.generation(theirs) == 0
        assert sender.generation(theirs) == 1 and receiver.generation(mine) == 1


@pytest.mark.postgresql
def test_a_notify_in_another_schema_of_the_same_database_wakes_nobody_here() -> None:
    """NOTIFY is database-wide: brokers of two schemas (a test run's parallel workers, a staging
    copy) must not wake each other's long-polls; each listens on its own schema's channel."""
    from tests.integration.conftest import postgresql_schema

    with postgresql_schema() as here, postgresql_schema() as there:
        listener = InboxNotifier()
        listener.start(here)
        engines = {url: create_engine(url) for url in (here, there)}
        recipient = _unique()
        try:
            assert listener.wait_listening(10)

            def notify(url: str) -> None:
                with Session(engines[url]) as session, session.begin():
                    notify_in_transaction(session, [recipient])

            notify(there)
            time.sleep(1.0)  # the listener polls its notifications every 0.5 s
            assert listener.generation(recipient) == 0
            notify(here)
            deadline = time.monotonic() + 5
            while listener.generation(recipient) == 0:
                assert time.monotonic() < deadline, "the same schema's notification never arrived"
                time.sleep(0.01)
        finally:
            listener.stop()
            for engine in engines.values():
                engine.dispose()


@pytest.mark.postgresql
def test_the_listener_reconnects_and_wakes_its_waiters_to_recheck() -> None:
    """Notifications sent while the listener is cut off are lost: on reconnecting it wakes
    every waiter (each re-checks the database), then hears new notifications again."""
    from tests.integration.conftest import postgresql_schema

    with postgresql_schema() as url:
        notifier = InboxNotifier(reconnect_s=0.1)
        notifier.start(url)
        engine = create_engine(url)
        recipient = _unique()
        try:
            assert notifier.wait_listening(10)
            first = notifier.backend_pid
            assert first is not None

            async def scenario() -> None:
                waiter = asyncio.create_task(notifier.wait(recipient, 20))
                await until(lambda: notifier.waiting(recipient) == 1)
                with engine.connect() as conn:  # the listener's connection is cut
                    assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
                assert await asyncio.wait_for(waiter, 10) is True

            run(scenario())
            assert notifier.wait_listening(10)
            assert notifier.backend_pid not in (None, first)  # a new connection

            async def heard_again() -> bool:
                waiter = asyncio.create_task(notifier.wait(recipient, 10))
                await until(lambda: notifier.waiting(recipient) == 1)

                def send() -> None:
                    with Session(engine) as session, session.begin():
                        notify_in_transaction(session, [recipient])

                await asyncio.to_thread(send)
                return await waiter

            assert run(heard_again()) is True
        finally:
            notifier.stop()
            engine.dispose()
