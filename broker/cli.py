"""msmt-broker: run the broker and administer it from the broker host.

The admin subcommands work directly on the broker's database (for the operator on the
host); remote admins use the same operations through /v1/admin with an admin key. Every
change is recorded in the admin action log with the actor `local:<user>`. Members and
their keys are not administered here: they change only by member-signed statements.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from msmt import ui
from msmt.auth import audience_of
from msmt.core import (
    ApiPrivateKey,
    Markings,
    SigningPrivateKey,
    public_key_document,
    short_fingerprint,
    write_private_key,
)
from msmt.core.errors import MsmtError
from msmt.core.logleaf import LogIdentity, LogSigner
from msmt.core.markings import TLP_LEVELS, TOPICS
from msmt.core.policy import DEFAULT_LADDER, sharing_matrix

from . import policydoc
from .problems import Problem
from .services import admin as admin_service
from .services import governance as governance_service
from .services import policy as policy_service
from .settings import Settings
from .store.db import make_engine, make_sessionmaker, migrate, transaction

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_DATABASE = 4  # the database is missing, not migrated or unreachable
PASSPHRASE_ENV = "MSMT_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret
NOT_MIGRATED = "run `msmt-broker migrate` (or `msmt-broker init` for a new broker)"
EPILOG = """\
environment:
  MSMT_DATABASE_URL  SQLAlchemy URL (--database-url); postgres:// and postgresql:// mean psycopg 3
  MSMT_PASSPHRASE    init: passphrase of the new private keys when --passphrase-env is not given
  MSMT_DEBUG         1: show the traceback behind an error
  COLUMNS            width that tables wrap to (default: the terminal's)

output: wrapped tables, local ISO 8601 times and spoken key fingerprints for people;
  --json (before or after the command) for programs.

exit codes:
  0 success   1 refused or invalid input   2 usage error
  4 the database is missing, not migrated or unreachable
  70 internal error (a bug; MSMT_DEBUG=1 shows where)   130 interrupted (Ctrl-C)
"""


def _now() -> int:
    return int(time.time() * 1000)


def _actor() -> str:
    return f"local:{getpass.getuser()}"


def _passphrase(env: str | None, prompt: str) -> str:
    """--passphrase-env's variable, else MSMT_PASSPHRASE, else asked twice on the terminal;
    without any of them, a usage error (never an EOFError)."""
    if env:
        value = os.environ.get(env)
        if not value:
            raise ui.UserError(f"environment variable {env} is empty or unset", EXIT_USAGE)
        return value
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise ui.UserError(
            f"no terminal to ask for the {prompt} on: set {PASSPHRASE_ENV} or pass --passphrase-env VAR",
            EXIT_USAGE,
        )
    first = getpass.getpass(f"{prompt}: ")
    if first != getpass.getpass(f"{prompt} (again): "):
        raise ui.UserError("the passphrases differ", EXIT_USAGE)
    if not first:
        raise ui.UserError("the passphrase is empty", EXIT_USAGE)
    return first


def normalize_database_url(url: str) -> str:
    """postgres:// and postgresql:// (what hosting providers print) mean psycopg 3, the driver
    installed; anything else is checked to be a URL SQLAlchemy can load."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            url = "postgresql+psycopg://" + url[len(scheme) :]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ui.UserError(
            f"--database-url {redact(url)!r} is not a database URL: write sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE",
            EXIT_USAGE,
        ) from exc
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ui.UserError(
            f"--database-url {redact(url)!r}: the {parsed.drivername} driver is not supported; write "
            "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DATABASE",
            EXIT_USAGE,
        )
    return url


