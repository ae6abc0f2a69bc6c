"""The broker never holds report text: a database dump contains no trace of the payload."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from .conftest import World

MARKER = b"MARKER-7f3a9c-DPRK-SHIP-TO-SHIP-CHEONG-YONG"


def _dump(url: str) -> bytes:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(str(parsed.database))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))  # db, -wal, -shm
    pg_dump = shutil.which("pg_dump")
    assert pg_dump, "pg_dump is needed for this test"
    schema = str(parsed.query["options"]).split("=", 1)[1]
    return subprocess.run(
        [
            pg_dump,
            "-h",
            str(parsed.host),
            "-p",
            str(parsed.port),
            "-U",
            str(parsed.username),
            "-n",
            schema,
            str(parsed.database),
        ],
        check=True,
        capture_output=True,
    ).stdout


def test_database_dump_holds_no_payload_text(world: World) -> None:
    payload = b"# Sighting\n\n" + MARKER + b" transferred 2,000 t of refined petroleum.\n" * 50
    receipt = world.submit("KOR", world.seal("KOR", ["USA", "JPN"], payload)).json()
    dump = _dump(world.url)
    assert receipt["item_id"].encode() in dump  # the dump really holds the item
    assert MARKER not in dump
    assert MARKER.lower() not in dump.lower()
