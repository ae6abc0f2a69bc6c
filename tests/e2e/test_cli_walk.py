"""Every command of `msmt` and `msmt-broker`, given what a person gets wrong, answers with one
sentence and an exit code: never a traceback, never a file a failed or read-only command made.

The commands are found by walking the argparse parsers, so a new command is walked too. Each
runs as a real process (`python -m`), many at a time, in an empty working folder of its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.cli import build_parser as broker_parser
from msmt.cli import build_parser as agency_parser
from msmt.trust import TrustStore

from ..unit.governance_fixtures import keys_of, root

PASSPHRASE = "walk passphrase"
NO_SCHEME = "127.0.0.1:9"  # not "cannot reach": it is not a URL
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens on the discard port


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable command: (its words, its parser)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from leaves(sub, (*path, name))


# what a person gets wrong, by argument name: a missing file, a typo, a wrong type
BAD = {
    "country": "KRO",
    "recipient": "KRO",
    "originator": "KRO",
    "item_id": "01a2",
    "item": "01a2",
    "id": "01a2",
    "seq": "first",
    "key_id": "zz",
    "classification": "CONFIDENTAIL",
    "tlp": "AMBER",
    "releasable_to": "G8",
    "topic": "weapons",
    "ceiling": "SECRT",
    "admin": "alice",
    "name": "witness kor",  # a witness key name has no spaces
}


def argv_for(parser: argparse.ArgumentParser, missing: str) -> list[str]:
    """Positionals and required options filled with bad values (a missing file by default)."""
    positional: list[str] = []
    options: list[str] = []
    for action in parser._actions:
        if action.dest == "help" or (action.option_strings and not action.required):
            continue
        if action.choices is not None and action.dest not in BAD:
            value = str(next(iter(action.choices)))
        else:
            value = BAD.get(action.dest, missing)
        if action.option_strings:
            options += [action.option_strings[0], value]
        else:
            positional.append(value)
    return positional + options


@dataclass(frozen=True)
class Case:
    program: str  # msmt | msmt-broker
    scenario: str
    words: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.program}:{self.scenario}:{' '.join(self.words)}"


# the command is meant to work in that scenario: it reads nothing the scenario broke
SUCCEEDS = {
    ("msmt", "no-keys", ("keys", "generate")),  # KRO is a well-formed code: its keys are made
    ("msmt", "keys-no-scheme", ("keys", "show")),
    ("msmt", "keys-no-scheme", ("keys", "export")),
    ("msmt", "keys-no-scheme", ("trust", "show")),
    ("msmt", "keys-unreachable", ("keys", "show")),
    ("msmt", "keys-unreachable", ("keys", "export")),
    ("msmt", "keys-unreachable", ("trust", "show")),
    # the outbox is local: listing it needs no broker, and sending an empty one contacts none
    ("msmt", "keys-no-scheme", ("outbox",)),
    ("msmt", "keys-no-scheme", ("outbox", "list")),
    ("msmt", "keys-unreachable", ("outbox",)),
    ("msmt", "keys-unreachable", ("outbox", "list")),
    ("msmt", "keys-unreachable", ("outbox", "send")),
    ("msmt-broker", "missing-db", ("migrate",)),
    ("msmt-broker", "empty-db", ("migrate",)),
    ("msmt-broker", "missing-db", ("policy", "schema")),
    ("msmt-broker", "empty-db", ("policy", "schema")),
    ("msmt-broker", "postgres-down", ("policy", "schema")),
}

# every command in the scenarios that break what most commands need first; the database URL
# is checked before any command runs, so two commands stand for all in the last two
EVERY = {"msmt": ("no-keys", "keys-no-scheme", "keys-unreachable"), "msmt-broker": ("missing-db", "empty-db")}
SOME = {("bad-driver", ("list",)), ("bad-driver", ("init",)), ("postgres-down", ("list",))}
SOME |= {("postgres-down", ("init",)), ("postgres-down", ("policy", "schema"))}
CASES = [
    Case(program, scenario, words)
    for program, parser in (("msmt", agency_parser()), ("msmt-broker", broker_parser()))
    for words, _ in leaves(parser)
    for scenario in EVERY[program]
] + [Case("msmt-broker", scenario, words) for scenario, words in sorted(SOME)]
PARSERS = {
    "msmt": dict(leaves(agency_parser())),
    "msmt-broker": dict(leaves(broker_parser())),
}


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


Result = tuple[subprocess.CompletedProcess[str], set[str], bool, bool]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Run every case at once (threads wait on processes); per case: the process, what it
    left in its working folder, whether the missing file it was given now exists, and whether
    its database file does (each case has its own: a missing one, or an empty one)."""
    base = tmp_path_factory.mktemp("walk")
    keys = base / "keys"
    keys_of("KOR").save(keys, PASSPHRASE)
    TrustStore.pin(root(), keys / "trust")
    shared_before = _tree(base)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSMT_")}
    agency = {"MSMT_BROKER_URL": NO_SCHEME, "MSMT_PASSPHRASE": PASSPHRASE}

    def environment(case: Case, database: Path) -> dict[str, str]:
        return {
            # no MSMT_PASSPHRASE and no terminal for the broker: init must refuse before it writes
            "no-keys": {**env, **agency, "MSMT_KEYS": str(database.parent / "no-keys")},
            "keys-no-scheme": {**env, **agency, "MSMT_KEYS": str(keys)},
            "keys-unreachable": {**env, **agency, "MSMT_KEYS": str(keys), "MSMT_BROKER_URL": UNREACHABLE},
            "missing-db": {**env, "MSMT_DATABASE_URL": f"sqlite:///{database}"},
            "empty-db": {**env, "MSMT_DATABASE_URL": f"sqlite:///{database}"},
            "bad-driver": {**env, "MSMT_DATABASE_URL": "mysql://ops:s3cret@127.0.0.1/msmt"},
            "postgres-down": {
                **env,
                "MSMT_DATABASE_URL": "postgres://ops:s3cret@127.0.0.1:9/msmt?connect_timeout=2",
            },
        }[case.scenario]

    def run(case: Case) -> tuple[str, Result]:
        name = case.id.replace(" ", "_").replace(":", "_")
        work, data = base / "runs" / name, base / "data" / name
        work.mkdir(parents=True)
        data.mkdir(parents=True)
        database = data / "broker.db"
        if case.scenario == "empty-db":
            database.touch()
        missing = str(work / "missing-file")
        module = "msmt.cli" if case.program == "msmt" else "broker.cli"
        argv = [*case.words, *argv_for(PARSERS[case.program][case.words], missing)]
        process = subprocess.run(
            [sys.executable, "-m", module, *argv],
            env=environment(case, database),
            cwd=work,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        made_db = case.scenario == "missing-db" and database.exists()
        return case.id, (process, _tree(work), Path(missing).exists(), made_db)

    with ThreadPoolExecutor(max_workers=max(4, (os.cpu_count() or 2) * 2)) as pool:
        found = dict(pool.map(run, CASES))
    created = {p for p in _tree(base) - shared_before if not p.startswith(("runs", "data"))}
    assert not created, f"files made outside the commands' own folders: {created}"
    return found


def test_the_walk_covers_every_command() -> None:
    agency = {" ".join(w) for w, _ in leaves(agency_parser())}
    broker = {" ".join(w) for w, _ in leaves(broker_parser())}
    assert {"submit", "status", "pull", "keys generate", "governance root draft", "witness init"} <= agency
    assert {"init", "migrate", "list", "policy plan", "directory install"} <= broker


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_sentence_never_a_traceback(case: Case, results: dict[str, Result]) -> None:
    process, left, missing_made, database_made = results[case.id]
    output = process.stdout + process.stderr
    assert "Traceback" not in output, output
    assert "internal error" not in output, output  # every one of these is the user's doing
    assert "s3cret" not in output  # database passwords are never printed
    if (case.program, case.scenario, case.words) in SUCCEEDS:
        assert process.returncode == 0, output
        return
    assert process.returncode not in (0, 70), output
    assert process.stderr.strip(), "a failure says why"
    last = process.stderr.strip().splitlines()[-1]  # the sentence that ends it
    assert last.startswith((f"{case.program}: error:", f"{case.program} ", "error:")), process.stderr
    assert not left, f"a failed command left files: {left}"
    assert not missing_made, "a failed command created the file it was told to read"
    assert not database_made, "a command other than init and migrate created the database"


def test_migrate_creates_the_missing_database(results: dict[str, Result]) -> None:
    process, _, _, database_made = results[Case("msmt-broker", "missing-db", ("migrate",)).id]
    assert process.returncode == 0 and database_made


@pytest.mark.parametrize(
    ("scenario", "words", "expected"),
    [
        ("keys-no-scheme", ("submit",), "did you mean CONFIDENTIAL?"),
        ("keys-no-scheme", ("preflight",), "did you mean CONFIDENTIAL?"),
        ("keys-no-scheme", ("inbox",), "must start with https:// or http://"),
        ("keys-no-scheme", ("trust", "init"), "cannot read the root file"),
        ("no-keys", ("inbox",), "must start with https:// or http://"),
        ("keys-no-scheme", ("governance", "root", "draft"), "cannot read the members file"),
        ("keys-unreachable", ("status",), "'01a2' is not an item id or a prefix of one (at least 8 hex"),
        ("keys-unreachable", ("inbox",), "msmt: cannot reach the broker at http://127.0.0.1:9 ("),
        ("keys-unreachable", ("inbox",), "error: cannot reach the broker at http://127.0.0.1:9: "),
        ("keys-unreachable", ("keys", "revoke"), "cannot reach the broker at http://127.0.0.1:9"),
    ],
)
def test_agency_messages(
    scenario: str,
    words: tuple[str, ...],
    expected: str,
    results: dict[str, Result],
) -> None:
    process, _, _, _ = results[Case("msmt", scenario, words).id]
    assert expected in process.stderr


@pytest.mark.parametrize(
    ("scenario", "words", "expected", "code"),
    [
        ("missing-db", ("list",), "there is no database at", 4),
        ("empty-db", ("list",), "run `msmt-broker migrate`", 4),
        ("missing-db", ("init",), "set MSMT_PASSPHRASE or pass --passphrase-env", 2),
        ("missing-db", ("policy", "plan"), "cannot read the policy document", 1),
        ("bad-driver", ("list",), "write sqlite:///PATH or postgresql+psycopg://", 2),
        ("postgres-down", ("list",), "postgresql+psycopg://ops:***@127.0.0.1:9/msmt", 4),
    ],
)
def test_operator_messages(
    scenario: str,
    words: tuple[str, ...],
    expected: str,
    code: int,
    results: dict[str, Result],
) -> None:
    process, _, _, _ = results[Case("msmt-broker", scenario, words).id]
    assert expected in process.stderr and process.returncode == code, process.stderr