def redact(url: str) -> str:
    """The URL with its password hidden, for anything printed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)" if "@" in url else url


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory ones)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _existing_database(args: argparse.Namespace) -> str:
    """The URL, once it is known that the database exists: no command but init and migrate
    creates one (an empty SQLite file is not a broker)."""
    path = _sqlite_file(args.database_url)
    if path is not None and not path.is_file():
        raise ui.UserError(f"there is no database at {path}: {NOT_MIGRATED}", EXIT_DATABASE)
    return str(args.database_url)


def _sessions(args: argparse.Namespace) -> Any:
    return make_sessionmaker(make_engine(_existing_database(args)))


def _write(args: argparse.Namespace, work: Callable[[Any], Any]) -> Any:
    with transaction(_sessions(args)) as session:
        return work(session)


def _read(args: argparse.Namespace, work: Callable[[Any], Any]) -> Any:
    with _sessions(args)() as session:
        return work(session)


def _print(args: argparse.Namespace, value: Any) -> None:
    ui.emit(value, as_json=args.json)


def _known(args: argparse.Namespace) -> tuple[list[str], list[str], list[str]]:
    """(ladder, member countries, groups) as the database holds them, for "did you mean"."""
    countries = _read(args, admin_service.list_countries)
    ladder = _read(args, policy_service.ladder)
    codes = [c["code"] for c in countries]
    groups = sorted({g for c in countries for g in c["groups"]})
    return list(ladder), codes, groups


def _check_country(what: str, code: str, codes: list[str]) -> None:
    if code not in codes:
        raise ui.UserError(
            f"{what} {code!r} is not a member country{ui.did_you_mean(code, codes)}; "
            f"members: {', '.join(codes) or 'none yet (install the directory root first)'}",
            EXIT_USAGE,
        )


# --- commands ----------------------------------------------------------------------------


def _init_refusal(args: argparse.Namespace) -> str | None:
    """Why `init` must not start (one sentence), or None: checked before anything is written."""
    if not admin_service.ADMIN_NAME_RE.fullmatch(args.admin):
        return (
            f"{args.admin!r} is not a valid admin name: use 1 to 64 characters, a lowercase "
            "letter first, then lowercase letters, digits, '.', '_' or '-'"
        )
    data = Path(args.data_dir)
    for name in ("broker-signing.key", f"admin-{args.admin}.key", LOG_KEY_FILE):
        if (data / name).exists():
            return f"{data / name} exists already: init never overwrites a private key"
    if data.exists() and not data.is_dir():
        return f"--data-dir {data} is a file, not a folder"
    existing = next((p for p in (data, *data.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot create the data folder {data}: {existing} is not writable"
    path = _sqlite_file(args.database_url)
    if path is not None:
        folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
        if path.exists() and not path.is_file():
            return f"the database path {path} is not a file"
        if folder is not None and not folder.is_dir():
            return f"cannot create the database {path}: {folder} is not a folder"
        if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
            return f"cannot create the database {path}: {folder} is not writable"
    return None


def _initialised(url: str) -> bool:
    """Whether the database already holds a broker (an admin): init runs once."""
    from sqlalchemy import inspect, text

    path = _sqlite_file(url)
    if path is not None and not path.exists():
        return False
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("admins"):
                return False
            return conn.execute(text("SELECT 1 FROM admins LIMIT 1")).first() is not None
    finally:
        engine.dispose()


def cmd_init(args: argparse.Namespace) -> int:
    """Create the schema, the broker's signing key and the first admin with its key.

    Everything that can be checked is, before anything is written: the admin name, the data
    folder, the database (reachable, not initialised yet) and the passphrase."""
    refusal = _init_refusal(args)
    if refusal is not None:
        raise ui.UserError(refusal, EXIT_USAGE)
    passphrase = _passphrase(args.passphrase_env, "passphrase for the new private keys")
    if _initialised(args.database_url):
        raise ui.UserError(
            f"the database {redact(args.database_url)} already holds a broker: init runs once "
            "(`msmt-broker migrate` upgrades the schema)",
            EXIT_USAGE,
        )
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    migrate(args.database_url)
    broker_key = SigningPrivateKey.generate()
    write_private_key(data / "broker-signing.key", broker_key, "broker", passphrase)
    (data / "broker-signing.pub").write_bytes(public_key_document("broker", broker_key.public_key))
    admin_key = ApiPrivateKey.generate()
    write_private_key(data / f"admin-{args.admin}.key", admin_key, f"admin:{args.admin}", passphrase)
    _write_log_key(data, Settings().log_origin)
    now = _now()

    def setup(session: Any) -> None:
        admin_service.create_admin(session, _actor(), args.admin, now)
        admin_service.add_key(
            session, _actor(), f"admin:{args.admin}", "admin", admin_key.public_key.raw, now
        )
        admin_service.set_agreement(session, _actor(), "*", "*", args.default_ceiling, None, now)

    _write(args, setup)
    print(f"broker initialised: database {redact(args.database_url)}")
    print(f"  broker signing key {broker_key.key_id} ({short_fingerprint(broker_key.key_id)})")
    print(f"  admin {args.admin}: key {admin_key.key_id} in {data / f'admin-{args.admin}.key'}")
    print(
        f"  transparency-log key in {data / LOG_KEY_FILE}: serve with MSMT_LOG_KEY_FILE={data / LOG_KEY_FILE}"
    )
    print(f"  its public [log] table, for the founders' members.toml: {data / LOG_IDENTITY_FILE}")
    return EXIT_OK


LOG_KEY_FILE = "log.key"
LOG_IDENTITY_FILE = "log-identity.toml"


def _write_log_key(data: Path, origin: str) -> LogIdentity:
    """The transparency log's key (64 random bytes, base64, 0600: what MSMT_LOG_KEY_FILE names)
    and its public identity as the `[log]` table the founders put into their root."""
    seed = secrets.token_bytes(64)
    path = data / LOG_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(seed).decode() + "\n")
    identity = LogSigner.from_seed(origin, seed).identity()
    vkeys = ", ".join(json.dumps(v) for v in identity.vkeys)
    (data / LOG_IDENTITY_FILE).write_text(
        "# the broker's transparency log, for the founders' members.toml (msmt governance root draft)\n"
        f"[log]\norigin = {json.dumps(identity.origin)}\nvkeys = [{vkeys}]\n"
    )
    return identity


def cmd_migrate(args: argparse.Namespace) -> int:
    migrate(args.database_url)
    print(f"schema at head: {redact(args.database_url)}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import logging.config

    import uvicorn
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from .observability import configure_structlog, logging_config

    configure_structlog()  # the server's own log format from its first line on: JSON
    logging.config.dictConfig(logging_config(args.log_level))

    # A database that is there but not migrated is a mistake to say before binding the port.
    # One that does not answer now is an outage: the broker starts all the same, /readyz says
    # 503 until the database answers, and it recovers by itself (docs/operations.md).
    try:
        _read(args, lambda s: s.execute(text("SELECT 1 FROM admins LIMIT 1")).first())
    except (OperationalError, ProgrammingError) as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        if isinstance(exc, ProgrammingError) or "no such table" in reason:
            raise
        logging.getLogger("msmt.broker").warning(
            "the database %s does not answer (%s); serving anyway: /readyz answers 503 until it does",
            redact(args.database_url),
            reason,
        )

    from . import metrics

    os.environ["MSMT_DATABASE_URL"] = args.database_url
    os.environ.setdefault("MSMT_GC_FREEZE", "1")
    if not os.environ.get("MSMT_AUDIENCE"):
        os.environ["MSMT_AUDIENCE"] = own_url(args.host, args.port)
    settings = Settings()
    cap = connection_cap(settings.max_connections)
    waiting = waiting_cap(cap, settings.inbox_max_waiting)
    if waiting < settings.inbox_max_waiting:
        logging.getLogger("msmt.broker").warning(
            "MSMT_INBOX_MAX_WAITING=%d leaves too few of the %d connections for anything but long-polls: "
            "serving at most %d waiting long-polls",
            settings.inbox_max_waiting,
            cap,
            waiting,
        )
        os.environ["MSMT_INBOX_MAX_WAITING"] = str(waiting)  # the workers read it
    # GET /metrics on a listener of its own (MSMT_METRICS_PORT), served from this process; it
    # names the workers' metrics folder in the environment before they start (broker/metrics.py)
    try:
        metrics.start_listener(settings, api_port=args.port)
    except (ValueError, OSError) as exc:
        raise ui.UserError(f"cannot serve metrics: {exc}", EXIT_USAGE) from exc
    uvicorn.run(
        "broker.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        # JSON lines (broker/observability.py) in every worker; the broker logs each request
        # itself, with its request id, caller and problem code, so uvicorn's access log is off.
        log_config=logging_config(args.log_level, requests=os.environ.get("MSMT_ACCESS_LOG", "1") != "0"),
        access_log=False,
        # Connections past the cap are answered 503 at once: the process never runs out of file
        # descriptors (each worker is a process with its own limit and its own cap).
        limit_concurrency=cap,
        # Where the descriptors are too few for MSMT_MAX_CONNECTIONS, the standard asyncio loop:
        # on EMFILE its accept backs off for a second and leaves the excess connections in the
        # kernel's backlog, where uvloop closes them unanswered (tests/chaos, 1,500 long-polls
        # under 1,024 descriptors). Its accept errors are one log line a minute (serving.py).
        loop="auto" if cap >= settings.max_connections else "asyncio",
        # SIGTERM: long-polls are released at once (broker/serving.py, Draining); anything else gets
        # this long to finish, then is cancelled.
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
    )
    return EXIT_OK


def own_url(host: str, port: int) -> str:
    """The broker's identity when MSMT_AUDIENCE is not set: the URL of the one address it
    listens on. Listening on every address, it cannot know which name members use."""
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - recognising, not binding
        raise ui.UserError(
            f"listening on every address ({host or 'all'}), the broker cannot tell the URL members reach "
            "it at: set MSMT_AUDIENCE to that URL (e.g. https://broker.msmt.example), which tokens name",
            EXIT_USAGE,
        )
    return audience_of(f"http://{f'[{host}]' if ':' in host else host}:{port}")


# File descriptors a broker process needs besides its HTTP connections: the database pool
# (SQLite: the database, -wal and -shm files per connection), the listeners, logs, the metrics
# folder's files, the Python modules it opens.
RESERVED_FDS = 128


def waiting_cap(connections: int, wanted: int) -> int:
    """Long-polls may wait on at most 4 in 5 of the connections: submissions, acknowledgements
    and the other requests keep the rest."""
    return max(1, min(wanted, connections * 4 // 5))


def connection_cap(wanted: int) -> int:
    """The connection cap `serve` applies: `wanted`, with the soft RLIMIT_NOFILE raised (up to
    the hard limit) to hold it plus RESERVED_FDS; where the hard limit is lower, what fits under
    it, with a warning. Raises UserError when not even a few connections fit."""
    import logging
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    # Half of what is left: a connection past the cap still takes a descriptor from its accept
    # until its 503 is written, and a burst of them must not exhaust the limit (tests/chaos:
    # 1,500 long-polls under 1,024 descriptors).
    cap = (soft - RESERVED_FDS) // 2
    if cap < 16:
        raise ui.UserError(
            f"the file-descriptor limit ({soft}) leaves no room for connections: raise it (LimitNOFILE=)",
            EXIT_USAGE,
        )
    logging.getLogger("msmt.broker").warning(
        "the file-descriptor limit is %d (hard %s): serving at most %d connections, not MSMT_MAX_CONNECTIONS=%d",
        soft,
        hard,
        cap,
        wanted,
    )
    return cap


def cmd_directory_install(args: argparse.Namespace) -> int:
    """Install the founders' signed genesis root: the only way members first appear."""
    data = ui.read_bytes(args.root, "root file")
    result = _write(args, lambda s: governance_service.install_root(s, _actor(), data, _now()))
    print(f"directory root installed: {len(result['members'])} founding members, hash {result['hash']}")
    print(f"  members: {', '.join(result['members'])}")
    return EXIT_OK


