"""`msmt outbox`: the items sealed here that the broker has not acknowledged (clients/msmt/outbox.py).

`msmt submit` keeps every sealed envelope in `KEYS/trust/outbox` until the broker's receipt for it
is checked. When the broker could not be reached, the item stays there, and `msmt outbox send`
submits the very same bytes again, so a retried report is never stored twice.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import cli, ui
from .outbox import Outbox, OutboxEntry
from .trust import TrustStore


def _outbox(args: argparse.Namespace) -> Outbox:
    folder = cli.trust_folder(args)
    TrustStore.load(folder)  # one clear sentence when this is not an agency's folder
    return Outbox(folder / "outbox")


def _row(entry: OutboxEntry, state: str) -> dict[str, Any]:
    header = entry.parsed.header
    row: dict[str, Any] = {
        "item_id": entry.item_id,
        "state": state,
        "sealed": ui.local_time(header.created_ms),
        "recipients": ",".join(header.recipient_countries),
        "bytes": entry.size,
    }
    if entry.refusal is not None:
        row["reason"] = (
            f"{entry.refusal.get('status')} {entry.refusal.get('code')}: {entry.refusal.get('detail')}"
        )
    return row


def cmd_list(args: argparse.Namespace) -> int:
    outbox = _outbox(args)
    rows = [_row(e, "pending") for e in outbox.pending()] + [_row(e, "refused") for e in outbox.refused()]
    if not rows and not args.json:
        print("the outbox is empty: the broker acknowledged every item sent from here")
        return cli.EXIT_OK
    cli.emit(args, rows, rows)
    return cli.EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    _outbox(args)
    with cli.client_for(args) as client:
        pending = [e.item_id for e in client.outbox.pending()]
        before = {e.item_id for e in client.outbox.refused()}
        receipts = client.resend_pending()
        refused = [e for e in client.outbox.refused() if e.item_id not in before]
    rows: list[dict[str, Any]] = [
        {
            "item_id": r.item_id,
            "result": "acknowledged",
            "log_index": r.log_index,
            "recipients": ",".join(r.recipients),
        }
        for r in receipts
    ]
    rows += [
        {"item_id": e.item_id, "result": "refused", "reason": _row(e, "refused")["reason"]} for e in refused
    ]
    if not pending and not args.json:
        print("nothing to send: the outbox is empty")
        return cli.EXIT_OK
    cli.emit(args, rows, rows)
    return cli.EXIT_ERROR if refused else cli.EXIT_OK


def cmd_discard(args: argparse.Namespace) -> int:
    outbox = _outbox(args)
    matches = [e.item_id for e in outbox.refused() if e.item_id.startswith(args.item_id.lower())]
    if any(e.item_id.startswith(args.item_id.lower()) for e in outbox.pending()):
        raise cli.Usage(
            f"{args.item_id} is pending, not refused: the broker may already hold it, so it cannot be "
            "discarded; run `msmt outbox send`"
        )
    if len(matches) != 1:
        found = "no refused item" if not matches else f"{len(matches)} refused items"
        raise cli.Usage(f"{found} in the outbox starts with {args.item_id!r}; see `msmt outbox`")
    outbox.discard(matches[0])
    print(f"discarded refused item {matches[0]}")
    return cli.EXIT_OK


def register(sub: Any) -> None:
    outbox = sub.add_parser(
        "outbox",
        help="items sealed here that the broker has not acknowledged; re-send them",
        description="Every sealed item is kept in KEYS/trust/outbox until the broker acknowledged it. "
        "`list` shows what is pending or was refused, `send` re-submits the pending ones with "
        "the same bytes (never a second copy), `discard` deletes a refused one.",
    )
    osub = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    outbox.set_defaults(func=cmd_list)
    p = osub.add_parser("list", help="pending and refused items", description="Pending and refused items.")
    p.set_defaults(func=cmd_list)
    p = osub.add_parser(
        "send",
        help="re-submit every pending item (the same bytes)",
        description="Re-submit every pending item with the bytes it was sealed with.",
    )
    p.set_defaults(func=cmd_send)
    p = osub.add_parser(
        "discard",
        help="delete a refused item from the outbox",
        description="Delete a refused item (its envelope and the broker's reason) from the outbox.",
    )
    p.add_argument("item_id", help="the item id or a unique prefix of it")
    p.set_defaults(func=cmd_discard)
