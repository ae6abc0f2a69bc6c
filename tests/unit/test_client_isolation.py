"""The agency side never needs the server's dependencies."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

SERVER_ONLY = {
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "uvicorn",
    "psycopg",
    "pydantic",
    "pydantic_settings",
    "tomli_w",
    "broker",
}
ROOT = Path(__file__).resolve().parents[2]


def test_client_modules_import_no_server_dependency() -> None:
    code = (
        "import sys, msmt, msmt.core, msmt.client, msmt.cli, msmt.agency, msmt.directory;"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    assert not loaded & SERVER_ONLY, loaded & SERVER_ONLY


def test_client_distribution_declares_no_server_dependency() -> None:
    project = tomllib.loads((ROOT / "clients" / "pyproject.toml").read_text())["project"]
    names = {
        dep.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
        for dep in project["dependencies"]
    }
    assert names == {"cryptography", "httpx", "pyjwt"}