def cmd_directory_history(args: argparse.Namespace) -> int:
    country = args.country.upper() if args.country else None
    if country is not None:
        _check_country("--country", country, _known(args)[1])
    _print(args, _read(args, lambda s: governance_service.history(s, country)))
    return EXIT_OK


def cmd_directory_proposals(args: argparse.Namespace) -> int:
    rows = _read(args, lambda s: governance_service.list_proposals(s, None if args.all else "pending"))
    if not args.json:
        rows = [
            {k: (", ".join(v) if isinstance(v, list) else v) for k, v in row.items() if k != "signed"}
            for row in rows
        ]
    _print(args, rows)
    return EXIT_OK


def cmd_agreement_set(args: argparse.Namespace) -> int:
    topics = (
        None
        if args.topics in (None, "*")
        else [t.strip().lower() for t in args.topics.split(",") if t.strip()]
    )
    args.originator, args.recipient = args.originator.upper(), args.recipient.upper()
    ladder, codes, _ = _known(args)
    if (args.originator, args.recipient) != ("*", "*"):
        _check_country("originator", args.originator, codes)
        _check_country("recipient", args.recipient, codes)
    ui.check_choice("ceiling", args.ceiling, ladder)
    for topic in topics or []:
        ui.check_choice("topic", topic, list(TOPICS))
    result = _write(
        args,
        lambda s: admin_service.set_agreement(
            s, _actor(), args.originator, args.recipient, args.ceiling, topics, _now()
        ),
    )
    ui.emit(result, as_json=args.json, rows=[_agreement_row(result)])
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    listing = {
        "countries": admin_service.list_countries,
        "keys": admin_service.list_keys,
        "agreements": admin_service.list_agreements,
        "actions": admin_service.list_actions,
    }[args.what]
    rows = _read(args, listing)
    if args.what == "agreements":
        ui.emit(rows, as_json=args.json, rows=[_agreement_row(r) for r in rows])
    else:
        _print(args, rows)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Verify the database's consistency (after a restore, before starting): read only."""
    from .services import maintenance
    from .services.health import schema_head

    report = _read(args, lambda session: maintenance.check(session, schema_head(), deep=args.deep))
    schema = [f.detail for f in report.findings if f.check == "schema"]
    if schema:  # nothing else can be checked: the same answer as every other command gives
        raise ui.UserError(schema[0], EXIT_DATABASE)
    if args.json:
        findings = [{"check": f.check, "detail": f.detail} for f in report.findings]
        ui.emit(
            {"ok": report.ok, "checks": list(report.checks), "findings": findings, "counts": report.counts},
            as_json=True,
        )
    else:
        for finding in report.findings:
            print(f"{finding.check}: {finding.detail}")
        counts = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in report.counts.items())
        verdict = "consistent" if report.ok else f"{len(report.findings)} findings"
        print(f"{verdict}: checked {', '.join(report.checks)}" + (f" ({counts})" if counts else ""))
    return EXIT_OK if report.ok else EXIT_ERROR


