"""Human output and the error boundary of both command lines (msmt.ui, and their use)."""

from __future__ import annotations

import io
import json
import sqlite3
import tomllib
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from broker import cli as broker_cli
from broker import demo, policydoc
from msmt import cli, ui
from msmt.client import Client, check_broker_url
from msmt.core import errors
from msmt.errors import BrokerUnavailable, ClientError, PolicyRefused

from .governance_fixtures import keys_of

# --- suggestions ---------------------------------------------------------------------------


def test_did_you_mean_finds_near_misses_and_nothing_else() -> None:
    ladder = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"]
    assert ui.did_you_mean("CONFIDENTAIL", ladder) == " (did you mean CONFIDENTIAL?)"
    assert ui.did_you_mean("secret", ladder) == " (did you mean SECRET?)"
    assert ui.did_you_mean("G8", ["G7", "EU", "ALL"]) == " (did you mean G7?)"
    assert ui.did_you_mean("maritme", ["maritime", "arms"]) == " (did you mean maritime?)"
    assert ui.did_you_mean("weapons", ["maritime", "arms", "cyber"]) == ""
    with pytest.raises(ui.UserError) as info:
        ui.check_choice("classification", "CONFIDENTAIL", ladder)
    assert info.value.code == ui.EXIT_USAGE
    assert "did you mean CONFIDENTIAL?" in info.value.message and "known: UNCLASSIFIED" in info.value.message
    assert ui.check_choice("classification", "SECRET", ladder) == "SECRET"


def _directory() -> Any:
    member = SimpleNamespace
    return SimpleNamespace(
        ladder=("UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"),
        members={
            "KOR": member(groups=("G7",)),
            "USA": member(groups=("G7", "FIVE_EYES")),
            "NZL": member(groups=("FIVE_EYES",)),
        },
    )


@pytest.mark.parametrize(
    ("classification", "releasable", "topics", "expected"),
    [
        ("CONFIDENTAIL", ["ALL"], [], "did you mean CONFIDENTIAL?"),
        ("SECRET", ["G8"], [], "did you mean G7?"),
        ("SECRET", ["USB"], [], "did you mean USA?"),
        ("SECRET", ["FIVE_EYE"], [], "did you mean FIVE_EYES?"),
        ("SECRET", ["ALL"], ["weapons"], "topic 'weapons' is not known"),
        ("SECRET", ["ALL"], ["maritme"], "did you mean maritime?"),
    ],
)
def test_a_marking_typo_is_an_input_error_with_a_suggestion(
    classification: str, releasable: list[str], topics: list[str], expected: str
) -> None:
    with pytest.raises(ui.UserError) as info:
        cli.check_markings(classification, releasable, topics, _directory())
    assert expected in info.value.message
    assert info.value.code == cli.EXIT_USAGE


def test_known_markings_pass_and_without_a_directory_only_levels_and_topics_are_checked() -> None:
    cli.check_markings("SECRET", ["ALL", "KOR", "G7", "FIVE_EYES"], ["maritime", "arms"], _directory())
    cli.check_markings("SECRET", ["G8"], ["cyber"], None)  # no verified directory to judge G8 by
    with pytest.raises(ui.UserError):
        cli.check_markings("SECRT", ["ALL"], [], None)


# --- values and tables --------------------------------------------------------------------


def test_times_are_iso_8601_in_the_local_zone() -> None:
    text = ui.local_time(1_767_225_600_123)
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None and int(parsed.timestamp()) == 1_767_225_600
    assert ui.local_time(None) == "-"


def test_rows_for_people_have_times_fingerprints_and_no_base64() -> None:
    key_id = keys_of("KOR").signing.key_id
    row = ui.humanize({"at_ms": 0, "key_id": key_id, "public_key": "A" * 4000, "n": 3})
    assert set(row) == {"at", "key_id", "fingerprint", "n"}
    assert row["fingerprint"] == ui.fingerprint(key_id) and len(row["fingerprint"]) == 19
    assert datetime.fromisoformat(row["at"]).timestamp() == 0
    assert ui.human({"a": [1, 2], "b": None}) == "a=1, 2; b=-"
    assert ui.human(True) == "yes" and ui.human([]) == "-"


def test_tables_wrap_to_the_width_and_keep_every_word() -> None:
    reason = "SECRET is above NZL's accreditation (RESTRICTED) and the agreement KOR->NZL allows no topics"
    rows = [
        {"partner": "NZL", "decision": "denied", "reasons": reason},
        {"partner": "USA", "decision": "allowed", "reasons": ""},
    ]
    for width in (40, 60, 80, 200):
        text = ui.table(rows, width=width)
        assert all(len(line) <= width for line in text.splitlines()), text
        assert " ".join(text.split()).count("accreditation") == 1
        for word in reason.split():  # wrapped at spaces: no word is cut off
            assert word in text.split(), (width, word, text)


def test_columns_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "57")
    assert ui.terminal_width() == 57


