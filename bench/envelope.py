"""Envelope cost: seal, verify (broker side) and open (one recipient), 11 recipients.

    .venv/bin/python bench/envelope.py [--repeat 300] [--json]

Pure CPU, one thread, no I/O: each call is timed alone with time.perf_counter after a
warm-up, and median and p90 are reported per payload size. `verify` takes the envelope
bytes as the broker receives them (parse + composite signature + payload hash); `open`
includes that verification, then unwraps the content key and decrypts the payload.
"Verifications per second per core" is 1 / median verify time for the 1 KiB payload.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from msmt.core import EncryptionPrivateKey, Markings, SigningPrivateKey, open_envelope, seal, verify

COUNTRIES = ("AUS", "CAN", "DEU", "FRA", "GBR", "ITA", "JPN", "KOR", "NLD", "NZL", "USA")
ORIGINATOR, READER = "USA", "NZL"
SIZES = {"1 KiB": 1024, "1 MiB": 1024 * 1024}
MARKINGS = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])


def measure(call: Callable[[], object], repeat: int) -> dict[str, float]:
    """Median and p90 of `repeat` timed calls, in milliseconds, after a short warm-up."""
    for _ in range(max(3, repeat // 10)):
        call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    p90 = statistics.quantiles(samples, n=10, method="inclusive")[-1]
    return {"median_ms": statistics.median(samples), "p90_ms": p90}


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cryptography": version("cryptography"),
    }


def bench_size(size: int, repeat: int) -> dict[str, Any]:
    signing = SigningPrivateKey.generate()
    keys = {country: EncryptionPrivateKey.generate() for country in COUNTRIES}
    recipients = [(country, key.public_key) for country, key in keys.items()]
    payload = os.urandom(size)

    def seal_once() -> bytes:
        return seal(
            payload,
            content_type="application/octet-stream",
            markings=MARKINGS,
            recipients=recipients,
            originator=ORIGINATOR,
            signing_key=signing,
        )

    envelope = seal_once()

    def verify_once() -> None:
        verify(envelope, signing.public_key)

    def open_once() -> bytes:
        opened = open_envelope(
            envelope, recipient=READER, private_key=keys[READER], originator_key=signing.public_key
        )
        return opened.payload

    assert open_once() == payload
    return {
        "payload_bytes": size,
        "envelope_bytes": len(envelope),
        "seal": measure(seal_once, repeat),
        "verify": measure(verify_once, repeat),
        "open": measure(open_once, repeat),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=300, help="timed runs per operation and size (>= 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    if args.repeat < 2:
        parser.error("--repeat must be at least 2")

    facts = machine()
    if not args.json:
        print(
            f"machine: {facts['cpu_count']} cores ({facts['machine']}), {facts['platform']}\n"
            f"python {facts['python']}, cryptography {facts['cryptography']}\n"
            f"{len(COUNTRIES)} recipients, {args.repeat} timed runs per figure, one thread"
        )
        sys.stdout.flush()
    results = {label: bench_size(size, args.repeat) for label, size in SIZES.items()}
    per_core = 1000 / results["1 KiB"]["verify"]["median_ms"]
    if args.json:
        report = {
            "machine": facts,
            "recipients": len(COUNTRIES),
            "repeat": args.repeat,
            "results": results,
            "verifications_per_s_per_core_1kib": per_core,
        }
        print(json.dumps(report, indent=2))
        return 0
    print(f"\n{'payload':>8} {'operation':>9} {'median ms':>10} {'p90 ms':>8} {'envelope bytes':>15}")
    for label, row in results.items():
        for op in ("seal", "verify", "open"):
            figures = row[op]
            print(
                f"{label:>8} {op:>9} {figures['median_ms']:10.3f} {figures['p90_ms']:8.3f} "
                f"{row['envelope_bytes']:15,d}"
            )
    print(f"\nverifications per second per core (1 KiB, median): {per_core:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
