"""`msmt report`: joint reports from the command line (docs/reports.md, clients/msmt/reports.py).

Every command that needs the thread first reads the inbox into the thread store (`KEYS/reports`,
`reports.sync`: nothing is acknowledged), and every item sent is kept there, since the broker
never delivers an item to its own originator.
"""

from __future__ import annotations

import argparse
import mimetypes
import sys
from pathlib import Path
from typing import Any

from . import cli, reports, ui
from .client import Client
from .core import Markings
from .core import report as rp
from .core.errors import MsmtError
from .core.markings import TLP_LEVELS
from .trust import TrustStore

RULE_HELP = "all (every participant endorses) or quorum:K (any K participants); default all"


def _store(args: argparse.Namespace) -> reports.ThreadStore:
    return reports.ThreadStore(Path(args.keys) / "reports")


def _rule(text: str, participants: int) -> rp.Rule:
    value = text.strip().lower()
    if value == "all":
        return rp.Rule("all")
    kind, _, k = value.partition(":")
    if kind == "quorum" and k.isdigit() and 1 <= int(k) <= participants:
        return rp.Rule("quorum", int(k))
    raise cli.Usage(
        f"--rule {text!r} is not 'all' or 'quorum:K' with K from 1 to {participants} (the participants)"
    )


def _participants(text: str) -> list[str]:
    codes = sorted({c.strip().upper() for c in text.split(",") if c.strip()})
    if not codes:
        raise cli.Usage("--participants needs country codes separated by commas, e.g. KOR,USA,JPN")
    for code in codes:
        if len(code) != 3 or not code.isalpha() or code == "ALL":
            raise cli.Usage(f"{code!r} in --participants is not a country code such as KOR")
    return codes


def _markings(args: argparse.Namespace, participants: list[str] | tuple[str, ...]) -> Markings:
    if not args.releasable_to:
        args.releasable_to = [",".join(participants)]
    return cli._markings(args)


def _attachments(paths: list[str]) -> dict[str, tuple[str, bytes]]:
    files: dict[str, tuple[str, bytes]] = {}
    for path in paths:
        name = Path(path).name
        if not rp.ATTACHMENT_NAME_RE.fullmatch(name):
            raise cli.Usage(
                f"attachment name {name!r} must be letters, digits, '.', '_' or '-' (100 at most)"
            )
        if name in files:
            raise cli.Usage(f"two attachments are named {name}")
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        files[name] = (media_type, ui.read_bytes(path, "attachment"))
    return files


def _status(args: argparse.Namespace, client: Client | None = None) -> reports.ThreadStatus:
    """The thread's state from the store, checked against the verified directory (refreshed
    from the broker when a client is given)."""
    trust = client.trust if client is not None else TrustStore.load(cli.trust_folder(args))
    state = client.directory().state if client is not None else trust.state
    status = reports.thread_status(_store(args).items(), state)
    for problem in status.problems:
        print(f"msmt: left out {problem}", file=sys.stderr)
    return status


def _synced(args: argparse.Namespace, client: Client) -> reports.ThreadStatus:
    reports.sync(client, _store(args))
    return _status(args, client)


def _thread(status: reports.ThreadStatus, report_id: str) -> reports.ReportThread:
    try:
        return status.report(report_id)
    except MsmtError as exc:
        raise ui.UserError(f"{exc.detail}; `msmt report status` lists the reports this agency holds") from exc


def _sent(args: argparse.Namespace, item: reports.ThreadItem, what: str, **extra: Any) -> int:
    _store(args).add(item)
    result = {"sent": what, "item_id": item.item_id, **extra}
    cli.emit(args, result)
    return cli.EXIT_OK


# --- commands ------------------------------------------------------------------------------------