def test_emit_gives_json_for_programs_and_text_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    value = [{"seq": 1, "received_ms": 1_767_225_600_000}]
    ui.emit(value, as_json=True)
    assert json.loads(capsys.readouterr().out) == value
    ui.emit(value, as_json=False)
    out = capsys.readouterr().out
    assert "RECEIVED" in out and "1767225600000" not in out
    assert ui.local_time(1_767_225_600_000) in out
    ui.emit({"item_id": "x", "originator": {"country": "KOR"}}, as_json=False)
    out = capsys.readouterr().out
    assert "{" not in out and "country  KOR" in out


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_only() -> None:
    quiet = io.StringIO()
    with ui.Progress(10, "pulling", stream=quiet) as progress:
        progress.advance(3)
    assert quiet.getvalue() == ""
    tty = _Tty()
    with ui.Progress(4, "pulling", stream=tty) as progress:
        for _ in range(4):
            progress.advance()
    assert "pulling [" in tty.getvalue() and "4/4" in tty.getvalue()


# --- the error boundary --------------------------------------------------------------------


def _fails(exc: BaseException) -> Any:
    def work() -> int:
        raise exc

    return work


def test_a_user_error_is_one_sentence_and_its_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert ui.boundary("msmt", _fails(ui.UserError("give --broker", 2))) == 2
    err = capsys.readouterr().err
    assert err == "msmt: error: give --broker\n"


