"""The TLS proxies: deploy/nginx-compose.conf (the compose stack's whole nginx.conf) and
deploy/nginx.conf (a server block for a host's nginx), parsed by crossplane (NGINX's own
configuration parser, which checks each known directive's context and argument count)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import crossplane
import pytest

from broker.settings import Settings

from .support import NGINX_COMPOSE, NGINX_HOST

DEFAULTS = Settings.model_fields


def parse(path: Path) -> list[dict[str, Any]]:
    """The directives of the configuration's main file; fails on any error crossplane finds."""
    result = crossplane.parse(str(path), catch_errors=True, comments=False)
    assert result["status"] == "ok", result["errors"]
    directives: list[dict[str, Any]] = result["config"][0]["parsed"]
    return directives


def parse_host_fragment(tmp_path: Path) -> list[dict[str, Any]]:
    """deploy/nginx.conf is included inside `http {}`: check it there."""
    main = tmp_path / "nginx.conf"
    main.write_text(f"events {{}}\nhttp {{\n    include {NGINX_HOST};\n}}\n")
    result = crossplane.parse(str(main), catch_errors=True, comments=False)
    assert result["status"] == "ok", result["errors"]
    included: list[dict[str, Any]] = result["config"][1]["parsed"]
    return included


def find(directives: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Every directive called `name`, at any depth."""
    found = []
    for directive in directives:
        if directive["directive"] == name:
            found.append(directive)
        found.extend(find(directive.get("block", []), name))
    return found


def virtual_server(directives: list[dict[str, Any]]) -> dict[str, Any]:
    """The one `server {}` block (not an upstream's `server` line)."""
    (server,) = [d for d in find(directives, "server") if "block" in d]
    return server


def seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match, value
    return int(match[1]) * {"ms": 0, None: 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def size_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG])?", value)
    assert match, value
    return int(match[1]) * {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3}[(match[2] or "").lower() or None]


def test_crossplane_catches_a_misplaced_directive(tmp_path: Path) -> None:
    bad = tmp_path / "nginx.conf"
    bad.write_text("events {}\nhttp { server { listen 8443 ssl; location / { upstream u {} } } }\n")
    assert crossplane.parse(str(bad), catch_errors=True)["status"] == "failed"


@pytest.fixture(params=["compose", "host"])
def conf(request: pytest.FixtureRequest, tmp_path: Path) -> list[dict[str, Any]]:
    return parse(NGINX_COMPOSE) if request.param == "compose" else parse_host_fragment(tmp_path)


def test_terminates_tls_13_only(conf: list[dict[str, Any]]) -> None:
    server = virtual_server(conf)
    listens = [d["args"] for d in find(server["block"], "listen")]
    assert listens and all("ssl" in args for args in listens), listens
    assert find(server["block"], "ssl_certificate") and find(server["block"], "ssl_certificate_key")
    (protocols,) = find(server["block"], "ssl_protocols")
    assert protocols["args"] == ["TLSv1.3"]


def test_long_polls_and_envelopes_fit(conf: list[dict[str, Any]]) -> None:
    (timeout,) = find(conf, "proxy_read_timeout")
    assert seconds(timeout["args"][0]) > DEFAULTS["inbox_max_wait_s"].default
    (buffering,) = find(conf, "proxy_request_buffering")
    assert buffering["args"] == ["off"]


def test_body_limits_match_the_brokers(conf: list[dict[str, Any]]) -> None:
    """The proxy refuses what the broker would refuse, and nothing the broker accepts: the
    largest body is the broker's envelope limit, and a body that stops arriving is dropped after
    the broker's body timeout (both count the time between two reads)."""
    (body,) = find(conf, "client_max_body_size")
    assert size_bytes(body["args"][0]) == DEFAULTS["max_envelope_bytes"].default
    assert DEFAULTS["max_json_bytes"].default <= DEFAULTS["max_envelope_bytes"].default
    (body_timeout,) = find(conf, "client_body_timeout")
    assert seconds(body_timeout["args"][0]) == DEFAULTS["body_timeout_s"].default


def test_everything_goes_to_the_broker_upstream(conf: list[dict[str, Any]]) -> None:
    (upstream,) = find(conf, "upstream")
    (location,) = find(conf, "location")
    assert location["args"] == ["/"]
    (proxy_pass,) = find(location["block"], "proxy_pass")
    assert proxy_pass["args"] == [f"http://{upstream['args'][0]}"]
    for server in find(upstream["block"], "server"):
        assert not server["args"][0].endswith(":9464"), "metrics are never proxied"


def test_compose_proxy_matches_the_stack() -> None:
    conf = parse(NGINX_COMPOSE)
    server = virtual_server(conf)
    (listen,) = find(server["block"], "listen")
    assert listen["args"][0] == "8443"  # the port compose publishes; unprivileged for uid 101
    (cert,) = find(conf, "ssl_certificate")
    (key,) = find(conf, "ssl_certificate_key")
    assert cert["args"] == ["/run/secrets/tls_cert"] and key["args"] == ["/run/secrets/tls_key"]
    (upstream,) = find(conf, "upstream")
    servers = [d["args"] for d in find(upstream["block"], "server")]
    assert servers == [["broker:8443", "resolve"]]  # every replica, re-resolved
    assert find(conf, "resolver")[0]["args"][0] == "127.0.0.11"
    assert find(upstream["block"], "zone")
    # Read-only root filesystem: every path nginx writes is under /tmp.
    (pid,) = find(conf, "pid")
    assert pid["args"][0].startswith("/tmp/")
    for name in ("client_body_temp_path", "proxy_temp_path"):
        (directive,) = find(conf, name)
        assert directive["args"][0].startswith("/tmp/"), name
    assert find(conf, "server_tokens")[0]["args"] == ["off"]