def cmd_draft(args: argparse.Namespace) -> int:
    participants = _participants(args.participants)
    rule = _rule(args.rule, len(participants))
    body = ui.read_text(args.file, "report")
    files = _attachments(args.attach)
    markings = _markings(args, participants)
    try:
        document = rp.new_document(
            title=args.title, body=body, participants=participants, rule=rule, attachments=files
        )
    except MsmtError as exc:
        raise ui.UserError(f"the report is not valid: {exc.detail}") from exc
    with cli.client_for(args) as client:
        if client.country not in participants:
            raise cli.Usage(f"add {client.country} to --participants: only participants draft a report")
        item = reports.send_draft(client, document, markings)
    return _sent(args, item, "version 1", report_id=document.manifest.report_id)


def cmd_revise(args: argparse.Namespace) -> int:
    body = ui.read_text(args.file, "report")
    with cli.client_for(args) as client:
        thread = _thread(_synced(args, client), args.report_id)
        previous = thread.latest
        m = previous.document.manifest
        participants = _participants(args.participants) if args.participants else list(m.participants)
        rule = _rule(args.rule, len(participants)) if args.rule else None
        files = _attachments(args.attach) if args.attach else None
        try:
            document = rp.revise(
                previous.document,
                title=args.title,
                body=body,
                attachments=files,
                participants=participants,
                rule=rule,
            )
        except MsmtError as exc:
            raise ui.UserError(f"the revision is not valid: {exc.detail}") from exc
        markings = _markings(args, sorted(set(participants) | set(m.participants)))
        item = reports.send_revision(client, previous, document, markings)
    return _sent(args, item, f"version {document.manifest.version}", report_id=m.report_id)


def _find_item(store: reports.ThreadStore, item_id: str) -> reports.ThreadItem:
    items = store.items()
    matches = [i for i in items if i.item_id == item_id]
    if not matches and len(item_id) >= 8:
        matches = [i for i in items if i.item_id.startswith(item_id)]
    if len(matches) != 1:
        raise ui.UserError(
            f"no item {item_id} in this agency's report threads (or the prefix is not unique); "
            "`msmt report log REPORT_ID` lists them"
        )
    return matches[0]


def _report_of(status: reports.ThreadStatus, item_id: str) -> reports.ReportThread:
    for thread in status.reports.values():
        ids = {v.item_id for v in thread.versions} | {e.item_id for e in thread.endorsements}
        ids |= {c.item_id for c in thread.comments}
        if item_id in ids:
            return thread
    raise ui.UserError(f"item {item_id} belongs to no report this agency holds")


def _everyone(thread: reports.ReportThread) -> list[str]:
    return sorted({c for v in thread.versions for c in v.document.manifest.participants})


def cmd_comment(args: argparse.Namespace) -> int:
    with cli.client_for(args) as client:
        status = _synced(args, client)
        on = _find_item(_store(args), args.item_id)
        thread = _report_of(status, on.item_id)
        participants = list(thread.latest.document.manifest.participants)
        item = reports.send_comment(
            client, on.item_id, args.text, participants, _markings(args, participants)
        )
    return _sent(args, item, "comment", report_id=thread.report_id, in_reply_to=on.item_id)


def cmd_endorse(args: argparse.Namespace) -> int:
    with cli.client_for(args) as client:
        thread = _thread(_synced(args, client), args.report_id)
        version = thread.version(args.version)
        participants = version.document.manifest.participants
        item = reports.send_endorsement(
            client, version, _markings(args, participants), reservation=args.reservation or ""
        )
    return _sent(
        args,
        item,
        f"endorsement of version {version.number}" + (" (with reservation)" if args.reservation else ""),
        report_id=thread.report_id,
        content_hash=version.content_hash,
    )


def cmd_withdraw(args: argparse.Namespace) -> int:
    with cli.client_for(args) as client:
        status = _synced(args, client)
        target = _find_item(_store(args), args.item_id)
        if target.originator != client.country:
            raise ui.UserError(
                f"item {target.item_id} was sent by {target.originator}: only its originator may withdraw it"
            )
        thread = _report_of(status, target.item_id)
        recipients = _everyone(thread)
        item = reports.send_withdrawal(
            client, target.item_id, args.reason, recipients, _markings(args, recipients)
        )
    return _sent(args, item, "withdrawal", report_id=thread.report_id, withdrawn=target.item_id)


