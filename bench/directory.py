"""Directory verification: what a client pays to trust the member-signed directory.

    .venv/bin/python bench/directory.py [--members 11 193] [--repeat 5]

For each coalition size: a genesis root signed by every founder, then 20 self-rotations
and one quorum statement (an enrolment signed by ceil(2/3) of the members). Prints the
median time to verify the whole chain from the pinned root (what `msmt trust init` and a
fresh client do), and to verify one quorum statement on top of a verified state (what a
client pays when the directory moves).
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import statistics
import string
import sys
import time
from itertools import product
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msmt.agency import AgencyKeys
from msmt.core import ApiPrivateKey, EncryptionPrivateKey, KeyKind, SigningPrivateKey
from msmt.core import governance as gov


def codes(n: int) -> list[str]:
    return ["".join(c) for c in product(string.ascii_uppercase, repeat=3) if "".join(c) != "ALL"][:n]


def keys_for(code: str) -> AgencyKeys:
    seed = hashlib.shake_256(f"bench {code}".encode()).digest(128)
    return AgencyKeys(
        code,
        SigningPrivateKey.from_seed(seed[:64]),
        EncryptionPrivateKey.from_seed(seed[64:96]),
        ApiPrivateKey.from_seed(seed[96:128]),
    )


def public(keys: AgencyKeys) -> dict[KeyKind, object]:
    return {
        KeyKind.SIGNING: keys.signing.public_key,
        KeyKind.ENCRYPTION: keys.encryption.public_key,
        KeyKind.API: keys.api.public_key,
    }


def build(n: int) -> tuple[list[bytes], bytes, gov.DirectoryState]:
    members = {c: keys_for(c) for c in codes(n)}
    t = 1_800_000_000_000
    root_signed = gov.root_statement(
        {c: gov.member_body(c, "SECRET", [], public(k)) for c, k in members.items()},  # type: ignore[arg-type]
        t,
    )
    chain = [gov.signed_entry(root_signed, [(c, k.signing) for c, k in members.items()])]
    state = gov.genesis(chain[0])
    for i, (code, k) in enumerate(list(members.items())[:20]):
        signed = gov.rotate_key(state, code, ApiPrivateKey.generate().public_key, t + i + 1)
        chain.append(gov.signed_entry(signed, [(code, k.signing)]))
        state = gov.apply(state, chain[-1])
    newcomer = keys_for("ZZZ1"[:3] if "ZZZ" not in members else "ZZY")
    signed = gov.statement(
        state,
        "enrol-member",
        t + 100,
        country=newcomer.country,
        member=gov.member_body("new", "SECRET", [], public(newcomer)),  # type: ignore[arg-type]
    )
    voters = list(members.items())[: state.quorum.size(len(members))]
    quorum_entry = gov.signed_entry(
        signed, [(c, k.signing) for c, k in voters] + [(newcomer.country, newcomer.signing)]
    )
    return chain, quorum_entry, state


def median_ms(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, nargs="+", default=[11, 193])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {platform.system()} {platform.release()}, python {platform.python_version()}"
    )
    rows = {}
    for n in args.members:
        chain, quorum_entry, state = build(n)
        whole = median_ms(lambda chain=chain: gov.verify_chain(chain), args.repeat)
        step = median_ms(lambda s=state, q=quorum_entry: gov.apply(s, q), args.repeat)
        size = sum(len(e) for e in chain)
        rows[n] = (whole, step)
        print(
            f"{n:>4} members: root + 20 rotations ({size / 1024:,.0f} KiB) verified in {whole:,.1f} ms; "
            f"one quorum statement ({state.quorum.size(n)} signatures) in {step:,.1f} ms"
        )
    if len(rows) == 2:
        (a, ra), (b, rb) = rows.items()
        print(
            f"ratio {b}/{a} members: whole chain {rb[0] / ra[0]:.1f}x, quorum statement {rb[1] / ra[1]:.1f}x"
        )


if __name__ == "__main__":
    main()
