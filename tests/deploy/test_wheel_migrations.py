"""The msmt-broker wheel carries its Alembic migrations (issue 11): a non-editable install
(`pip install .`, a wheel in an image) can run `msmt-broker migrate` with no repository around.

The top-level migrations/ stays the source; pyproject.toml maps it into the package as
broker/_migrations. Here the wheel is built from a copy of the sources (the repository gets no
build/ or egg-info), its contents are checked, and it is installed (--no-deps) into a fresh venv
outside the repository. That venv sees the dependencies already installed for the tests through
a .pth line naming their site-packages (`--system-site-packages` would only show the base
interpreter's), which adds the folder but runs none of its .pth files: the editable install of
the repository there stays out, so `broker` is the wheel's. `msmt-broker migrate` then runs from a
folder outside the repository against a new SQLite file, and the schema must be at the head that
the repository's migrations/ names.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from .support import ROOT

MIGRATIONS = ROOT / "migrations"


def _head() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("broker", "migrations"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)],
        check=True,
        timeout=300,
        cwd=source,
    )
    (built,) = out.glob("msmt_broker-*.whl")
    return built


def test_the_wheel_holds_every_package_and_every_migration(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "broker/_migrations/env.py" in names
    assert "broker/_migrations/script.py.mako" in names
    versions = sorted(p.name for p in (MIGRATIONS / "versions").glob("*.py"))
    assert versions, "no migration found in the repository"
    for version in versions:
        assert f"broker/_migrations/versions/{version}" in names, version
    # every module of broker/ (a package missing from pyproject.toml's list would be left out)
    for module in sorted((ROOT / "broker").rglob("*.py")):
        relative = module.relative_to(ROOT).as_posix()
        assert relative in names, relative
    assert not any(name.startswith("migrations/") for name in names)  # only inside the package


def test_an_installed_wheel_migrates_a_new_database_outside_the_repository(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # the dependencies (and msmt-client, the clients/ source) of the test environment, after the venv's own
    (site / "test-dependencies.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{ROOT / 'clients'}\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MSMT_"))}
    database = elsewhere / "fresh.db"
    env["MSMT_DATABASE_URL"] = f"sqlite:///{database}"

    where = subprocess.run(
        [str(python), "-c", "import broker.store.db as d; print(d.__file__); print(d.MIGRATIONS)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=elsewhere,
        env=env,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(venv), where  # the wheel's broker, not the repository's
    assert Path(where[1]) == Path(where[0]).parents[1] / "_migrations", where

    done = subprocess.run(
        [str(venv / "bin" / "msmt-broker"), "migrate"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "schema at head" in done.stdout
    with sqlite3.connect(database) as db:
        (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert version == _head()
    assert {"items", "deliveries", "log_entries", "admins"} <= tables