def cmd_sync(args: argparse.Namespace) -> int:
    with cli.client_for(args) as client:
        kept = reports.sync(client, _store(args))
    cli.emit(args, {"kept": kept, "store": str(_store(args).folder)})
    return cli.EXIT_OK


def _summary(thread: reports.ReportThread) -> dict[str, Any]:
    versions = thread.current_versions()
    if not versions:
        return {"report_id": thread.report_id, "title": "-", "version": "withdrawn", "state": "withdrawn"}
    latest = versions[-1]
    m = latest.document.manifest
    endorsed = len(thread.endorsements_of(latest))
    return {
        "report_id": thread.report_id,
        "title": m.title,
        "version": latest.number,
        "endorsed": f"{endorsed} of {m.needed} needed",
        "rule": m.rule.describe(len(m.participants)),
        "missing": ", ".join(thread.missing(latest)) or "-",
        "state": "ready to publish" if thread.satisfied(latest) else "awaiting endorsements",
    }


def cmd_status(args: argparse.Namespace) -> int:
    status = _status(args)
    if args.report_id:
        thread = _thread(status, args.report_id)
        rows = reports.log(thread)
        summary = _summary(thread)
        if args.json:
            cli.emit(args, {**summary, "versions": rows})
        else:
            print(ui.key_values(summary))
        return cli.EXIT_OK
    rows = [_summary(t) for t in sorted(status.reports.values(), key=lambda t: t.report_id)]
    if not rows and not args.json:
        print("no reports yet: `msmt report sync` reads the inbox", file=sys.stderr)
        return cli.EXIT_OK
    cli.emit(args, rows, rows)
    return cli.EXIT_OK


def cmd_log(args: argparse.Namespace) -> int:
    thread = _thread(_status(args), args.report_id)
    rows = reports.log(thread)
    table = [
        {
            "version": r["version"],
            "item_id": r["item_id"],
            "by": r["by"],
            "time": r["time"],
            "endorsed_by": ", ".join(r["endorsed_by"]) or "-",
            "missing": ", ".join(r["missing"]) or "-",
            "rule": r["rule"] + (" (met)" if r["satisfied"] else ""),
            "withdrawn": "yes" if r["withdrawn"] else "",
        }
        for r in rows
    ]
    cli.emit(args, rows, table)
    return cli.EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    thread = _thread(_status(args), args.report_id)
    new = thread.version(args.to)
    old_number = args.from_ if args.from_ is not None else new.number - 1
    if old_number < 1:
        raise ui.UserError(f"report {thread.report_id} has only version {new.number}: nothing to compare")
    old = thread.version(old_number)
    text = reports.diff(old.document, new.document)
    if args.json:
        cli.emit(args, {"from": old.number, "to": new.number, "diff": text})
    else:
        print(text)
    return cli.EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and out.is_dir():
        raise cli.Usage(f"{out} is a folder: give the bundle's file name with -o")
    with cli.client_for(args) as client:
        thread = _thread(_synced(args, client), args.report_id)
        version = thread.version(args.version)
        try:
            bundle, verdict = reports.publish(thread, version, list(client.trust.entries))
        except rp.RuleNotMet as exc:
            raise ui.UserError(f"cannot publish yet: {exc.detail}") from exc
    from .verify import describe, render_html

    written = [out]
    try:
        out.write_bytes(bundle)
        if args.html:
            written.append(Path(args.html))
            Path(args.html).write_text(render_html(verdict, out.name), encoding="utf-8")
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    if args.json:
        cli.emit(args, {"bundle": str(out), "html": args.html, "verdict": verdict.to_dict()})
    else:
        print("\n".join(describe(verdict)))
        print(f"wrote {out}" + (f" and {args.html}" if args.html else ""), file=sys.stderr)
    return cli.EXIT_OK


# --- parser --------------------------------------------------------------------------------------


