"""A PostgreSQL server of the test's own, to stop and start (the machine's shared one is never
stopped): initdb into a temporary folder, trust authentication, a free port, no fsync."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .servers import free_port


def _bin_dir() -> Path | None:
    configured = os.environ.get("MSMT_TEST_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    return Path(found[-1]) if found else None


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PgInstance:
    bin: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("start", "-w", "-t", "30", "-o", options, "-l", str(self.data.parent / "server.log"))

    def stop(self) -> None:
        """Stop at once, as a crash or a pulled cable would (no checkpoint, clients cut off)."""
        self._ctl("stop", "-w", "-m", "immediate")

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
            timeout=60,
        )


@contextmanager
def private_postgresql() -> Iterator[PgInstance]:
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found; set MSMT_TEST_PG_BIN"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="msmt-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    instance = PgInstance(bin_dir, root / "data", free_port())
    subprocess.run(
        _as_postgres([str(bin_dir / "initdb"), "-D", str(instance.data), "-U", "postgres", "--auth=trust"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    instance.start()
    try:
        yield instance
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(instance.data), "stop", "-m", "immediate"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