def test_a_bug_is_exit_70_with_a_hint_and_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MSMT_DEBUG", raising=False)
    assert ui.boundary("msmt", _fails(RuntimeError("oops"))) == ui.EXIT_SOFTWARE
    err = capsys.readouterr().err
    assert "Traceback" not in err and "MSMT_DEBUG=1" in err and "RuntimeError: oops" in err
    monkeypatch.setenv("MSMT_DEBUG", "1")
    assert ui.boundary("msmt", _fails(RuntimeError("oops"))) == ui.EXIT_SOFTWARE
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (FileNotFoundError(2, "No such file or directory", "policy.toml"), 1, "policy.toml: no such file"),
        (PermissionError(13, "Permission denied", "/etc/shadow"), 1, "/etc/shadow: permission denied"),
        (tomllib.TOMLDecodeError("Invalid value (at line 1, column 5)"), 1, "not valid TOML"),
        (json.JSONDecodeError("Expecting value", "x", 0), 1, "not valid JSON"),
        (httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."), 2, "https://"),
        (errors.WrongPassphrase("wrong passphrase for k"), 1, "wrong passphrase"),
    ],
)
def test_common_error_families_are_one_sentence(
    exc: Exception, code: int, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ui.boundary("msmt", _fails(exc)) == code
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1 and "Traceback" not in err


def test_ctrl_c_is_130(capsys: pytest.CaptureFixture[str]) -> None:
    assert ui.boundary("msmt", _fails(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "msmt: interrupted\n"


def test_the_agency_families_keep_their_documented_codes() -> None:
    refused = PolicyRefused(
        422,
        {
            "type": "urn:msmt:problem:recipients-refused",
            "detail": "refused",
            "recipients": {"NZL": [{"rule": "above-accreditation", "reason": "SECRET is above NZL's"}]},
        },
    )
    assert cli.classify(refused) == ("refused by policy: refused\n  NZL: SECRET is above NZL's", 3)
    assert cli.classify(BrokerUnavailable("cannot reach"))[1] == 4  # type: ignore[index]
    assert cli.classify(errors.ForeignOwnKey("not ours"))[1] == 7  # type: ignore[index]
    assert cli.classify(errors.WrongPassphrase("wrong"))[1] == 6  # type: ignore[index]
    assert cli.classify(errors.BadSignature("bad"))[1] == 5  # type: ignore[index]
    assert cli.classify(ValueError("x")) is None  # a bug stays a bug: exit 70
    for code in ("70", "130", "7 ALARM"):
        assert code in cli.EPILOG
    for code in ("70", "130", "4 the database"):
        assert code in broker_cli.EPILOG


# --- the operator's command line -----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db/msmt", "postgresql+psycopg://u:p@db/msmt"),
        ("postgresql://u:p@db/msmt", "postgresql+psycopg://u:p@db/msmt"),
        ("postgresql+psycopg://u:p@db/msmt", "postgresql+psycopg://u:p@db/msmt"),
        ("sqlite:///var/msmt.db", "sqlite:///var/msmt.db"),
    ],
)
def test_database_urls_are_normalised(given: str, expected: str) -> None:
    assert broker_cli.normalize_database_url(given) == expected


@pytest.mark.parametrize("url", ["mysql://u:secret@h/db", "not a url", "postgresql+psycopg2://u:secret@h/d"])
def test_unsupported_database_urls_say_what_to_write_without_the_password(url: str) -> None:
    with pytest.raises(ui.UserError) as info:
        broker_cli.normalize_database_url(url)
    assert "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE" in info.value.message
    assert "secret" not in info.value.message and info.value.code == 2


def test_passwords_are_redacted() -> None:
    assert broker_cli.redact("postgresql+psycopg://ops:s3cret@db:5432/msmt") == (
        "postgresql+psycopg://ops:***@db:5432/msmt"
    )


def test_an_unmigrated_database_says_run_migrate() -> None:
    exc = OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: countries"))
    message, code = broker_cli.classify(exc, "postgresql+psycopg://ops:s3cret@db/msmt")  # type: ignore[misc]
    assert code == broker_cli.EXIT_DATABASE and "msmt-broker migrate" in message
    assert "s3cret" not in message


def test_init_takes_msmt_passphrase_and_never_waits_on_a_closed_stdin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.setenv("MSMT_PASSPHRASE", "from the environment")
    assert broker_cli._passphrase(None, "passphrase") == "from the environment"
    monkeypatch.delenv("MSMT_PASSPHRASE")
    with pytest.raises(ui.UserError) as info:
        broker_cli._passphrase(None, "passphrase")
    assert "MSMT_PASSPHRASE" in info.value.message and info.value.code == 2


def test_nested_policy_documents_are_refused_not_crashed() -> None:
    for text in (
        "ladder = " + "[" * 5000 + "]" * 5000,
        "x = " + "{a = " * 2000 + "1" + "}" * 2000,
        ".".join(["a"] * 3000) + " = 1",
        "ladder = [[[[[[[[[[1]]]]]]]]]]",
    ):
        with pytest.raises(policydoc.PolicyDocumentError) as info:
            policydoc.parse(text)
        assert "nest deeper" in info.value.errors[0]
    with pytest.raises(policydoc.PolicyDocumentError, match="characters"):
        policydoc.parse("#" * (policydoc.MAX_DOCUMENT_CHARS + 1))


def test_brackets_in_strings_and_comments_do_not_count_as_nesting() -> None:
    text = 'a = "[[[[[[[[[[[["\nb = \'{{{{{{{{{{{\'\n# [[[[[[[[[[[[[[\nc = """\n[[[[[[[[[[[[\n"""\nd = [[1], {e = [2]}]\n'
    assert policydoc._nesting(text) == 3
    assert tomllib.loads(text)["d"] == [[1], {"e": [2]}]


@pytest.mark.parametrize(("text", "port"), [("0", 0), ("18300", 18300)])
def test_the_demo_port(text: str, port: int) -> None:
    assert demo._port(text) == port


@pytest.mark.parametrize("text", ["-1", "65536", "http", ""])
def test_a_bad_demo_port_is_refused(text: str) -> None:
    with pytest.raises(Exception, match="not a port number"):
        demo._port(text)


# --- the agency's client ---------------------------------------------------------------------


@pytest.mark.parametrize("url", ["127.0.0.1:18300", "broker.example", "ftp://broker.example", "http://"])
def test_a_broker_url_needs_a_scheme_and_a_host(url: str) -> None:
    with pytest.raises(ClientError) as info:
        check_broker_url(url)
    assert (
        "https://" in info.value.detail
        or "no host" in info.value.detail
        or "not a valid" in info.value.detail
    )


def test_an_unreachable_broker_is_announced_once_and_named_in_the_error() -> None:
    said: list[str] = []
    attempts = {"n": 0}

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts["n"] += 1
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client = Client(
        "http://127.0.0.1:9",
        keys_of("KOR"),
        trust=None,  # type: ignore[arg-type]
        transport=httpx.MockTransport(refuse),
        backoff_s=0,
        retries=3,
        on_retry=said.append,
    )
    with client, pytest.raises(BrokerUnavailable) as info:
        client.status("01a2260c")
    assert attempts["n"] == 4
    assert len(said) == 1 and "retrying" in said[0] and "http://127.0.0.1:9" in said[0]
    assert "http://127.0.0.1:9" in info.value.detail and "Connection refused" in info.value.detail


def test_json_may_follow_the_command_or_precede_it() -> None:
    agency, broker = cli.build_parser(), broker_cli.build_parser()
    assert agency.parse_args(["status", "01a2260c", "--json"]).json is True
    assert agency.parse_args(["--json", "status", "01a2260c"]).json is True
    assert agency.parse_args(["status", "01a2260c"]).json is False
    assert agency.parse_args(["keys", "show", "--json"]).json is True
    assert broker.parse_args(["list", "keys", "--json"]).json is True
    assert broker.parse_args(["list", "keys"]).json is False


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    for parser, name, dist in (
        (cli.build_parser(), "msmt", "msmt-client"),
        (broker_cli.build_parser(), "msmt-broker", "msmt-broker"),
    ):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(["--version"])
        assert info.value.code == 0
        assert capsys.readouterr().out == f"{name} {version(dist)}\n"


def test_an_agreement_without_a_topic_list_reads_as_all_topics() -> None:
    row = {"originator": "*", "recipient": "*", "ceiling": "RESTRICTED", "topics": None}
    assert broker_cli._agreement_row(row)["topics"] == "all"
    assert broker_cli._agreement_row({**row, "topics": ["arms"]})["topics"] == ["arms"]


def test_keys_generate_wants_a_country_code(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSMT_PASSPHRASE", "walk")
    assert cli.main(["keys", "generate", "Korea", "--out", str(tmp_path / "k")]) == cli.EXIT_USAGE
    assert "not an ISO 3166-1 alpha-3 country code" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()
