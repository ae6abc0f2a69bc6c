"""A server process's garbage collector: the start-up heap frozen, the young generation
collected after `gc_young_threshold` allocations (broker/app.py's lifespan; why: bench/README.md,
"The garbage collector"). Each case runs in a process of its own: freezing the heap and moving
the thresholds would otherwise outlive the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from broker.settings import Settings

PROGRAM = """
import gc, json, sys
from fastapi.testclient import TestClient
from broker.app import create_app
from broker.settings import Settings
from broker.store.db import migrate
url, extra = sys.argv[1], json.loads(sys.argv[2])
migrate(url)
before = gc.get_threshold()
with TestClient(create_app(Settings(database_url=url, **extra))) as client:
    assert client.get("/v1/health").status_code == 200
    print(json.dumps({"before": before, "during": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def _gc_of_a_server(tmp_path: Path, **settings: object) -> dict[str, list[int] | int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSMT_")}
    url = f"sqlite:///{tmp_path / 'gc.db'}"
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, url, json.dumps(settings)],
        env=env,
        capture_output=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    answer: dict[str, list[int] | int] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return answer


def test_a_server_collects_its_young_generation_less_often(tmp_path: Path) -> None:
    seen = _gc_of_a_server(tmp_path, gc_freeze=True)
    assert seen["before"] == [700, 10, 10]  # CPython's default, as the process started
    assert seen["during"] == [50_000, 10, 10]  # the young generation only
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 0


def test_the_threshold_is_a_setting(tmp_path: Path) -> None:
    assert _gc_of_a_server(tmp_path, gc_freeze=True, gc_young_threshold=12_345)["during"] == [12_345, 10, 10]


def test_an_app_that_is_not_a_server_leaves_the_collector_alone(tmp_path: Path) -> None:
    """Tests make and drop apps in one process: nothing frozen, no threshold moved."""
    seen = _gc_of_a_server(tmp_path, gc_young_threshold=12_345)
    assert seen["during"] == [700, 10, 10]
    assert seen["frozen"] == 0


@pytest.mark.parametrize("threshold", [0, 1, 699])
def test_a_threshold_below_cpythons_own_is_refused(threshold: int) -> None:
    with pytest.raises(ValidationError):
        Settings(gc_young_threshold=threshold)
