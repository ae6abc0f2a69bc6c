"""deploy/compose.yaml, validated by Docker Compose itself (`docker-compose config`, the real
loader: Compose Specification schema, interpolation, references; no daemon needed), then the
properties the deployment relies on, read from Compose's normalised output."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from broker.settings import Settings

from .support import COMPOSE, COMPOSE_ENV_EXAMPLE, DEPLOY, ROOT, dockerfile, tool

BROKER_USER = "10001:10001"
BROKER_SERVICES = ("migrate", "broker")


def compose_config(
    tmp_path: Path, compose_file: Path = COMPOSE, *extra: str
) -> subprocess.CompletedProcess[str]:
    # A clean environment: no MSMT_* of the developer's shell, no user Docker configuration.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path)}
    return subprocess.run(
        [
            tool("docker-compose"),
            "--project-directory",
            str(DEPLOY),
            "--env-file",
            str(COMPOSE_ENV_EXAMPLE),
            "-f",
            str(compose_file),
            "config",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = compose_config(tmp_path_factory.mktemp("compose"), COMPOSE, "--format", "json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = config["services"]
    return result


def test_compose_validates_quietly(tmp_path: Path) -> None:
    result = compose_config(tmp_path, COMPOSE, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr.upper(), result.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("read_only: true", "readonly: true", "readonly"),
        ("secrets: [tls_cert, tls_key]", "secrets: [tls_cert, tls_nope]", "undefined secret"),
        ("condition: service_completed_successfully", "condition: service_done", "condition"),
        ("networks: [edge]", "networks: [edgy]", "undefined network"),
    ],
)
def test_compose_rejects_a_broken_file(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    """The validator is not a rubber stamp: one wrong key or reference fails it."""
    text = COMPOSE.read_text()
    assert old in text
    broken = tmp_path / "compose.yaml"  # relative paths still resolve from --project-directory deploy/
    broken.write_text(text.replace(old, new, 1))
    result = compose_config(tmp_path, broken, "--quiet")
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def test_the_audience_must_be_set(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path)}
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = subprocess.run(
        [tool("docker-compose"), "--env-file", str(empty), "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0 and "MSMT_AUDIENCE" in result.stderr, result.stderr


def test_the_stack(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "migrate", "broker", "proxy"}


def test_two_broker_replicas_behind_one_name(services: dict[str, Any]) -> None:
    broker = services["broker"]
    assert broker["deploy"]["replicas"] == 2
    assert "container_name" not in broker  # a fixed name would allow only one replica
    assert "ports" not in broker  # reached through the proxy only


def test_brokers_run_hardened(services: dict[str, Any]) -> None:
    runtime_user = dockerfile().final.all("USER")[-1].args
    assert runtime_user == BROKER_USER
    for name in BROKER_SERVICES:
        service = services[name]
        assert service["user"] == BROKER_USER, name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "privileged" not in service and "cap_add" not in service, name
        assert all(t.startswith("/tmp") for t in service.get("tmpfs", [])), name
        assert "volumes" not in service, name  # nothing of the host but the secret files
        build = service["build"]
        assert Path(build["context"]).resolve() == ROOT and build["dockerfile"] == "deploy/Dockerfile"


def test_proxy_and_postgres_are_hardened_too(services: dict[str, Any]) -> None:
    proxy = services["proxy"]
    assert proxy["read_only"] is True and proxy["cap_drop"] == ["ALL"]
    assert proxy["user"].split(":")[0] != "0"
    assert services["postgres"]["read_only"] is True


def _secret_targets(service: dict[str, Any]) -> dict[str, str]:
    return {s["source"]: s["target"] for s in service.get("secrets", [])}


def test_secrets_are_mounted_files_named_by_the_environment(config: dict[str, Any]) -> None:
    services = config["services"]
    broker = services["broker"]
    targets = _secret_targets(broker)
    env = broker["environment"]
    assert env["MSMT_DATABASE_URL_FILE"] == targets["database_url"] == "/run/secrets/database_url"
    assert env["MSMT_LOG_KEY_FILE"] == targets["log_key"] == "/run/secrets/log_key"
    migrate = services["migrate"]
    assert migrate["environment"]["MSMT_DATABASE_URL_FILE"] == _secret_targets(migrate)["database_url"]
    assert "log_key" not in _secret_targets(migrate)  # migrate has no use for it
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == _secret_targets(postgres)["postgres_password"]
    for name, secret in config["secrets"].items():
        # From files, never from an environment variable of the host.
        assert set(secret) <= {"name", "file"}, name
        assert Path(secret["file"]).parent == DEPLOY / "secrets", name


def test_no_secret_value_in_any_environment(services: dict[str, Any]) -> None:
    for name, service in services.items():
        env = service.get("environment") or {}
        assert "MSMT_DATABASE_URL" not in env and "POSTGRES_PASSWORD" not in env, name
        for key, value in env.items():
            text = str(value)
            assert "@" not in text and "postgresql" not in text.lower(), (name, key)
            if key.endswith(("_FILE", "KEY_FILE")):
                assert text.startswith("/run/secrets/"), (name, key)


def test_secret_files_are_never_committed() -> None:
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert "/secrets/" in ignored and "/.env" in ignored


def test_migrate_runs_once_before_the_brokers(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["healthcheck"]["disable"] is True
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["broker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["broker"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["proxy"]["depends_on"]["broker"]["condition"] == "service_healthy"


def test_brokers_are_healthy_when_ready(services: dict[str, Any]) -> None:
    broker = services["broker"]
    check = broker["healthcheck"]["test"]
    assert check[0] == "CMD"
    assert check[1:] == ["python", "/opt/msmt/healthcheck.py", "http://127.0.0.1:8443/readyz"]
    argv = broker["command"]
    assert argv[:1] == ["serve"] and argv[argv.index("--port") + 1] == "8443"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"


def test_long_polls_finish_before_a_broker_is_killed(services: dict[str, Any]) -> None:
    grace = services["broker"]["stop_grace_period"]  # normalised, e.g. "40s" or "1m0s"
    minutes, _, seconds = grace.rstrip("s").rpartition("m")
    total = int(minutes or 0) * 60 + int(seconds or 0)
    assert total > Settings.model_fields["inbox_max_wait_s"].default
    assert total > Settings.model_fields["shutdown_timeout_s"].default


def test_file_descriptors_hold_the_connection_cap(services: dict[str, Any]) -> None:
    from broker.cli import RESERVED_FDS

    nofile = services["broker"]["ulimits"]["nofile"]  # normalised: a number, or soft/hard
    soft = nofile["soft"] if isinstance(nofile, dict) else nofile
    assert int(soft) >= Settings.model_fields["max_connections"].default + RESERVED_FDS


def test_postgres_is_unreachable_from_outside(config: dict[str, Any]) -> None:
    services = config["services"]
    postgres = services["postgres"]
    assert "ports" not in postgres
    assert "network_mode" not in postgres
    for network in postgres["networks"]:
        assert config["networks"][network].get("internal") is True, network
    assert not set(postgres["networks"]) & set(services["proxy"]["networks"])


def test_only_the_proxy_publishes_and_only_tls(config: dict[str, Any]) -> None:
    services = config["services"]
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"proxy"}
    (port,) = services["proxy"]["ports"]
    assert port["target"] == 8443 and port["published"] == "443"
    assert {"tls_cert", "tls_key"} <= set(_secret_targets(services["proxy"]))
    (conf,) = services["proxy"]["configs"]
    assert conf["target"] == "/etc/nginx/nginx.conf"
    assert Path(config["configs"][conf["source"]]["file"]) == DEPLOY / "nginx-compose.conf"
    assert set(services["proxy"]["networks"]) & set(services["broker"]["networks"])


def test_metrics_listen_apart_and_are_not_published(services: dict[str, Any]) -> None:
    broker = services["broker"]
    assert broker["environment"]["MSMT_METRICS_PORT"] == "9464"
    # Reachable by a Prometheus on the compose network (the default is the loopback interface).
    assert broker["environment"]["MSMT_METRICS_HOST"] == "0.0.0.0"
    assert "9464" in broker["expose"]
    for service in services.values():
        for port in service.get("ports", []):
            assert port["target"] != 9464


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name in ("postgres", "proxy"):
        image = services[name]["image"]
        _, _, tag = image.partition(":")
        assert tag and tag != "latest" and any(c.isdigit() for c in tag), image
        assert tag.count(".") >= 1, f"{image}: pin at least major.minor"
