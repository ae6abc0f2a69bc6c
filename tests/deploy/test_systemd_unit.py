"""deploy/msmt-broker.service: the database URL (and its password) reaches the broker as a
systemd credential, never through the command line or the environment; and the unit is
hardened."""

from __future__ import annotations

from .support import BROKER_ENV_EXAMPLE, UNIT, parse_unit, split_command


def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def test_parser_keeps_repeated_keys() -> None:
    parsed = parse_unit("[Service]\n# c\nA=1\nA=2\n[Install]\nB=x=y\n")
    assert parsed == {"Service": {"A": ["1", "2"]}, "Install": {"B": ["x=y"]}}


def test_secrets_are_credentials_named_by_path() -> None:
    svc = service()
    credentials = dict(value.split(":", 1) for value in svc["LoadCredential"])
    assert credentials == {
        "database_url": "/etc/msmt/credentials/database_url",
        "log_key": "/etc/msmt/credentials/log_key",
    }
    env = dict(value.split("=", 1) for value in svc["Environment"])
    assert env["MSMT_DATABASE_URL_FILE"] == "%d/database_url"
    assert env["MSMT_LOG_KEY_FILE"] == "%d/log_key"
    assert "MSMT_DATABASE_URL" not in env


def test_no_url_on_a_command_line() -> None:
    svc = service()
    commands = svc["ExecStartPre"] + svc["ExecStart"]
    assert any(split_command(c)[1:2] == ["migrate"] for c in svc["ExecStartPre"])
    for command in commands:
        argv = split_command(command)
        assert "--database-url" not in argv, command
        assert not any("://" in arg or "@" in arg for arg in argv), command


def test_environment_file_example_holds_no_secret() -> None:
    for line in BROKER_ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        assert key not in {"MSMT_DATABASE_URL", "MSMT_LOG_KEY", "MSMT_PASSPHRASE"}, key
        assert "://" not in value or "@" not in value, line


HARDENING = {
    "NoNewPrivileges": "true",
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "PrivateDevices": "true",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectKernelTunables": "true",
    "ProtectKernelModules": "true",
    "ProtectKernelLogs": "true",
    "ProtectControlGroups": "true",
    "ProtectProc": "invisible",
    "RestrictNamespaces": "true",
    "RestrictSUIDSGID": "true",
    "LockPersonality": "true",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}


def test_hardened() -> None:
    svc = service()
    for key, value in HARDENING.items():
        assert svc.get(key, [None])[-1] == value, key
    assert svc["User"] == ["msmt"] and svc["Group"] == ["msmt"]
    assert "@system-service" in svc["SystemCallFilter"]
    assert set(svc["RestrictAddressFamilies"][-1].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # Long-polls last up to 30 s.
    assert svc["TimeoutStopSec"][-1].rstrip("s").isdigit()
    assert int(svc["TimeoutStopSec"][-1].rstrip("s")) > 30


def test_serves_on_loopback_behind_the_proxy() -> None:
    (start,) = service()["ExecStart"]
    argv = split_command(start)
    assert argv[1] == "serve"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_file_descriptors_hold_the_connection_cap_and_stop_waits_for_shutdown() -> None:
    """Each broker process may hold MSMT_MAX_CONNECTIONS connections plus what it keeps for
    itself (broker.cli.RESERVED_FDS) under LimitNOFILE; its long-polls stay below that cap; and
    systemd waits longer than the broker's own graceful stop before it kills."""
    from broker.cli import RESERVED_FDS
    from broker.settings import Settings

    defaults = Settings.model_fields
    svc = service()
    (nofile,) = svc["LimitNOFILE"]
    soft = int(nofile.split(":")[0])
    max_connections = defaults["max_connections"].default
    assert soft >= max_connections + RESERVED_FDS, nofile
    assert defaults["inbox_max_waiting"].default < max_connections
    (stop,) = svc["TimeoutStopSec"]
    assert stop.endswith("s") and int(stop[:-1]) > defaults["shutdown_timeout_s"].default