def cmd_purge(args: argparse.Namespace) -> int:
    """Purge envelopes retention allows (every recipient acknowledged, older than the age)."""
    from .services import maintenance

    if not args.older_than > 0:
        raise ui.UserError("--older-than must be a positive number of days", EXIT_USAGE)
    age_ms = int(args.older_than * 24 * 3600 * 1000)
    now_ms = int(time.time() * 1000)
    count = _write(
        args, lambda session: maintenance.purge(session, age_ms, now_ms, _actor(), dry_run=args.dry_run)
    )
    if args.json:
        ui.emit({"purged": count, "dry_run": args.dry_run, "older_than_days": args.older_than}, as_json=True)
    else:
        what = "would purge" if args.dry_run else "purged"
        print(
            f"{what} {count} envelopes acknowledged by every recipient, older than {args.older_than:g} days"
        )
    return EXIT_OK


def _agreement_row(row: dict[str, Any]) -> dict[str, Any]:
    """For people: no topic list means every topic, not none."""
    return {**row, "topics": "all" if row.get("topics") is None else row["topics"]}


def cmd_policy_export(args: argparse.Namespace) -> int:
    document = _read(args, policy_service.export_document)
    text = policydoc.render(
        document, header=f"MSMT sharing policy, exported {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
    )
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    return EXIT_OK


