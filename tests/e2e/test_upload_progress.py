"""Issue 11: `msmt submit` shows upload progress on a terminal (and nothing extra elsewhere)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from .servers import broker_process
from .test_cli import AUDIENCE, setup

__all__ = ["setup"]  # the module-scoped agencies and broker database of test_cli

ARGS = ["-c", "RESTRICTED", "--tlp", "AMBER", "-r", "USA", "--to", "USA"]


def test_submit_shows_upload_progress_on_a_terminal_only(setup: dict[str, object]) -> None:
    tmp, db, env = Path(str(setup["tmp"])), str(setup["db"]), dict(setup["env"])  # type: ignore[call-overload]
    report = tmp / "large.pdf"
    report.write_bytes(os.urandom(3 * 1024 * 1024))
    with broker_process(db, AUDIENCE, tmp / "broker-upload.log") as base:
        kor = {**env, "MSMT_BROKER_URL": base, "MSMT_KEYS": str(tmp / "KOR")}
        leader, follower = pty.openpty()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "msmt.cli", "--json", "submit", str(report), *ARGS],
                env=kor,
                stdout=subprocess.PIPE,
                stderr=follower,
                timeout=120,
            )
            os.close(follower)
            shown = b""
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed
                    break
                if not chunk:
                    break
                shown += chunk
        finally:
            os.close(leader)
        assert done.returncode == 0, shown.decode(errors="replace")
        assert json.loads(done.stdout)["recipients"] == ["USA"]
        text = shown.decode()
        assert "uploading [" in text and "KiB" in text
        last = text.rstrip().rsplit("\r", 1)[-1]
        assert "#" * 30 in last  # the bar ends full
        # not a terminal: no bar, no control characters
        piped = subprocess.run(
            [sys.executable, "-m", "msmt.cli", "--json", "submit", str(report), *ARGS],
            env=kor,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert piped.returncode == 0, piped.stderr
        assert "uploading" not in piped.stderr and "\r" not in piped.stderr
