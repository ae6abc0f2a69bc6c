"""Fail unless the JUnit report shows PostgreSQL tests that ran and none skipped."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

MINIMUM = 20


def main(path: str) -> int:
    cases = ET.parse(path).getroot().iter("testcase")  # noqa: S314
    ran = skipped = 0
    for case in cases:
        if "postgresql" not in case.get("name", ""):
            continue
        if case.find("skipped") is not None:
            skipped += 1
        else:
            ran += 1
    print(f"PostgreSQL tests: {ran} ran, {skipped} skipped")
    if skipped or ran < MINIMUM:
        print(f"FAIL: PostgreSQL tests must all run (at least {MINIMUM})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