def _load_document(path: str) -> policydoc.PolicyDocument:
    try:
        return policydoc.parse(ui.read_text(path, "policy document"))
    except policydoc.PolicyDocumentError as exc:
        raise Problem(
            422, "invalid-policy", "Invalid policy", f"{path} is not a valid policy: " + "; ".join(exc.errors)
        ) from exc


def cmd_policy_plan(args: argparse.Namespace) -> int:
    proposed = _load_document(args.file)
    plan = _read(args, lambda s: policy_service.plan_document(s, proposed))
    print(plan.text())
    return EXIT_ERROR if plan.errors else EXIT_OK


def cmd_policy_apply(args: argparse.Namespace) -> int:
    proposed = _load_document(args.file)
    plan = _read(args, lambda s: policy_service.plan_document(s, proposed))
    print(plan.text())
    if plan.errors:
        return EXIT_ERROR
    if plan.empty:
        print("nothing to apply")
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            print("error: pass --yes to apply without a terminal to confirm on", file=sys.stderr)
            return EXIT_USAGE
        if input("apply this plan? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not applied")
            return EXIT_ERROR
    _, version = _write(
        args, lambda s: policy_service.apply_document(s, _actor(), proposed, _now(), with_access=False)
    )
    print(f"applied: policy version {version}")
    return EXIT_OK


