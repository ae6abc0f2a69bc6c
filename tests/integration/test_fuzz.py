"""No input produces a 5xx: random bodies, parameters and headers on every route.

Every answer must be a success or an RFC 9457 problem, and nothing may be written unless
the request was a valid one.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import World

ROUTES = [
    ("POST", "/v1/items"),
    ("GET", "/v1/items/{id}"),
    ("GET", "/v1/items/{id}/status"),
    ("GET", "/v1/inbox"),
    ("POST", "/v1/inbox/ack"),
    ("GET", "/v1/directory"),
    ("POST", "/v1/preflight"),
    ("POST", "/v1/preflight/explain"),
    ("POST", "/v1/admin/countries"),
    ("PATCH", "/v1/admin/countries/{code}"),
    ("POST", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys/{key}/revoke"),
    ("PUT", "/v1/admin/agreements/{code}/{code}"),
    ("GET", "/v1/admin/actions"),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
path_parts = st.one_of(
    st.text(max_size=40), st.sampled_from(["KOR", "*", "0" * 32, "01890a5d-ac96-7000-8000-000000000000"])
)
bodies = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()))
params = st.dictionaries(
    st.sampled_from(["after", "limit", "wait", "x"]),
    st.one_of(st.text(max_size=8), st.integers(-10, 10**12).map(str)),
    max_size=3,
)


def fill(template: str, parts: list[str]) -> str:
    out = template
    for part in parts:
        out = re.sub(r"\{[a-z]+\}", quote(part, safe="") or "x", out, count=1)
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(ROUTES),
    parts=st.lists(path_parts, min_size=2, max_size=2),
    body=bodies,
    query=params,
    who=st.sampled_from(["KOR", "admin:alice", None]),
    content_type=st.sampled_from(["application/json", "application/vnd.msmt.envelope", "text/plain", ""]),
)
def test_random_requests_never_cause_a_server_error(
    world: World,
    route: tuple[str, str],
    parts: list[str],
    body: bytes,
    query: dict[str, str],
    who: str | None,
    content_type: str,
) -> None:
    method, template = route
    headers: dict[str, Any] = {"Content-Type": content_type} if content_type else {}
    if who:
        headers.update(world.auth(who))
    before = (world.count("items"), world.count("deliveries"), world.count("countries"), world.count("keys"))
    response = world.client.request(
        method, fill(template, parts), params=query, content=body, headers=headers
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["type"].startswith("urn:msmt:problem:") and problem["status"] == response.status_code
        after = (
            world.count("items"),
            world.count("deliveries"),
            world.count("countries"),
            world.count("keys"),
        )
        assert after == before
