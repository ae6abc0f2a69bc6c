"""msmt-verify: check a published joint report offline, and write its reader's page.

    msmt-verify BUNDLE [--root-fingerprint F] [--json] [--html OUT.html]

BUNDLE is a publication bundle (`msmt-publication-v1`, docs/reports.md) or `-` for standard
input. The verifier needs no network, no broker and no key folder: the bundle carries the report,
every endorsement, the keys they were made with and the members' directory from its root.

Exit status: 0 the bundle verifies (and, with --root-fingerprint, chains to that root);
1 the bundle is rejected (one sentence says why); 2 usage error, unreadable bundle, unwritable
page.

This module imports only the standard library, `cryptography` and the pure core (`.core`, by
relative imports only): it must keep working where the client's HTTP and token libraries are not
installed. It is shipped twice from this one file: in msmt-client as `msmt.verify`
(`python -m msmt.verify`), and as `msmt_verify.verify` in the msmt-verify distribution
(clients/verify/pyproject.toml), which holds nothing but this module and the core, depends on
`cryptography` alone and owns the `msmt-verify` command.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .core import report as rp
from .core.errors import MsmtError

EXIT_VALID = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2

EPILOG = """\
exit status:
  0  verified: every endorsement is valid and the report's rule is met
  1  rejected: the bundle is malformed, altered, or its endorsements do not satisfy the rule
  2  usage error, or the bundle or page could not be read or written

