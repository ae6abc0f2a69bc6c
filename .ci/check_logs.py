"""After the test run: grep the log of every broker process the tests started for secrets.

The tests copy each broker's log into MSMT_TEST_LOG_DIR (tests/e2e/servers.py). .ci/run gives
the PostgreSQL URL a canary password (the test server trusts every connection, so any password
works): it must appear in no log. Neither may a bearer token, key material, a passphrase the
tests use, or a payload marker. Fails, too, when no log was collected (the check would prove
nothing) or when a line is not JSON.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

PATTERNS = {
    "the database password": re.compile(re.escape(sys.argv[2]) if len(sys.argv) > 2 else r"(?!x)x"),
    "a bearer token (JWT)": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"),
    "PEM key material": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a test passphrase": re.compile(r"correct horse battery staple|walk passphrase"),
    "a payload marker": re.compile(r"MSMT-PAYLOAD-CANARY"),
}


def main() -> int:
    folder = Path(sys.argv[1])
    logs = sorted(folder.glob("*.log")) if folder.is_dir() else []
    if not logs:
        print(f"check_logs: no broker log was collected in {folder}: the secrets check proved nothing")
        return 1
    found: list[str] = []
    lines = not_json = 0
    for log in logs:
        for number, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            lines += 1
            try:
                json.loads(line)
            except ValueError:
                not_json += 1
                found.append(f"{log.name}:{number}: not a JSON line: {line[:120]}")
            for what, pattern in PATTERNS.items():
                if pattern.search(line):
                    found.append(f"{log.name}:{number}: {what}")
    print(f"check_logs: {len(logs)} broker logs, {lines} lines, {not_json} not JSON, {len(found)} findings")
    for finding in found[:50]:
        print(f"  {finding}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
