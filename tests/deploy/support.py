"""Shared helpers for the deployment tests: paths, the validators from the dev dependencies, and
small parsers for a Dockerfile, a .dockerignore and a systemd unit."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_ENV_EXAMPLE = DEPLOY / "compose.env.example"
NGINX_COMPOSE = DEPLOY / "nginx-compose.conf"
NGINX_HOST = DEPLOY / "nginx.conf"
UNIT = DEPLOY / "msmt-broker.service"
BROKER_ENV_EXAMPLE = DEPLOY / "broker.env.example"
CONSTRAINTS = DEPLOY / "constraints.txt"
HEALTHCHECK = DEPLOY / "healthcheck.py"


def tool(name: str) -> str:
    """A validator installed by the dev dependencies: next to this interpreter (the venv), else
    on PATH. Missing is a failure, never a skip: `make test` installs it."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it comes with the dev dependencies (pip install -e '.[dev]')")
    return found


# --- Dockerfile -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, e.g. "RUN"
    args: str  # the rest, continuation lines joined with spaces
    line: int

    def flags(self) -> tuple[dict[str, list[str]], str]:
        """Leading `--name=value` flags (RUN --mount, COPY --from, ...) and the remainder."""
        flags: dict[str, list[str]] = {}
        rest = self.args
        while rest.startswith("--"):
            token, _, rest = rest.partition(" ")
            name, _, value = token[2:].partition("=")
            flags.setdefault(name, []).append(value)
            rest = rest.lstrip()
        return flags, rest

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of CMD / ENTRYPOINT / SHELL; fails on the shell form."""
        return json_argv(self.args)


def json_argv(text: str) -> list[str]:
    """An exec-form argument list (`["a", "b"]`)."""
    value = json.loads(text)
    assert isinstance(value, list), f"{text!r} is not in exec form"
    return [str(v) for v in value]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    directives: dict[str, str]
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


_DIRECTIVE = re.compile(r"#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$")


def parse_dockerfile(text: str) -> Dockerfile:
    """Parser directives, global ARGs and stages: enough of the Dockerfile grammar for the files
    of this repository (backslash continuations, comments; no heredocs)."""
    lines = text.splitlines()
    directives: dict[str, str] = {}
    for line in lines:  # directives come first, before any other comment, blank or instruction
        match = _DIRECTIVE.match(line)
        if not match:
            break
        directives[match[1].lower()] = match[2]
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("#") or (not parts and not stripped):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    assert not parts, "the Dockerfile ends inside a continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            _, rest = instruction.flags()
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {instruction.line}: only ARG may precede FROM"
            key, _, default = instruction.args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(directives, global_args, stages)


def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


# --- .dockerignore ----------------------------------------------------------------------------


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "$")


def dockerignore_sends(patterns: list[str], path: str) -> bool:
    """Whether the build context includes `path` (Docker's rule: the last matching pattern wins;
    a pattern matching a directory matches everything below it)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    sent = True
    for raw in patterns:
        negated = raw.startswith("!")
        regex = _ignore_regex(raw.lstrip("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            sent = negated
    return sent


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# --- systemd unit -------------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{raw!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{raw!r} is not key=value"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def split_command(value: str) -> list[str]:
    return shlex.split(value.lstrip("-@:+!"))