Without --root-fingerprint the verifier says which members' root the bundle chains to; compare
that fingerprint with the one the members publish (for example on their governments' sites).
"""


def _read(path: str, stdin: TextIO) -> bytes:
    if path == "-":
        data: bytes = stdin.buffer.read(rp.MAX_BUNDLE_BYTES + 1)
        return data
    with open(path, "rb") as handle:
        return handle.read(rp.MAX_BUNDLE_BYTES + 1)


def describe(verdict: rp.Verdict) -> list[str]:
    """What the command prints for a verified bundle, one line each; the first is the verdict."""
    m = verdict.report.manifest
    if verdict.root_pinned:
        root = f"members' root: {verdict.root_fingerprint} (the pinned root)"
    else:
        root = (
            f"members' root: {verdict.root_fingerprint} -- NOT PINNED: compare it with the fingerprint "
            "the members publish, or run again with --root-fingerprint"
        )
    lines = [
        f"VERIFIED: {verdict.sentence()}",
        f"report: {_one_line(m.title)} (report {m.report_id}, version {m.version})",
        f"rule: {m.rule.describe(len(m.participants))} ({', '.join(m.participants)}), met on "
        f"{rp.time_of(verdict.satisfied_ms)}",
    ]
    lines += [
        f"  {e.country} endorsed on {rp.time_of(e.created_ms)} with key {e.key_id}"
        + (f"; reservation: {_one_line(e.reservation)}" if e.reservation else "")
        for e in verdict.endorsements
    ]
    lines += [
        f"content hash: {verdict.content_hash}",
        *(f"attachment: {a.name} ({a.media_type}, {a.size} bytes, sha256 {a.sha256})" for a in m.attachments),
        root,
        f"directory: verified up to entry {verdict.directory_seq} ({verdict.directory_head})",
        f"bundle sha256: {verdict.bundle_sha256}",
    ]
    return lines


def _one_line(text: str) -> str:
    return " ".join(text.split())


def rejection(exc: MsmtError) -> str:
    return f"REJECTED: {exc.detail} [{exc.code}]"


# --- the reader's page ---------------------------------------------------------------------------

_STYLE = """
body { font-family: Georgia, serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #111; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
pre { white-space: pre-wrap; word-wrap: break-word; background: #f6f6f6; padding: 1rem; font-size: .95rem; }
.verdict { border: 2px solid #2b6; padding: .75rem 1rem; background: #effaf2; }
.warn { border: 2px solid #c80; padding: .75rem 1rem; background: #fff7e6; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }
code, .mono { font-family: Menlo, Consolas, monospace; font-size: .85rem; word-break: break-all; }
"""


def render_html(verdict: rp.Verdict, bundle_name: str) -> str:
    """A static, self-contained page (no scripts, no external resources) showing what the bundle
    proves and how to check it. Every text from the bundle is escaped; the Markdown body is shown
    as preformatted text, never interpreted as HTML."""
    m = verdict.report.manifest
    e = html.escape

    def row(*cells: str) -> str:
        return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    endorsements = "\n".join(
        row(
            e(x.country),
            e(rp.time_of(x.created_ms)),
            f'<span class="mono">{e(x.key_id)}</span>',
            e(x.reservation) if x.reservation else "none",
        )
        for x in verdict.endorsements
    )
    attachments = "\n".join(
        row(e(a.name), e(a.media_type), str(a.size), f'<span class="mono">{e(a.sha256)}</span>')
        for a in m.attachments
    )
    attachments_table = (
        "<table><tr><th>name</th><th>type</th><th>bytes</th><th>SHA-256</th></tr>\n"
        f"{attachments}</table>\n<p>The attachments are inside the bundle file.</p>"
        if m.attachments
        else "<p>None.</p>"
    )
    pin_note = (
        f'<p class="verdict">The bundle was checked against the pinned members\' root '
        f"<code>{e(verdict.root_fingerprint)}</code>.</p>"
        if verdict.root_pinned
        else f'<p class="warn">This page was produced without a pinned root: the bundle chains to the '
        f"members' root <code>{e(verdict.root_fingerprint)}</code>. Compare it with the fingerprint the "
        "member states publish before you rely on it.</p>"
    )
    command = f"msmt-verify {bundle_name} --root-fingerprint {verdict.root_fingerprint}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(m.title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{e(m.title)}</h1>
<p class="verdict"><strong>{e(verdict.sentence())}</strong></p>
<p>Report <code>{e(m.report_id)}</code>, version {m.version}. Participants: {e(", ".join(m.participants))}.
Rule: {e(m.rule.describe(len(m.participants)))}, met on {e(rp.time_of(verdict.satisfied_ms))}.</p>

<h2>Report</h2>
<pre>{e(verdict.report.body)}</pre>

<h2>Attachments</h2>
{attachments_table}

<h2>Endorsements</h2>
<table><tr><th>country</th><th>signed (UTC)</th><th>signing key</th><th>reservation</th></tr>
{endorsements}
</table>

<h2>What was verified</h2>
<table>
<tr><th>content hash (report, attachments, participants, rule)</th><td class="mono">{e(verdict.content_hash)}</td></tr>
<tr><th>members' root fingerprint</th><td class="mono">{e(verdict.root_fingerprint)}</td></tr>
<tr><th>members' directory</th><td>verified from the root up to entry {verdict.directory_seq}
 (<span class="mono">{e(verdict.directory_head)}</span>)</td></tr>
<tr><th>bundle file</th><td><span class="mono">{e(bundle_name)}</span>, SHA-256
 <span class="mono">{e(verdict.bundle_sha256)}</span></td></tr>
</table>
{pin_note}

<h2>How to check this yourself</h2>
<ol>
<li>Obtain the bundle file <code>{e(bundle_name)}</code> (SHA-256 <code>{e(verdict.bundle_sha256)}</code>).
 This page only displays it; the bundle is the evidence.</li>
<li>Obtain the members' root fingerprint from the member states themselves, over a channel you trust,
 and check that it is <code>{e(verdict.root_fingerprint)}</code>.</li>
<li>Install the verifier (<code>pip install msmt-verify</code>, a small package of its own; it
 needs only Python 3.11 and <code>cryptography</code> and never uses the network) and run:
<pre>{e(command)}</pre>
 It checks the report and attachment hashes, every endorsement signature (ML-DSA-65 and Ed25519),
 that each signing key belonged to the endorsing state at the time, by replaying the members'
 signed directory from the root, and that the report's endorsement rule is met.
 Exit status 0 means verified; it prints the same sentence as at the top of this page.</li>
<li>The format is specified in <code>docs/reports.md</code> of the MSMT Broker, so the check can be
 re-implemented independently.</li>
</ol>
</body>
</html>
"""


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="msmt-verify",
        description="Verify a published MSMT joint report offline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", help="the publication bundle file, or - for standard input")
    parser.add_argument(
        "--root-fingerprint",
        metavar="F",
        help="the members' root fingerprint, as published by the members (e.g. F794-9FA2-...)",
    )
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument("--html", metavar="OUT.html", help="also write the reader's page (when verified)")
    args = parser.parse_args(argv)
    pinned = None
    if args.root_fingerprint is not None:
        try:
            pinned = rp.normalize_fingerprint(args.root_fingerprint)
        except ValueError as exc:
            print(f"msmt-verify: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        data = _read(args.bundle, stdin or sys.stdin)
    except OSError as exc:
        print(f"msmt-verify: cannot read {args.bundle}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        verdict = rp.verify_bundle(data, pinned)
    except MsmtError as exc:
        if args.json:
            print(json.dumps({"valid": False, "code": exc.code, "detail": exc.detail}, indent=2))
        else:
            print(rejection(exc))
        return EXIT_REJECTED
    if args.html:
        name = "bundle.msmt.json" if args.bundle == "-" else Path(args.bundle).name
        try:
            Path(args.html).write_text(render_html(verdict, name), encoding="utf-8")
        except OSError as exc:
            print(f"msmt-verify: cannot write {args.html}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.json:
        print(json.dumps(verdict.to_dict(), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        print("\n".join(describe(verdict)))
    return EXIT_VALID


if __name__ == "__main__":
    raise SystemExit(main())
