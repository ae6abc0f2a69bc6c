"""`msmt-gateway`: the agency gateway's command line.

    msmt-gateway serve --config gateway.toml     follow the inbox and serve TAXII 2.1
    msmt-gateway follow --config gateway.toml    move what the inbox holds now into the database
    msmt-gateway migrate --config gateway.toml   bring the database's schema up to date
    msmt-gateway hash-password                   a [users] line's value (asks for the password)
    msmt-gateway new-token NAME                  a random API token and its [tokens] line
    msmt-gateway misp-export --config gateway.toml --out DIR     what it received, as a MISP feed
    msmt-gateway misp-import --config gateway.toml --profile NAME EVENT.json   send a MISP event

The key folder's passphrase comes from MSMT_PASSPHRASE, or is asked for on the terminal.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from ..agency import AgencyKeys
from ..client import Client
from ..core.errors import MsmtError
from ..trust import TrustStore
from .config import GatewayConfig, hash_password, hash_token
from .send import Sender
from .store import Store, current_revision, follow, follow_once, migrate

log = logging.getLogger("msmt.gateway")


def _passphrase() -> str:
    value = os.environ.get("MSMT_PASSPHRASE")
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise SystemExit("set MSMT_PASSPHRASE: there is no terminal to ask for the key passphrase")
    return getpass.getpass("key passphrase: ")


def make_client(config: GatewayConfig, keys: AgencyKeys | None = None) -> Client:
    keys = keys or AgencyKeys.load(config.keys, _passphrase())
    trust = TrustStore.load(config.trust)
    return Client(config.broker_url, keys, trust=trust, audience=config.audience)


RESEND_EVERY_S = 30.0


def resend_loop(sender: Sender, stop: threading.Event, every: float = RESEND_EVERY_S) -> None:
    """Submit what the outbox holds (TAXII POSTs the broker did not acknowledge), forever."""
    while not stop.is_set():
        try:
            sent = sender.resend()
            if sent:
                log.info("re-sent %d item(s) from the outbox", sent)
        except Exception as exc:
            log.warning(
                "re-sending the outbox failed (%s: %s); retrying in %.0f s", type(exc).__name__, exc, every
            )
        stop.wait(every)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .taxii import create_app
    from .web import with_inbox

    config = GatewayConfig.load(Path(args.config))
    store = Store(config.database_url)
    client = make_client(config)
    # TAXII POSTs go out through a client of their own: the follower's is busy long-polling
    sending = make_client(config, client.keys) if config.send else None
    sender = Sender(sending, store, config.send) if sending is not None else None
    stop = threading.Event()
    follower = threading.Thread(
        target=follow,
        args=(client, store, stop),
        kwargs={"wait": args.wait, "keep_withdrawn": config.keep_withdrawn},
        name="inbox-follower",
        daemon=True,
    )
    follower.start()
    if sender is not None:
        threading.Thread(target=resend_loop, args=(sender, stop), name="outbox-resender", daemon=True).start()
    log.info(
        "following %s's inbox at %s; TAXII 2.1 and the web inbox (/inbox/) on %s:%d",
        client.country,
        config.broker_url,
        config.host,
        config.port,
    )
    # uvicorn shuts down on SIGTERM, then restores the handler it found and raises the signal
    # again: with Python's default one that kills the process before the follower is joined and
    # the store closed. This handler lets uvicorn.run return, so that the `finally` below runs.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        uvicorn.run(
            # the TAXII routes as they are, the analysts' web inbox under /inbox/ (docs/gateway.md)
            with_inbox(
                create_app(store, config.credentials, title=config.title, sender=sender),
                store,
                config.credentials,
                title=config.title,
                sender=sender,
            ),
            host=config.host,
            port=config.port,
            log_level=args.log_level,
            proxy_headers=True,
            server_header=False,
        )
    finally:
        stop.set()
        follower.join(timeout=args.wait + 5)
        client.close()
        if sending is not None:
            sending.close()
        store.close()
        log.info("stopped: the inbox follower is joined and the database closed")
    return 0


def cmd_follow(args: argparse.Namespace) -> int:
    config = GatewayConfig.load(Path(args.config))
    store = Store(config.database_url)
    try:
        with make_client(config) as client:
            total = 0
            while True:
                followed = follow_once(client, store, keep_withdrawn=config.keep_withdrawn, read_ahead=True)
                total += followed.saved.stored
                if followed.handled == 0:
                    break
        print(f"stored {total} new item(s); cursor {store.cursor()}")
    finally:
        store.close()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    config = GatewayConfig.load(Path(args.config))
    before = migrate(config.database_url, args.revision)
    after = current_revision(config.database_url)
    if before == after:
        print(f"the gateway database is at schema revision {after}: nothing to do")
    else:
        print(f"the gateway database is at schema revision {after} (it was at {before or 'none'})")
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if password != getpass.getpass("password (again): "):
            raise SystemExit("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 12:
        raise SystemExit("use a password of 12 characters at least")
    print(hash_password(password))
    return 0


def cmd_new_token(args: argparse.Namespace) -> int:
    token = secrets.token_urlsafe(32)
    print(f"token (give it to the TAXII consumer, it is shown once): {token}")
    print(f'[tokens] line: {args.name} = "{hash_token(token)}"')
    return 0


def cmd_misp_export(args: argparse.Namespace) -> int:
    from .misp import export_feed, parse_since

    config = GatewayConfig.load(Path(args.config))
    since = parse_since(args.since) if args.since is not None else None
    store = Store(config.database_url)
    try:
        result = export_feed(store, Path(args.out), since_ms=since, include_red=args.include_red)
    finally:
        store.close()
    print("\n".join(result.summary()))
    return 0


def cmd_misp_import(args: argparse.Namespace) -> int:
    from .misp import MispError, check_event, describe, import_event, read_event_file

    config = GatewayConfig.load(Path(args.config))
    profiles = {p.name: p for p in config.send}
    profile = profiles.get(args.profile)
    if profile is None:
        known = ", ".join(sorted(profiles)) or "none: add a [send.NAME] table"
        raise MispError(f"the configuration has no send profile {args.profile!r} (send profiles: {known})")
    event = read_event_file(Path(args.event))
    check_event(event, profile)  # before asking for the keys' passphrase
    store = Store(config.database_url)
    try:
        with make_client(config) as client:
            user = f"misp-import ({os.environ.get('USER') or os.environ.get('LOGNAME') or 'cli'})"
            imported = import_event(
                Sender(client, store, config.send), profile, event, country=client.country, user=user
            )
    finally:
        store.close()
    print("\n".join(describe(imported)))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msmt-gateway", description="The MSMT agency gateway (docs/gateway.md).")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="follow the inbox and serve what it received over TAXII 2.1")
    serve.add_argument("--config", required=True, help="the gateway's TOML configuration")
    serve.add_argument("--wait", type=float, default=30, help="long-poll seconds per inbox request")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)
    once = sub.add_parser("follow", help="store what the inbox holds now, then exit")
    once.add_argument("--config", required=True)
    once.set_defaults(func=cmd_follow)
    upgrade = sub.add_parser("migrate", help="bring the gateway database's schema up to date (Alembic)")
    upgrade.add_argument("--config", required=True)
    upgrade.add_argument("--revision", default="head", help="the schema revision to reach (default: head)")
    upgrade.set_defaults(func=cmd_migrate)
    hashing = sub.add_parser("hash-password", help="hash a TAXII user's password (scrypt) for [users]")
    hashing.set_defaults(func=cmd_hash_password)
    token = sub.add_parser("new-token", help="make an API token for a TAXII consumer, and its [tokens] line")
    token.add_argument("name")
    token.set_defaults(func=cmd_new_token)
    feed = sub.add_parser("misp-export", help="write what the gateway received as a MISP feed directory")
    feed.add_argument("--config", required=True)
    feed.add_argument("--out", required=True, help="the feed directory (created 0700)")
    feed.add_argument("--since", help="only items stored since: 2026-03-01 or 2026-03-01T12:00:00Z")
    feed.add_argument(
        "--include-red", action="store_true", help="export TLP:RED items too (never by default)"
    )
    feed.set_defaults(func=cmd_misp_export)
    misp_in = sub.add_parser("misp-import", help="send a MISP event (JSON) through a send profile")
    misp_in.add_argument("--config", required=True)
    misp_in.add_argument("--profile", required=True, help="the [send.NAME] profile whose markings it takes")
    misp_in.add_argument("event", help="the MISP event: {'Event': {...}} or the bare event, as JSON")
    misp_in.set_defaults(func=cmd_misp_import)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result: int = args.func(args)
    except MsmtError as exc:
        print(f"msmt-gateway: {exc.code}: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
