"""The transparency log from the CLIs alone (issue 9): `msmt-broker init` writes the log key and
its public [log] table, and `msmt governance root draft` pins that log in the founders' root."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

from msmt.core import governance as gov
from msmt.core.logleaf import LogIdentity, LogSigner

ENV = {**os.environ, "MSMT_PASSPHRASE": "log setup passphrase"}


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=120
    )


def test_init_writes_the_log_key_and_root_draft_pins_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    init = run(
        "broker.cli", "--database-url", url, "init", "--admin", "alice", "--data-dir", "keys", cwd=tmp_path
    )
    assert init.returncode == 0, init.stderr
    key = tmp_path / "keys" / "log.key"
    assert key.stat().st_mode & 0o777 == 0o600
    seed = base64.b64decode(key.read_text().strip(), validate=True)
    assert len(seed) == 64
    assert "MSMT_LOG_KEY_FILE=keys/log.key" in init.stdout

    assert run("msmt.cli", "keys", "generate", "KOR", "--out", "kor", cwd=tmp_path).returncode == 0
    assert run("msmt.cli", "--keys", "kor", "keys", "export", "--out", "pub", cwd=tmp_path).returncode == 0
    members = tmp_path / "members.toml"
    members.write_text('[members]\nKOR = { name = "Korea", accreditation = "SECRET", keys = "pub" }\n\n')
    with members.open("a") as out:
        out.write((tmp_path / "keys" / "log-identity.toml").read_text())
    draft = run("msmt.cli", "governance", "root", "draft", "members.toml", "-o", "root.json", cwd=tmp_path)
    assert draft.returncode == 0, draft.stderr
    entry = gov.parse_entry((tmp_path / "root.json").read_bytes())
    pinned = LogIdentity.from_root_extra(entry.signed["extra"])
    assert pinned == LogSigner.from_seed("msmt-broker/log", seed).identity()

    members.write_text(members.read_text().replace('origin = "msmt-broker/log"', "origin = 7"))
    bad = run("msmt.cli", "governance", "root", "draft", "members.toml", "-o", "bad.json", cwd=tmp_path)
    assert bad.returncode == 2 and "[log]" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad.json").exists()