def cmd_policy_schema(args: argparse.Namespace) -> int:
    print(json.dumps(policydoc.json_schema(), indent=2))
    return EXIT_OK


def cmd_policy_versions(args: argparse.Namespace) -> int:
    _print(args, _read(args, policy_service.list_versions))
    return EXIT_OK


def cmd_policy_explain_item(args: argparse.Namespace) -> int:
    result = _read(args, lambda s: policy_service.explain_item(s, args.item_id))
    if args.json:
        _print(args, result)
        return EXIT_OK
    print(f"item {result['item_id']} from {result['originator']}, markings {ui.human(result['markings'])}")
    print(
        f"allowed under policy version {result['policy_version']} (registry version {result['registry_version']}):"
    )
    for decision in result["decisions"]:
        verdict = (
            "allowed"
            if decision["allowed"]
            else "DENIED: " + "; ".join(d["reason"] for d in decision["denials"])
        )
        print(f"  -> {decision['recipient']}: {verdict}")
    return EXIT_OK


def cmd_policy_matrix(args: argparse.Namespace) -> int:
    ladder, codes, groups = _known(args)
    classification = ui.check_choice("classification", args.classification.upper(), ladder)
    ui.check_choice("TLP", args.tlp, list(TLP_LEVELS))
    releasable = [
        v.strip().upper() for value in args.releasable_to or ["ALL"] for v in value.split(",") if v.strip()
    ]
    for who in releasable:
        ui.check_choice("releasable-to", who, ["ALL", *codes, *groups])
    topics = [v.strip().lower() for value in args.topic for v in value.split(",") if v.strip()]
    for topic in topics:
        ui.check_choice("topic", topic, list(TOPICS))
    markings = Markings.create(
        classification,
        args.tlp,
        releasable,
        caveats=[c.upper() for c in args.caveat],
        topics=topics,
    )
    snapshot = policydoc.to_snapshot(_read(args, policy_service.export_document))
    matrix = sharing_matrix(snapshot, markings)
    codes = sorted(snapshot.members)
    if args.json:
        _print(
            args,
            {o: {r: [d.rule for d in dec.denials] for r, dec in row.items()} for o, row in matrix.items()},
        )
        return EXIT_OK
    print(
        f"markings: {markings.classification} TLP:{markings.tlp} releasable-to {', '.join(markings.releasable_to)}"
        f"{' topics ' + ', '.join(markings.topics) if markings.topics else ''}"
    )
    print("rows: originator, columns: recipient.  Y allowed  . denied  - self")
    print("     " + " ".join(f"{c:>3}" for c in codes))
    for originator in codes:
        cells = []
        for recipient in codes:
            if recipient == originator:
                cells.append("  -")
            else:
                cells.append("  Y" if matrix[originator][recipient].allowed else "  .")
        print(f"{originator:>4} " + " ".join(cells))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    settings = Settings()
    parser = argparse.ArgumentParser(
        prog="msmt-broker",
        description=(__doc__ or "").split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"msmt-broker {_version()}")
    parser.add_argument(
        "--database-url",
        default=settings.database_url,
        help=f"SQLAlchemy URL (env MSMT_DATABASE_URL or MSMT_DATABASE_URL_FILE; default {redact(settings.database_url)})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create the schema, the broker key and the first admin")
    p.add_argument("--data-dir", default="var/broker", help="where private keys are written (mode 0600)")
    p.add_argument("--admin", required=True, help="name of the first admin, e.g. alice")
    p.add_argument(
        "--default-ceiling",
        default="UNCLASSIFIED",
        choices=DEFAULT_LADDER,
        help="ceiling of the default agreement for pairs without one",
    )
    p.add_argument(
        "--passphrase-env",
        help="read the key passphrase from this environment variable (default: MSMT_PASSPHRASE, else asked)",
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("migrate", help="bring the database schema to the latest version")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("serve", help="run the HTTP API")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8443, help="port to listen on (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (PostgreSQL for more than one)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level",
    )
    p.set_defaults(func=cmd_serve)

    directory = sub.add_parser(
        "directory", help="the member-signed directory: install the founders' root, show its history"
    )
    dsub = directory.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = dsub.add_parser("install", help="install the genesis root every founder signed (once)")
    p.add_argument("root", help="the signed root file (msmt governance root finish)")
    p.set_defaults(func=cmd_directory_install)
    p = dsub.add_parser("history", help="every applied directory entry: type, country, signers")
    p.add_argument("--country", help="only entries about this country (and roots)")
    p.set_defaults(func=cmd_directory_history)
    p = dsub.add_parser("proposals", help="statements waiting for members' signatures")
    p.add_argument("--all", action="store_true", help="also applied and stale ones")
    p.set_defaults(func=cmd_directory_proposals)

    agreement = sub.add_parser("agreement", help="set sharing agreements")
    asub = agreement.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = asub.add_parser("set", help="set what may flow ORIGINATOR -> RECIPIENT ('*' '*' is the default)")
    p.add_argument("originator", help="country code of the sender, or * for the default")
    p.add_argument("recipient", help="country code of the receiver, or * for the default")
    p.add_argument(
        "--ceiling",
        required=True,
        type=str.upper,
        help="highest classification that may flow (a level of the ladder)",
    )
    p.add_argument("--topics", help="comma-separated topics, or '*' for all (default)")
    p.set_defaults(func=cmd_agreement_set)

    policy = sub.add_parser("policy", help="the sharing policy as one reviewable TOML document")
    psub = policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = psub.add_parser("export", help="write the current policy document")
    p.add_argument("--output", "-o", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_policy_export)
    p = psub.add_parser(
        "plan", help="show what applying a document would change and which pairs gain or lose access"
    )
    p.add_argument("file", help="a policy document (TOML)")
    p.set_defaults(func=cmd_policy_plan)
    p = psub.add_parser("apply", help="print the plan, then apply the document atomically as a new version")
    p.add_argument("file", help="a policy document (TOML)")
    p.add_argument("--yes", action="store_true", help="apply without asking for confirmation")
    p.set_defaults(func=cmd_policy_apply)
    p = psub.add_parser("schema", help="print the JSON Schema of the policy document")
    p.set_defaults(func=cmd_policy_schema)
    p = psub.add_parser("versions", help="list the kept policy versions: who applied what, when")
    p.set_defaults(func=cmd_policy_versions)
    p = psub.add_parser(
        "explain-item", help="replay each recipient's decision under the policy that allowed an item"
    )
    p.add_argument("item_id", help="the item's id")
    p.set_defaults(func=cmd_policy_explain_item)
    p = psub.add_parser("matrix", help="originator x recipient matrix of allowed/denied for given markings")
    p.add_argument("--classification", "-c", required=True, help="classification of the hypothetical item")
    p.add_argument("--tlp", required=True, type=str.upper, help="TLP 2.0 level")
    p.add_argument(
        "--releasable-to", "-r", action="append", help="country codes, groups or ALL (default ALL)"
    )
    p.add_argument("--caveat", action="append", default=[], help="caveats, e.g. ORCON")
    p.add_argument("--topic", "-t", action="append", default=[], help="topics (repeatable)")
    p.set_defaults(func=cmd_policy_matrix)

    p = sub.add_parser("check", help="verify the database's consistency (read only): run after a restore")
    p.add_argument("--deep", action="store_true", help="also re-hash every log leaf and every envelope")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("purge", help="purge acknowledged envelopes older than an age (log entries stay)")
    p.add_argument("--older-than", type=float, required=True, metavar="DAYS", help="age in days")
    p.add_argument("--dry-run", action="store_true", help="only count what would be purged")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("list", help="list countries, keys, agreements or admin actions")
    p.add_argument("what", choices=["countries", "keys", "agreements", "actions"], help="what to list")
    p.set_defaults(func=cmd_list)
    return ui.json_anywhere(parser)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("msmt-broker")
    except PackageNotFoundError:
        return "unknown (not installed)"


