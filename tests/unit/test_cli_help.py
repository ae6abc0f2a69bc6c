"""Every command of `msmt` and `msmt-broker` has complete help."""

from __future__ import annotations

import argparse

import pytest

from broker.cli import build_parser as broker_parser
from msmt.cli import build_parser as agency_parser


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{' '.join((*path, name))} has no one-line help"
                found += _walk(sub, (*path, name))
    return found


@pytest.mark.parametrize("make", [agency_parser, broker_parser], ids=["msmt", "msmt-broker"])
def test_every_command_and_option_is_documented(make: object, capsys: pytest.CaptureFixture[str]) -> None:
    commands = _walk(make())  # type: ignore[operator]
    assert len(commands) > 8
    for path, parser in commands:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            assert action.help, f"{' '.join(path)} {action.option_strings or action.dest} has no help"
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith("usage:")
