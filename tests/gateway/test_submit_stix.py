"""`msmt submit` checks a STIX bundle before sealing: valid STIX 2.1, no object marked stricter
than the envelope, no TLP:RED to ALL; the error names the object; nothing is sent (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from msmt.client import Client
from msmt.trust import TrustStore
from tests.e2e.servers import broker_server
from tests.integration.conftest import _KEYS, AUDIENCE, bootstrap, root_of

from .stix_samples import bundle, indicator

FAST_KDF = {"memory_kib": 19456, "iterations": 2, "lanes": 1}
NO_STIX2 = "import sys; sys.modules['stix2'] = None; from msmt.cli import main; sys.exit(main(sys.argv[1:]))"


def items_at(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM items")).scalar_one())
    finally:
        engine.dispose()


def test_msmt_submit_refuses_a_red_bundle_as_clear_or_to_all_and_sends_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    root = root_of(url)
    _KEYS["KOR"].save(tmp_path / "KOR", "kor passphrase", kdf=FAST_KDF)
    TrustStore.pin(root, tmp_path / "KOR" / "trust")
    red = indicator("RED")
    sent = bundle(indicator("GREEN"), red, levels=("GREEN", "RED"))
    report = tmp_path / "c2.stix.json"
    report.write_text(json.dumps(sent))
    invalid = indicator("GREEN")
    del invalid["pattern"]
    (tmp_path / "invalid.stix.json").write_text(json.dumps(bundle(invalid, levels=("GREEN",))))

    with broker_server(url, AUDIENCE, tmp_path / "broker.log") as (base, _):
        env = {
            **os.environ,
            "MSMT_BROKER_URL": base,
            "MSMT_KEYS": str(tmp_path / "KOR"),
            "MSMT_PASSPHRASE": "kor passphrase",
            "MSMT_AUDIENCE": AUDIENCE,
        }

        def submit(*args: str, stix2: bool = True) -> subprocess.CompletedProcess[str]:
            head = ["-m", "msmt.cli"] if stix2 else ["-c", NO_STIX2]
            return subprocess.run(
                [sys.executable, *head, "submit", *args], env=env, capture_output=True, text=True, timeout=120
            )

        as_clear = submit(str(report), "-c", "RESTRICTED", "--tlp", "CLEAR", "-r", "ALL")
        assert as_clear.returncode != 0
        assert red["id"] in as_clear.stderr and "TLP:RED" in as_clear.stderr, as_clear.stderr
        to_all = submit(str(report), "-c", "RESTRICTED", "--tlp", "RED", "-r", "ALL", "--to", "USA")
        assert to_all.returncode != 0 and red["id"] in to_all.stderr and "ALL" in to_all.stderr
        as_amber = submit(str(report), "-c", "RESTRICTED", "--tlp", "AMBER", "-r", "USA", "--to", "USA")
        assert as_amber.returncode != 0 and red["id"] in as_amber.stderr
        broken = submit(
            str(tmp_path / "invalid.stix.json"), "-c", "RESTRICTED", "--tlp", "GREEN", "-r", "USA"
        )
        assert broken.returncode != 0 and invalid["id"] in broken.stderr and "STIX 2.1" in broken.stderr
        # without the stix extra the markings are still checked (and a warning says what was not)
        bare = submit(str(report), "-c", "RESTRICTED", "--tlp", "CLEAR", "-r", "ALL", stix2=False)
        assert bare.returncode != 0 and red["id"] in bare.stderr and "stix2 is not installed" in bare.stderr
        assert items_at(url) == 0  # nothing was sent
        assert not list((tmp_path / "KOR" / "trust" / "outbox").glob("*.msmt"))  # nor sealed

        ok = submit(str(report), "-c", "RESTRICTED", "--tlp", "RED", "-r", "USA", "--to", "USA")
        assert ok.returncode == 0, ok.stderr
        assert items_at(url) == 1
        with Client(base, _KEYS["USA"], trust=TrustStore.pin(root), audience=AUDIENCE) as usa:
            got = usa.receive(0).received
        assert [json.loads(r.payload) for r in got] == [sent]
        assert got[0].opened.header.markings.tlp == "RED"
