"""An error answer does not break the keep-alive connection it went out on (issue 10, finding 3).

Before: a request that failed with an unexpected exception got its 500, and then uvicorn closed
the connection without `Connection: close` (Starlette's last-resort handler raises the exception
again after answering): the client's next request on that connection got no answer at all, and
every such failure logged its traceback twice. Here one `http.client` connection to a real
`msmt-broker serve` process carries a 500 (a row the code cannot read), a 503 (a table gone),
and after each the next request, which must be answered on the same socket.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from msmt.auth import mint_token
from tests.integration.conftest import ADMIN_KEY, AUDIENCE, bootstrap

from .servers import broker_server


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[http.client.HTTPResponse, dict[str, object]]:
    token = mint_token(ADMIN_KEY, "admin:alice", AUDIENCE, method="GET", target=path)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    body = json.loads(response.read() or b"null")
    return response, body


def test_the_connection_outlives_a_500_and_a_503(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    log = tmp_path / "broker.log"
    engine = create_engine(url)
    with broker_server(url, AUDIENCE, log) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        response, agreements = _get(conn, "/v1/admin/agreements")
        assert response.status == 200 and isinstance(agreements, list) and agreements
        sock = conn.sock  # the one socket every request below must travel on

        # an internal error: a stored agreement whose topics are not JSON any more
        with engine.begin() as db:
            db.execute(text("UPDATE agreements SET topics = '[not json' WHERE recipient = 'JPN'"))
        for _ in range(3):
            response, problem = _get(conn, "/v1/admin/agreements")
            assert response.status == 500, problem
            assert response.getheader("Content-Type") == "application/problem+json"
            assert isinstance(problem, dict) and problem["type"] == "urn:msmt:problem:internal-error"
            assert "nothing was changed" not in str(problem["detail"])
            assert response.getheader("X-Request-ID")
            # either the connection stays usable, or the answer says it closes: here it stays
            assert (response.getheader("Connection") or "").lower() != "close"
            response, actions = _get(conn, "/v1/admin/actions")
            assert response.status == 200 and isinstance(actions, list)
            assert conn.sock is sock

        with engine.begin() as db:
            db.execute(
                text("UPDATE agreements SET topics = '[\"maritime\", \"arms\"]' WHERE recipient = 'JPN'")
            )
            db.execute(text("ALTER TABLE admin_actions RENAME TO admin_actions_away"))
        response, problem = _get(conn, "/v1/admin/actions")
        assert response.status == 503, problem
        assert isinstance(problem, dict) and problem["type"] == "urn:msmt:problem:database-unavailable"
        assert response.getheader("Retry-After")
        response, agreements = _get(conn, "/v1/admin/agreements")
        assert response.status == 200 and agreements
        assert conn.sock is sock

        with engine.begin() as db:
            db.execute(text("ALTER TABLE admin_actions_away RENAME TO admin_actions"))
        response, actions = _get(conn, "/v1/admin/actions")
        assert response.status == 200
        assert conn.sock is sock
        conn.close()
    engine.dispose()

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    errors = [x for x in lines if str(x.get("event", "")).startswith("unexpected error")]
    assert len(errors) == 3, errors  # one line per failed request ...
    assert sum("Traceback" in str(x.get("exception", "")) for x in errors) == 1  # ... one traceback
    assert log.read_text().count("Traceback") == 1
    assert not [x for x in lines if "Exception in ASGI application" in str(x.get("event", ""))]
    statuses = [
        x.get("status") for x in lines if x.get("event") == "request" and x.get("route") != "/v1/health"
    ]
    assert statuses.count(500) == 3 and statuses.count(503) == 1


def test_connections_past_the_cap_get_a_problem_and_a_close(tmp_path: Path) -> None:
    """The global connection cap (MSMT_MAX_CONNECTIONS, uvicorn's limit_concurrency): held
    connections up to it are served; one more gets `503 busy` as a problem, and is closed."""
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    with broker_server(url, AUDIENCE, tmp_path / "broker.log", max_connections="20") as (base, _):
        port = int(base.rsplit(":", 1)[1])
        held = []
        for _ in range(20):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/livez")
            assert conn.getresponse().read() and True
            held.append(conn)  # kept alive: each holds a connection (a file descriptor)
        extra = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        extra.request("GET", "/livez")
        response = extra.getresponse()
        problem = json.loads(response.read())
        assert response.status == 503
        assert response.getheader("Content-Type") == "application/problem+json"
        assert problem["type"] == "urn:msmt:problem:busy"
        assert response.getheader("Retry-After") and response.getheader("Connection") == "close"
        extra.close()
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # once the server has seen that close, a new connection is served again
            again = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            again.request("GET", "/livez")
            status = again.getresponse().status
            if status == 200 or time.monotonic() > deadline:
                break
            again.close()
            time.sleep(0.1)
        assert status == 200
        for conn in [*held, again]:
            conn.close()


def _cap_under(soft: int, hard: int) -> tuple[int, int]:
    script = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "from broker.cli import connection_cap\n"
        "cap = connection_cap(1000)\n"
        "print(cap, resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    cap, after = done.stdout.split()
    return int(cap), int(after)


def test_the_cap_stays_below_the_file_descriptor_limit() -> None:
    from broker.cli import RESERVED_FDS

    # a low soft limit under a high hard one is raised to fit the cap
    assert _cap_under(256, 8192) == (1000, 1000 + RESERVED_FDS)
    # a hard limit too low for the cap: the cap shrinks to half of what is left, so that a burst
    # of connections past it (each holding a descriptor until its 503 is written) fits too
    assert _cap_under(300, 300) == ((300 - RESERVED_FDS) // 2, 300)
    assert _cap_under(1024, 1024) == ((1024 - RESERVED_FDS) // 2, 1024)


def test_long_polls_leave_connections_for_the_rest() -> None:
    from broker.cli import waiting_cap

    assert waiting_cap(1000, 800) == 800  # the defaults: unchanged
    assert waiting_cap(448, 800) == 358  # under 1,024 descriptors
    assert waiting_cap(20, 1) == 1
