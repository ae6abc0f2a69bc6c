"""Typed dependencies shared by the routers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from ..problems import Problem, forbidden, unauthorized
from ..services.auth import Caller, authenticate
from ..services.registry import RegistryCache
from ..settings import Settings


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class BrokerState:
    settings: Settings
    sessions: sessionmaker[Session]
    clock: Callable[[], int] = field(default=wall_clock_ms)
    registry: RegistryCache = field(default_factory=RegistryCache)


def get_state(request: Request) -> BrokerState:
    state: BrokerState = request.app.state.broker
    return state


StateDep = Annotated[BrokerState, Depends(get_state)]


async def current_caller(request: Request, state: StateDep) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("missing-token", "send 'Authorization: Bearer <JWT>' signed with your API key")
    return await run_in_threadpool(
        authenticate, state.sessions, state.registry, state.settings, token.strip(), state.clock()
    )


CallerDep = Annotated[Caller, Depends(current_caller)]


async def country_caller(caller: CallerDep) -> Caller:
    if caller.is_admin:
        raise forbidden("country-only", "this endpoint is for member countries, not admins")
    return caller


async def admin_caller(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise forbidden("admin-only", "this endpoint requires an admin key")
    return caller


CountryDep = Annotated[Caller, Depends(country_caller)]
AdminDep = Annotated[Caller, Depends(admin_caller)]


class BodyTooLarge(Problem):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body-too-large", "Request body too large", f"the body exceeds {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """Read the raw body, refusing more than `limit` bytes before buffering them."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