def _add_markings(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("markings of the items sent (default: RESTRICTED, AMBER, the participants)")
    g.add_argument("--classification", "-c", default="RESTRICTED", help="default %(default)s")
    g.add_argument("--tlp", default="AMBER", type=str.upper, choices=TLP_LEVELS, help="default AMBER")
    g.add_argument(
        "--releasable-to",
        "-r",
        action="append",
        default=[],
        metavar="WHO",
        help="releasable to these countries or groups (default: the report's participants)",
    )
    g.add_argument(
        "--caveat", action="append", default=[], metavar="CAVEAT", help="a handling caveat (repeatable)"
    )
    g.add_argument("--topic", "-t", action="append", default=[], metavar="TOPIC", help="a topic (repeatable)")


def register(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="joint reports: draft, revise, comment, endorse, withdraw, publish",
        description="Joint reports among members: a thread of versions, comments and signed "
        "endorsements, published as a bundle anyone can check with msmt-verify.",
    )
    rsub = report.add_subparsers(dest="report_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = rsub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = action("draft", "send version 1 of a new report (Markdown) to its participants", cmd_draft)
    p.add_argument("file", help="the report body, Markdown")
    p.add_argument("--title", required=True, help="the report's title")
    p.add_argument("--participants", required=True, help="country codes, e.g. KOR,USA,JPN (yours included)")
    p.add_argument("--rule", default="all", help=RULE_HELP)
    p.add_argument("--attach", action="append", default=[], metavar="FILE", help="an attachment; repeatable")
    _add_markings(p)

    p = action("revise", "send the next version of a report (it supersedes the latest)", cmd_revise)
    p.add_argument("report_id", help="the report id (or a unique prefix, 8 characters at least)")
    p.add_argument("file", help="the new body, Markdown")
    p.add_argument("--title", help="a new title (default: unchanged)")
    p.add_argument("--participants", help="new participants (default: unchanged)")
    p.add_argument("--rule", help="a new rule (default: unchanged)")
    p.add_argument("--attach", action="append", default=[], metavar="FILE", help="replaces all attachments")
    _add_markings(p)

    p = action("comment", "send a Markdown comment on a version or a comment", cmd_comment)
    p.add_argument("item_id", help="the version's or comment's item id")
    p.add_argument("text", help="the comment")
    _add_markings(p)

    p = action("endorse", "sign and send this country's endorsement of one version", cmd_endorse)
    p.add_argument("report_id", help="the report id")
    p.add_argument("--version", type=int, help="the version number (default: the latest)")
    p.add_argument("--reservation", help="a reservation published with the endorsement")
    _add_markings(p)

    p = action("withdraw", "withdraw one of this country's own items, with a reason", cmd_withdraw)
    p.add_argument("item_id", help="the item id of a version, comment or endorsement you sent")
    p.add_argument("--reason", required=True, help="why it is withdrawn (signed, sent to the participants)")
    _add_markings(p)

    action("sync", "read the inbox into the report threads (nothing is acknowledged)", cmd_sync)

    p = action("status", "the reports held, or one report's state", cmd_status)
    p.add_argument("report_id", nargs="?", help="one report")

    p = action("log", "a report version by version: who, when, who endorsed", cmd_log)
    p.add_argument("report_id", help="the report id")

    p = action("diff", "what changed between two versions", cmd_diff)
    p.add_argument("report_id", help="the report id")
    p.add_argument("--from", dest="from_", type=int, metavar="N", help="default: the version before --to")
    p.add_argument("--to", type=int, metavar="M", help="default: the latest")

    p = action("publish", "write the publication bundle of an endorsed version", cmd_publish)
    p.add_argument("report_id", help="the report id")
    p.add_argument("--version", type=int, required=True, help="the version to publish")
    p.add_argument("--output", "-o", required=True, metavar="BUNDLE", help="the bundle file to write")
    p.add_argument("--html", metavar="PAGE", help="also write the reader's page (HTML)")