def classify(exc: BaseException, url: str = "") -> tuple[str, int] | None:
    """The operator's error families as (sentence, exit code); the rest is ui.classify_common."""
    from pydantic import ValidationError
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError

    if isinstance(exc, Problem):
        return f"{exc.detail} ({exc.code})", EXIT_ERROR
    if isinstance(exc, policydoc.PolicyDocumentError):
        return "invalid policy document: " + "; ".join(exc.errors), EXIT_ERROR
    if isinstance(exc, OperationalError | ProgrammingError):
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        where = f"the database {redact(url)}" if url else "the database"
        if any(s in reason for s in ("no such table", "does not exist", "UndefinedTable")):
            return f"{where} is not set up for this version ({reason}): {NOT_MIGRATED}", EXIT_DATABASE
        return f"cannot use {where}: {reason}", EXIT_DATABASE
    if isinstance(exc, NoSuchModuleError | ArgumentError):
        return f"--database-url: {ui.one_line(str(exc))}", EXIT_USAGE
    if isinstance(exc, ValidationError):
        return f"invalid setting: {ui.one_line(str(exc))}", EXIT_USAGE
    if isinstance(exc, MsmtError):
        return f"{exc.detail} ({exc.code})", EXIT_ERROR
    return None


def main(argv: Sequence[str] | None = None) -> int:
    url = ""

    def work() -> int:
        nonlocal url
        args = build_parser().parse_args(argv)
        args.database_url = url = normalize_database_url(args.database_url)
        code: int = args.func(args)
        return code

    return ui.boundary("msmt-broker", work, lambda exc: classify(exc, url))


if __name__ == "__main__":
    raise SystemExit(main())
