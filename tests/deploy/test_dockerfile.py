"""deploy/Dockerfile: hadolint clean, and the structure the deployment relies on (multi-stage,
non-root, health check, no secret in the image, only the allow-listed context)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .support import (
    CONSTRAINTS,
    DOCKERFILE,
    ROOT,
    Dockerfile,
    dockerfile,
    dockerignore_patterns,
    dockerignore_sends,
    json_argv,
    parse_dockerfile,
    tool,
)

RUNTIME_UID = 10001


@pytest.fixture(scope="module")
def df() -> Dockerfile:
    return dockerfile()


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    config = tmp_path / "hadolint.yaml"  # ours, so no user or repository config can relax it
    config.write_text("failure-threshold: style\n")
    result = subprocess.run(
        [tool("hadolint"), "--config", str(config), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_is_the_real_linter(tmp_path: Path) -> None:
    """A root final stage and an unpinned base must be reported: the check above can fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nUSER root\nRUN pip install requests\n")
    result = subprocess.run([tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3002" in result.stdout, result.stdout


def test_parser_reads_continuations_and_directives() -> None:
    parsed = parse_dockerfile(
        "# syntax=docker/dockerfile:1\nARG A=1\nFROM x:1 AS b\nRUN a \\\n    # note\n    && b\nFROM y:2\nUSER 5\n"
    )
    assert parsed.directives == {"syntax": "docker/dockerfile:1"}
    assert parsed.global_args == {"A": "1"}
    assert [(s.base, s.name) for s in parsed.stages] == [("x:1", "b"), ("y:2", None)]
    assert parsed.stages[0].instructions[0].args == "a && b"
    assert parsed.final.all("USER")[0].args == "5"


def test_buildkit_syntax_is_declared(df: Dockerfile) -> None:
    # RUN --mount and COPY --chmod need the BuildKit frontend.
    assert df.directives.get("syntax", "").startswith("docker/dockerfile:1")


def test_multi_stage_on_one_pinned_python_311_slim_base(df: Dockerfile) -> None:
    assert len(df.stages) >= 2
    assert [s.name for s in df.stages] == ["builder", "runtime"]
    # The wheels are built for the interpreter that runs them: one base for both stages.
    assert {s.base for s in df.stages} == {"${PYTHON_IMAGE}"}
    base = df.global_args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base


def test_wheels_are_built_in_the_builder_with_the_constraints(df: Dockerfile) -> None:
    runs = " ".join(i.args for i in df.stage("builder").all("RUN"))
    assert "pip wheel" in runs and "--constraint deploy/constraints.txt" in runs
    # ./clients first so msmt-broker's dependency on msmt-client is met locally, never by an index.
    assert re.search(r"\./clients \.(\s|$)", runs), runs


def test_runtime_installs_only_the_builders_wheels_into_a_venv(df: Dockerfile) -> None:
    runtime = df.final
    installs = [i for i in runtime.all("RUN") if "install" in i.args]
    assert len(installs) == 1
    flags, command = installs[0].flags()
    mounts = flags.get("mount", [])
    assert any("from=builder" in m and "source=/wheels" in m for m in mounts), mounts
    assert "python -m venv --without-pip /opt/msmt/venv" in command
    assert "--no-index" in command and "--no-deps" in command and "/wheels/*.whl" in command
    assert "pip --python /opt/msmt/venv/bin/python check" in command
    # The Alembic scripts come in the wheel (tests/deploy/test_wheel_migrations.py), not by a
    # copy: the image only checks broker.store.db finds them inside the installed package.
    assert not any("migrations" in m for m in mounts), mounts
    assert "from broker.store.db import MIGRATIONS" in command and '"_migrations"' in command
    # No source tree is copied into the runtime stage: only the health probe.
    copies = [i.flags()[1].split() for i in runtime.all("COPY")]
    assert copies == [["deploy/healthcheck.py", "/opt/msmt/healthcheck.py"]]
    env = " ".join(i.args for i in runtime.all("ENV"))
    assert "PATH=/opt/msmt/venv/bin:$PATH" in env


def test_final_stage_runs_as_a_numeric_non_root_user(df: Dockerfile) -> None:
    runtime = df.final
    users = runtime.all("USER")
    assert users, "the final stage sets no USER: it would run as root"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) == RUNTIME_UID, users[-1].args
    assert gid.isdigit() and int(gid) != 0
    # ... and nothing runs after it as anyone else, and the user exists with that uid.
    last_user = runtime.instructions.index(users[-1])
    assert all(i.keyword != "USER" for i in runtime.instructions[last_user + 1 :])
    useradd = " ".join(i.args for i in runtime.all("RUN") if "useradd" in i.args)
    assert f"--uid {RUNTIME_UID}" in useradd and "--shell /usr/sbin/nologin" in useradd


def test_nothing_writable_is_needed_at_run_time(df: Dockerfile) -> None:
    env = " ".join(i.args for i in df.final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert df.final.all("VOLUME") == []  # state lives in PostgreSQL; secrets are mounted files


def test_health_check_probes_livez_with_the_copied_probe(df: Dockerfile) -> None:
    checks = df.final.all("HEALTHCHECK")
    assert len(checks) == 1
    flags, command = checks[0].flags()
    assert command.startswith("CMD [")
    argv = json_argv(command[len("CMD ") :])
    assert argv == ["python", "/opt/msmt/healthcheck.py", "http://127.0.0.1:8443/livez"]
    assert {"interval", "timeout", "start-period", "retries"} <= flags.keys()


def test_entrypoint_serves_on_the_port_the_probe_checks(df: Dockerfile) -> None:
    (entrypoint,) = df.final.all("ENTRYPOINT")
    (cmd,) = df.final.all("CMD")
    assert entrypoint.exec_form() == ["msmt-broker"]
    argv = cmd.exec_form()
    assert argv[0] == "serve"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "8443"
    exposed = " ".join(i.args for i in df.final.all("EXPOSE")).split()
    assert "8443" in exposed and "9464" in exposed


SECRETISH = re.compile(r"(KEY|PASSWORD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|DATABASE_URL)", re.IGNORECASE)


def test_no_secret_or_setting_is_baked_in(df: Dockerfile) -> None:
    for stage in df.stages:
        for instruction in stage.all("ENV") + stage.all("ARG") + stage.all("LABEL"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_.]*)=", instruction.args)
            if instruction.keyword == "ARG" and "=" not in instruction.args:
                names = [instruction.args.split()[0]]
            for name in names:
                assert not SECRETISH.search(name), f"line {instruction.line}: {name}"
                # Settings, secrets among them, are given at run time, never built in.
                assert not name.startswith("MSMT_"), f"line {instruction.line}: {name}"
    for name, default in df.global_args.items():
        assert not SECRETISH.search(name), name
        assert "://" not in default or default.startswith("python:"), default
    for stage in df.stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            flags, rest = copy.flags()
            if "from" in flags:
                continue
            for source in rest.split()[:-1]:
                assert not re.search(r"(^|/)(keys|var|secrets|\.env)(/|$)|\.key$|\.pem$", source), source
    assert df.final.all("ADD") == [] and df.stage("builder").all("ADD") == []


def test_build_context_is_an_allow_list_covering_every_copy(df: Dockerfile) -> None:
    patterns = dockerignore_patterns()
    assert patterns[0] == "*", "the .dockerignore must start by excluding everything"
    for stage in df.stages:
        for copy in stage.all("COPY"):
            flags, rest = copy.flags()
            if "from" in flags:
                continue
            for source in rest.split()[:-1]:
                assert dockerignore_sends(patterns, source.rstrip("/") or "."), source
    for private in (
        ".venv/bin/python",
        ".git/config",
        "deploy/secrets/database_url",
        "deploy/.env",
        "keys/README.md",
        "var/broker/broker-signing.key",
        "tests/unit/conftest.py",
        "msmt_broker.egg-info/PKG-INFO",
        "broker/__pycache__/app.cpython-311.pyc",
        "broker/some.key",
    ):
        assert not dockerignore_sends(patterns, private), private
    assert dockerignore_sends(patterns, "broker/store/db.py")
    assert dockerignore_sends(patterns, "migrations/versions/0001_initial_schema.py")


def test_dockerignore_matcher() -> None:
    patterns = ["*", "!broker/", "**/__pycache__/"]
    assert dockerignore_sends(patterns, "broker/app.py")
    assert not dockerignore_sends(patterns, "broker/x/__pycache__/a.pyc")
    assert not dockerignore_sends(patterns, "tests/x.py")


def _requirements(pyproject: Path) -> list[Requirement]:
    return [Requirement(r) for r in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]


def test_constraints_agree_with_both_pyprojects() -> None:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{line!r}: pin exact versions"
            pins[canonicalize_name(name)] = version
    assert pins, "no constraint"
    assert not {"msmt-broker", "msmt-client"} & pins.keys()
    for pyproject in (ROOT / "pyproject.toml", ROOT / "clients" / "pyproject.toml"):
        for requirement in _requirements(pyproject):
            name = canonicalize_name(requirement.name)
            if name in pins:
                assert requirement.specifier.contains(pins[name], prereleases=True), (
                    f"{pyproject.relative_to(ROOT)} wants {requirement}, deploy/constraints.txt pins {pins[name]}"
                )


def test_real_dockerfile_parses_without_leftovers() -> None:
    parsed = dockerfile()
    keywords = {i.keyword for s in parsed.stages for i in s.instructions}
    known = {"ARG", "ENV", "WORKDIR", "COPY", "RUN", "LABEL", "SHELL", "USER", "EXPOSE", "HEALTHCHECK"}
    assert keywords <= known | {"ENTRYPOINT", "CMD"}, keywords
