"""Authentication on the event loop (api/deps.py `_authenticate_on_loop`).

On SQLite a member's token bound to its request is checked without a worker thread, against
the registry as of the version read on every request (RegistryCache.quick); whatever needs
more (PostgreSQL, an unbound or an admin's token, a registry that moved) goes to a worker
thread as before. The answers must not change: a key revoked through another broker process
is refused on the very next request, and a bound token is still good once only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.api import deps
from broker.app import create_app
from broker.services import registry as registry_module
from broker.settings import Settings

from .conftest import AUDIENCE, World, log_key_file


def _hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The functions api/deps.py sends to a worker thread, from now on."""
    calls: list[str] = []
    real = deps.run_in_threadpool

    async def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(deps, "run_in_threadpool", counting)
    return calls


def _bound(world: World, who: str, path: str = "/v1/inbox") -> dict[str, str]:
    return {"Authorization": f"Bearer {world.token(who, method='GET', target=path)}"}


def test_a_bound_member_token_is_checked_on_the_event_loop_on_sqlite_only(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = _hops(monkeypatch)
    # the first request of the process reads the registry and the quotas on a worker thread
    assert world.client.get("/v1/inbox", headers=_bound(world, "USA")).status_code == 200
    hops.clear()
    assert world.client.get("/v1/inbox", headers=_bound(world, "USA")).status_code == 200
    assert hops.count("_authenticate") == (0 if world.url.startswith("sqlite") else 1), hops
    # an unbound token is recorded in the database to be refused again: a worker thread, always
    hops.clear()
    assert world.client.get("/v1/inbox", headers=world.auth("USA")).status_code == 200
    assert hops.count("_authenticate") == 1, hops
    # and a bound one is good once, whichever way it was checked
    headers = _bound(world, "JPN")
    assert world.client.get("/v1/inbox", headers=headers).status_code == 200
    again = world.client.get("/v1/inbox", headers=headers)
    assert again.status_code == 401 and again.json()["type"].endswith(":replayed-token"), again.text


def test_a_key_revoked_through_another_broker_process_is_refused_on_the_next_request(
    world: World, tmp_path: Path
) -> None:
    """The registry this process holds is used on the loop only while the database's version
    is still its version: a change committed by another process (here a second app on the
    same database) applies from the next request."""
    assert world.client.get("/v1/inbox", headers=_bound(world, "USA")).status_code == 200
    assert world.client.get("/v1/inbox", headers=_bound(world, "USA")).status_code == 200
    other = create_app(
        Settings(database_url=world.url, audience=AUDIENCE, log_key_file=log_key_file(tmp_path)),
        clock=world.clock,
    )
    ours = world.client
    try:
        with TestClient(other) as world.client:
            world.revoke_own("USA", world.members["USA"].api.key_id)
    finally:
        world.client = ours
        other.state.engine.dispose()
    r = world.client.get("/v1/inbox", headers=_bound(world, "USA"))
    assert r.status_code == 401 and r.json()["type"].endswith(":unknown-key"), r.text
    assert world.client.get("/v1/inbox", headers=_bound(world, "JPN")).status_code == 200


def test_a_bound_token_checked_on_a_worker_thread_is_refused_again_on_the_loop(world: World) -> None:
    """Both paths share the process's replay cache: the process's first request goes the long
    way (nothing read yet), and the same token a second time is refused, on SQLite on the loop."""
    headers = _bound(world, "KOR")
    assert world.client.get("/v1/inbox", headers=headers).status_code == 200
    again = world.client.get("/v1/inbox", headers=headers)
    assert again.status_code == 401 and again.json()["type"].endswith(":replayed-token"), again.text


def test_no_connection_of_its_own_while_the_database_cannot_be_written(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opened while the file system is read-only, a connection would leave the process a
    read-only -shm for good (store/db.py `writable`): the loop's connection is not opened then,
    and every request goes the long way."""
    monkeypatch.setattr(registry_module, "writable", lambda _path: False)
    hops = _hops(monkeypatch)
    for _ in range(2):
        assert world.client.get("/v1/inbox", headers=_bound(world, "USA")).status_code == 200
    assert hops.count("_authenticate") == 2, hops
    assert world.client.app.state.broker.registry._quick is None  # type: ignore[attr-defined]
