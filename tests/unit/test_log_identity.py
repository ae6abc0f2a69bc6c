"""The log a members' root pins (`extra.log`): a malformed pin is an error, never "no log", and
the checks are plain code that `python -O` keeps (they were `assert` statements once)."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from msmt.core import logleaf
from msmt.core.errors import MalformedCheckpoint

EXTRA: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "log-v1" / "root-extra.json").read_text()
)


def _with(change: Any) -> dict[str, Any]:
    extra = copy.deepcopy(EXTRA)
    change(extra["log"])
    return extra


def _set(key: str, value: Any) -> Any:
    return lambda log: log.__setitem__(key, value)


MALFORMED = {
    "not-an-object": {"log": ["origin"]},
    "unknown-field": _with(_set("extra", 1)),
    "origin-not-text": _with(_set("origin", 7)),
    "no-vkeys": _with(_set("vkeys", [])),
    "vkeys-not-a-list": _with(_set("vkeys", "k")),
    "vkey-not-text": _with(lambda log: log["vkeys"].append(3)),
    "witnesses-not-a-list": _with(_set("witnesses", {"country": "USA"})),
    "witness-country-not-a-code": _with(lambda log: log["witnesses"][0].__setitem__("country", "usa")),
    "witness-without-vkey": _with(lambda log: log["witnesses"][0].pop("vkey")),
    "threshold-a-boolean": _with(_set("threshold", True)),
    "threshold-above-the-witnesses": _with(
        lambda log: log.__setitem__("threshold", len(log["witnesses"]) + 1)
    ),
    "threshold-half-or-less": _with(lambda log: log.__setitem__("threshold", len(log["witnesses"]) // 2)),
    "threshold-negative": _with(_set("threshold", -1)),
}


def test_the_vector_pin_is_well_formed() -> None:
    identity = logleaf.LogIdentity.from_root_extra(EXTRA)
    assert identity is not None and identity.threshold == EXTRA["log"]["threshold"]
    assert len(EXTRA["log"]["witnesses"]) >= 2  # what the threshold cases below need
    assert logleaf.LogIdentity.from_root_extra({}) is None  # no pin: no log


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_pin_is_refused(name: str) -> None:
    with pytest.raises(MalformedCheckpoint, match=r"extra\.log` is malformed"):
        logleaf.LogIdentity.from_root_extra(MALFORMED[name])


def test_refused_under_python_optimise() -> None:
    """`python -O` strips asserts: the pin's checks must not be asserts."""
    script = (
        "import json, sys\n"
        "from msmt.core import logleaf\n"
        "from msmt.core.errors import MalformedCheckpoint\n"
        "refused = 0\n"
        "for extra in json.loads(sys.stdin.read()):\n"
        "    try:\n"
        "        logleaf.LogIdentity.from_root_extra(extra)\n"
        "    except MalformedCheckpoint:\n"
        "        refused += 1\n"
        "print(refused)\n"
    )
    cases = [MALFORMED[n] for n in sorted(MALFORMED)]
    out = subprocess.run(
        [sys.executable, "-O", "-c", script],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout) == len(cases)


def test_the_trust_store_reads_the_pin_once_per_directory_state() -> None:
    from msmt.trust import TrustStore

    store = TrustStore.__new__(TrustStore)  # only what `log` reads: the verified state
    store._log = None
    state = type("State", (), {"extra": EXTRA})()
    store._state = state  # type: ignore[assignment]
    first = store.log
    assert first is not None and store.log is first  # the same state: read once
    store._state = type("State", (), {"extra": {}})()  # type: ignore[assignment]
    assert store.log is None  # a new state (a root that pins no log) is read afresh
    store._state = state  # type: ignore[assignment]
    assert store.log == first
    assert dataclasses.is_dataclass(first)
