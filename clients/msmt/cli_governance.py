"""msmt trust | governance | keys rotate/revoke/history/check: the member-governed directory.

Nothing here trusts the broker: the root is pinned after comparing its fingerprint out of
band, every statement is shown from the verified chain, and what this agency signs is
built by this agency on the head it verified itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from . import cli, ui
from .agency import AgencyKeys
from .core import (
    ApiPrivateKey,
    EncryptionPrivateKey,
    KeyKind,
    SigningPrivateKey,
    canonical,
    parse_public_key_document,
    short_fingerprint,
    write_private_key,
)
from .core import governance as gov
from .core.errors import GovernanceError, MsmtError
from .core.logleaf import LogIdentity
from .trust import TrustStore, root_fingerprint

EXIT_ALARM = 7  # the directory lists a key for this country that this agency did not make

DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration_ms(text: str) -> int:
    unit = text[-1:] if text[-1:] in DURATIONS else "s"
    number = text[:-1] if text[-1:] in DURATIONS else text
    if not number.isdigit():
        raise cli.Usage(f"{text!r} is not a duration such as 30s, 12h or 7d")
    return int(number) * DURATIONS[unit] * 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _describe(signed: dict[str, Any]) -> str:
    """One sentence a custodian reads before signing."""
    try:
        return _description(signed)
    except (KeyError, TypeError, ValueError, AttributeError, MsmtError) as exc:
        raise ui.UserError(
            f"not a directory statement this version understands ({type(exc).__name__}: {exc})"
        ) from exc


def _description(signed: dict[str, Any]) -> str:
    kind, country = signed.get("type"), signed.get("country", "")
    if kind == "root":
        members = ", ".join(sorted(signed["members"]))
        return f"root version {signed['version']} with members {members}"
    if kind == "rotate-key":
        new = gov._public_key(KeyKind(signed["kind"]), signed["public_key"], signed["seq"])
        return (
            f"{country} replaces its {signed['kind']} key {signed['retire'] or '(none)'} by "
            f"{new.key_id} ({short_fingerprint(new.key_id)})"
        )
    if kind in ("revoke-key", "force-revoke-key"):
        return f"{'forced ' if kind == 'force-revoke-key' else ''}revocation of {country}'s key {signed['key_id']}"
    if kind == "enrol-member":
        m = signed["member"]
        keys = ", ".join(
            f"{name} {short_fingerprint(gov._public_key(KeyKind(name), text, 0).key_id)}"
            for name, text in sorted(m["keys"].items())
        )
        return (
            f"enrol {country} ({m['name']}, {m['accreditation']}, groups {m['groups'] or '-'}; keys {keys})"
        )
    if kind == "update-member":
        return f"change {country}: {signed['changes']}"
    if kind == "recover-member":
        return f"recover {country} with new keys (all its current keys revoked)"
    return str(kind)


# --- trust ----------------------------------------------------------------------------------


def cmd_trust_init(args: argparse.Namespace) -> int:
    root = ui.read_bytes(args.root, "root file")
    fingerprint = root_fingerprint(root)
    try:
        state = gov.genesis(root)
    except GovernanceError as exc:
        raise cli.Usage(f"{args.root} is not a root every founder signed: {exc.detail}") from exc
    print(f"root {fingerprint}: {len(state.members)} founding members", file=sys.stderr)
    for code in sorted(state.members):
        signing = state.members[code].current(KeyKind.SIGNING, state.updated_ms)
        assert signing is not None
        print(f"  {code}  signing key {short_fingerprint(signing.key_id)}", file=sys.stderr)
    if args.fingerprint:
        if args.fingerprint.replace("-", "").upper() != fingerprint.replace("-", ""):
            raise cli.Usage(f"the root's fingerprint is {fingerprint}, not {args.fingerprint}: not pinned")
    elif not args.yes:
        raise cli.Usage("compare the fingerprint above out of band, then pass --fingerprint FP (or --yes)")
    folder = cli.trust_folder(args)
    if (folder / "directory-chain.txt").exists() and not args.force:
        raise cli.Usage(f"{folder} already holds a pinned root; --force replaces it")
    TrustStore.pin(root, folder)
    print(f"pinned in {folder}")
    return cli.EXIT_OK


def cmd_trust_show(args: argparse.Namespace) -> int:
    store = TrustStore.load(cli.trust_folder(args))
    if args.refresh:
        with cli.client_for(args, store) as client:
            client.directory(refresh=True)
    state = store.state
    view = {
        "root": root_fingerprint(store.root),
        "verified_up_to": state.seq,
        "head": state.head,
        "root_version": state.root_version,
        "quorum": f"{state.quorum.numerator}/{state.quorum.denominator}",
        "members": len(state.members),
        "active": len(state.active_members()),
    }
    cli.emit(args, view)
    return cli.EXIT_OK


# --- the founders' root ----------------------------------------------------------------------


def _public_keys(folder: Path, code: str) -> dict[KeyKind, Any]:
    keys: dict[KeyKind, Any] = {}
    for kind in KeyKind:
        path = folder / f"{code}.{kind.value}.pub"
        if not path.exists():
            path = folder / f"{kind.value}.pub"
        document = parse_public_key_document(ui.read_bytes(path, "public key document"))
        if document.country != code or document.kind != kind:
            raise cli.Usage(
                f"{path} is {document.country}'s {document.kind.value} key, not {code}'s {kind.value}"
            )
        keys[kind] = document.key
    return keys


def cmd_root_draft(args: argparse.Namespace) -> int:
    config = ui.read_toml(args.members, "members file")
    members = {}
    base = Path(args.members).parent
    table = config.get("members")
    if not isinstance(table, dict) or not table:
        raise cli.Usage(f"{args.members} has no [members.CODE] tables")
    for code, entry in sorted(table.items()):
        where = f"{args.members}: [members.{code}]"
        if not isinstance(entry, dict):
            raise cli.Usage(f"{where} must be a table")
        for name in ("name", "accreditation", "keys"):
            if not isinstance(entry.get(name), str):
                raise cli.Usage(f'{where} needs {name} = "..." (a string)')
        groups = entry.get("groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise cli.Usage(f"{where}: groups must be a list of strings")
        keys = _public_keys(base / entry["keys"], code)
        members[code] = gov.member_body(entry["name"], entry["accreditation"], groups, keys)
    quorum = config.get("quorum", {"numerator": 2, "denominator": 3})
    if not (isinstance(quorum, dict) and set(quorum) <= {"numerator", "denominator"}) or not all(
        type(v) is int for v in quorum.values()
    ):
        raise cli.Usage(f"{args.members}: quorum must be {{ numerator = 2, denominator = 3 }} (integers)")
    extra = {k: v for k, v in config.items() if k in ("ladder",)}
    if "log" in config:  # the broker's transparency log (msmt-broker init wrote log-identity.toml)
        try:
            identity = LogIdentity.from_root_extra({"log": config["log"]})
            assert identity is not None
            identity.verifiers()  # every vkey parses
        except MsmtError as exc:
            raise cli.Usage(f"{args.members}: [log] {exc.detail}") from exc
        except (ValueError, TypeError) as exc:
            raise cli.Usage(f"{args.members}: [log] has a verifier key that does not parse ({exc})") from exc
        extra["log"] = identity.to_root_extra()
    signed = gov.root_statement(members, _now_ms(), quorum=gov.Quorum(**quorum), extra=extra)
    gov.parse_entry(gov.Entry(signed, ()).to_bytes())  # every field checked before anyone signs
    Path(args.output).write_bytes(gov.Entry(signed, ()).to_bytes())
    print(
        f"wrote the unsigned root for {len(members)} founders to {args.output}; each founder runs "
        f"`msmt governance root sign {args.output}`"
    )
    return cli.EXIT_OK


def cmd_root_sign(args: argparse.Namespace) -> int:
    keys = cli.load_keys(args)
    path = Path(args.draft)
    entry = gov.parse_entry(ui.read_bytes(path, "root file"))
    if entry.type != "root":
        raise cli.Usage(f"{path} is not a root")
    member = entry.signed["members"].get(keys.country)
    if member is None:
        raise cli.Usage(f"{keys.country} is not a member of this root")
    if member["keys"]["signing"] != canonical.b64encode(keys.signing.public_key.raw):
        raise cli.Usage(f"this root lists another signing key for {keys.country} than the one in {args.keys}")
    print(_describe(dict(entry.signed)), file=sys.stderr)
    entry = entry.with_signature(gov.sign(entry.signed, keys.country, keys.signing))
    path.write_bytes(entry.to_bytes())
    signed_by = sorted({s.signer for s in entry.signatures})
    print(
        f"{keys.country} signed; {len(signed_by)} of {len(entry.signed['members'])} founders have: {', '.join(signed_by)}"
    )
    return cli.EXIT_OK


def cmd_root_check(args: argparse.Namespace) -> int:
    data = ui.read_bytes(args.root, "root file")
    entry = gov.parse_entry(data)
    gaps = gov.missing(None, entry)
    if gaps:
        print("not complete: " + "; ".join(gaps), file=sys.stderr)
        return cli.EXIT_ERROR
    print(f"complete: every founder signed; fingerprint {root_fingerprint(data)}")
    return cli.EXIT_OK


# --- proposals -------------------------------------------------------------------------------


def _verified(client: Any) -> gov.DirectoryState:
    state: gov.DirectoryState = client.directory(refresh=True).state
    return state


def _post(client: Any, args: argparse.Namespace, entry: gov.Entry) -> int:
    result = client.propose(entry.to_bytes())
    _report(args, result)
    return cli.EXIT_OK


def _report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json:
        cli.emit(args, result)
        return
    state = result["state"]
    print(f"proposal {result['id'][:16]}… ({result['type']} {result.get('country') or ''}): {state}")
    print(f"  signed by: {', '.join(result['signers']) or 'nobody yet'}")
    for gap in result.get("missing", []):
        print(f"  missing: {gap}")


def _keys_from(folder: str, code: str) -> dict[str, str]:
    keys = _public_keys(Path(folder), code)
    return {kind.value: canonical.b64encode(key.raw) for kind, key in keys.items()}


def cmd_propose(args: argparse.Namespace) -> int:
    keys = cli.load_keys(args)
    with cli.client_for(args) as client:
        state = _verified(client)
        code = args.country.upper()
        now = _now_ms()
        if args.what == "enrol":
            member = {
                "name": args.name or code,
                "status": "active",
                "accreditation": args.accreditation.upper(),
                "groups": sorted({g.upper() for g in args.group}),
                "keys": _keys_from(args.keys_from, code),
            }
            signed = gov.statement(state, "enrol-member", now, country=code, member=member)
        elif args.what == "update":
            changes: dict[str, Any] = {}
            if args.status:
                changes["status"] = args.status
            if args.accreditation:
                changes["accreditation"] = args.accreditation.upper()
            if args.group is not None and args.group != []:
                changes["groups"] = sorted({g.upper() for g in args.group})
            if args.name:
                changes["name"] = args.name
            if not changes:
                raise cli.Usage("nothing to change: give --status, --accreditation, --group or --name")
            signed = gov.statement(state, "update-member", now, country=code, changes=changes)
        elif args.what == "recover":
            signed = gov.statement(
                state, "recover-member", now, country=code, keys=_keys_from(args.keys_from, code)
            )
        else:
            signed = gov.statement(state, "force-revoke-key", now, country=code, key_id=args.key_id)
        print(_describe(signed), file=sys.stderr)
        return _post(client, args, gov.Entry(signed, (gov.sign(signed, keys.country, keys.signing),)))


def cmd_list(args: argparse.Namespace) -> int:
    with cli.client_for(args) as client:
        rows = client.proposals("all" if args.all else "pending")
    table = [
        {
            "id": r["id"][:16],
            "type": r["type"],
            "country": r["country"] or "",
            "state": r["state"],
            "signers": ", ".join(r["signers"]),
            "missing": "; ".join(r["missing"]),
        }
        for r in rows
    ]
    cli.emit(args, rows, table)
    return cli.EXIT_OK


def _find(client: Any, pid: str) -> dict[str, Any]:
    if len(pid) == 64:
        found: dict[str, Any] = client.proposal(pid)
        return found
    matches = [p for p in client.proposals("pending") if p["id"].startswith(pid)]
    if len(matches) != 1:
        raise cli.Usage(f"{len(matches)} pending proposals start with {pid!r}; give more of the id")
    match: dict[str, Any] = matches[0]
    return match


def _checked_signed(state: gov.DirectoryState, proposal: dict[str, Any]) -> dict[str, Any]:
    """The signed part, checked to follow the head this agency verified before it signs."""
    signed: dict[str, Any] = canonical.decode(canonical.b64decode(proposal["signed"]))
    if gov.proposal_id(signed) != proposal["id"]:
        raise MsmtError("the broker's proposal does not hash to its id")
    gov.check(state, gov.parse_entry(gov.Entry(signed, ()).to_bytes()))
    return signed


def cmd_show(args: argparse.Namespace) -> int:
    with cli.client_for(args) as client:
        state = _verified(client)
        proposal = _find(client, args.id)
        signed = _checked_signed(state, proposal)
    if args.output:
        Path(args.output).write_bytes(canonical.encode(signed))
    view = {**proposal, "summary": _describe(signed)}
    view.pop("signed")
    cli.emit(args, view)
    return cli.EXIT_OK


def cmd_approve(args: argparse.Namespace) -> int:
    with cli.client_for(args) as client:
        if args.signature:
            signature = canonical.decode(ui.read_bytes(args.signature, "signature file"))
            proposal = _find(client, args.id)
        else:
            keys = cli.load_keys(args)
            state = _verified(client)
            proposal = _find(client, args.id)
            signed = _checked_signed(state, proposal)
            print(f"signing as {keys.country}: {_describe(signed)}", file=sys.stderr)
            signature = gov.sign(signed, keys.country, keys.signing).to_dict()
        _report(args, client.add_signature(proposal["id"], signature))
    return cli.EXIT_OK


def cmd_sign_offline(args: argparse.Namespace) -> int:
    """Sign a proposal file without talking to the broker (a newcomer's proof of possession)."""
    data = ui.read_bytes(args.file, "proposal file")
    keys = cli.load_keys(args)
    signed = canonical.decode(data)
    if not isinstance(signed, dict):
        raise cli.Usage(f"{args.file} is not the signed part of a proposal")
    print(f"signing as {keys.country}: {_describe(signed)}", file=sys.stderr)
    Path(args.output).write_bytes(canonical.encode(gov.sign(signed, keys.country, keys.signing).to_dict()))
    print(
        f"signature written to {args.output}; give it to a member to post with `msmt governance approve ID --signature`"
    )
    return cli.EXIT_OK


# --- own keys -----------------------------------------------------------------------------------


def cmd_rotate(args: argparse.Namespace) -> int:
    cli.broker_url(args)  # everything that can be checked is, before the new key is written
    overlap_ms = _duration_ms(args.overlap)
    folder = Path(args.keys)
    passphrase = cli.passphrase()
    keys = AgencyKeys.load(folder, passphrase)
    kind = KeyKind(args.kind)
    new: SigningPrivateKey | EncryptionPrivateKey | ApiPrivateKey
    if kind is KeyKind.SIGNING:
        new = SigningPrivateKey.generate()
    elif kind is KeyKind.ENCRYPTION:
        new = EncryptionPrivateKey.generate()
    else:
        new = ApiPrivateKey.generate()
    pending = folder / f"{kind.value}.key.pending"
    with cli.client_for(args, keys=keys) as client:
        state = _verified(client)  # the broker answers and its chain verifies: nothing written yet
        signed = gov.rotate_key(state, keys.country, new.public_key, _now_ms(), overlap_ms=overlap_ms)
        # the new private key is on disk before the directory names it: a crash cannot lose it
        pending.unlink(missing_ok=True)
        write_private_key(pending, new, keys.country, passphrase)
        sigs = [gov.sign(signed, keys.country, keys.signing)]
        if isinstance(new, SigningPrivateKey):
            sigs.append(gov.sign(signed, keys.country, new))
        result = client.propose(gov.Entry(signed, tuple(sigs)).to_bytes())
    if result["state"] != "applied":
        raise MsmtError(f"the rotation was not applied: {'; '.join(result['missing'])}")
    old = getattr(keys, kind.value)
    suffix = "key" if kind is KeyKind.ENCRYPTION else "key.retired"
    (folder / f"{kind.value}.key").rename(folder / f"{kind.value}-{old.key_id}.{suffix}")
    pending.rename(folder / f"{kind.value}.key")
    if kind is not KeyKind.ENCRYPTION:
        retired = folder / "retired-keys.txt"
        with retired.open("a") as out:
            out.write(f"{old.key_id}\n")
    fresh = AgencyKeys.load(folder, passphrase)
    (folder / f"{kind.value}.pub").write_bytes(fresh.public_documents()[kind.value])
    print(
        f"{keys.country}'s {kind.value} key is now {new.key_id} ({short_fingerprint(new.key_id)}); "
        f"the old one {old.key_id} stays valid for {args.overlap}"
    )
    return cli.EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    keys = cli.load_keys(args)
    with cli.client_for(args, keys=keys) as client:
        state = _verified(client)
        signed = gov.statement(state, "revoke-key", _now_ms(), country=keys.country, key_id=args.key_id)
        _report(
            args,
            client.propose(gov.Entry(signed, (gov.sign(signed, keys.country, keys.signing),)).to_bytes()),
        )
    return cli.EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    store = TrustStore.load(cli.trust_folder(args))
    if args.broker:  # bring the verified copy up to date first; without a broker, show what we have
        with cli.client_for(args, store) as client:
            client.directory(refresh=True)
    code = (args.country or "").upper()
    rows = []
    for data in store.entries:
        entry = gov.parse_entry(data)
        signed = dict(entry.signed)
        if code and entry.type != "root" and signed.get("country") != code:
            continue
        rows.append(
            {
                "seq": entry.seq,
                "when": cli.format_ms(int(signed["created_ms"])),
                "type": entry.type,
                "what": _describe(signed),
                "signed_by": ", ".join(sorted({s.signer for s in entry.signatures})),
            }
        )
    cli.emit(args, rows)
    return cli.EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    keys = cli.load_keys(args)
    store = TrustStore.load(cli.trust_folder(args))
    with cli.client_for(args, store, keys=keys, check_own=False) as client:
        directory = client.directory(refresh=True)
        foreign = client.foreign_own_keys(directory)
    if foreign:
        print(
            f"ALARM: the members' directory lists keys for {keys.country} that this agency did not make:",
            file=sys.stderr,
        )
        member = directory.members[keys.country]
        for key_id in foreign:
            entry = member.key(key_id)
            assert entry is not None
            print(
                f"  {entry.kind.value} {key_id} ({short_fingerprint(key_id)}) from entry {entry.introduced_seq}",
                file=sys.stderr,
            )
        return EXIT_ALARM
    print(
        f"ok: every key the directory lists for {keys.country} is one this agency made (verified up to entry {directory.state.seq})"
    )
    return cli.EXIT_OK


# --- parser -------------------------------------------------------------------------------------


def register(sub: Any, keys_sub: Any) -> None:
    trust = sub.add_parser("trust", help="pin the members' root and show the verified directory")
    tsub = trust.add_subparsers(dest="trust_command", required=True, metavar="ACTION")
    p = tsub.add_parser(
        "init", help="pin the founders' signed root after comparing its fingerprint out of band"
    )
    p.add_argument("root", help="the root file the founders signed")
    p.add_argument(
        "--fingerprint", help="the fingerprint read to you out of band; pinning fails on a mismatch"
    )
    p.add_argument("--yes", action="store_true", help="pin without --fingerprint (you compared it yourself)")
    p.add_argument("--force", action="store_true", help="replace an already pinned root")
    p.set_defaults(func=cmd_trust_init)
    p = tsub.add_parser("show", help="the pinned root's fingerprint and how far the chain is verified")
    p.add_argument("--refresh", action="store_true", help="fetch and verify the broker's chain first")
    p.set_defaults(func=cmd_trust_show)

    governance = sub.add_parser(
        "governance", help="propose, list and approve statements about members and keys"
    )
    gsub = governance.add_subparsers(dest="governance_command", required=True, metavar="ACTION")
    root = gsub.add_parser("root", help="the founders' root: draft it, sign it, check it")
    rsub = root.add_subparsers(dest="root_command", required=True, metavar="STEP")
    p = rsub.add_parser("draft", help="write the unsigned root from a members file (TOML)")
    p.add_argument(
        "members", help="TOML: [members.KOR] name, accreditation, groups, keys = folder of .pub files"
    )
    p.add_argument("--output", "-o", required=True, help="the root file to write")
    p.set_defaults(func=cmd_root_draft)
    p = rsub.add_parser("sign", help="add this agency's signature to a root file (after checking it)")
    p.add_argument("draft", help="the root file; it is rewritten with the signature added")
    p.set_defaults(func=cmd_root_sign)
    p = rsub.add_parser("check", help="exit 0 when every founder signed the root")
    p.add_argument("root", help="the root file")
    p.set_defaults(func=cmd_root_check)

    p = gsub.add_parser("propose", help="propose a change that needs a quorum of members, signed by you")
    p.add_argument("what", choices=["enrol", "update", "recover", "revoke"], help="the kind of change")
    p.add_argument("country", help="the member it is about")
    p.add_argument("--name", help="enrol/update: display name")
    p.add_argument("--accreditation", help="enrol/update: highest classification it may hold")
    p.add_argument("--group", action="append", default=[], help="enrol/update: groups (repeatable)")
    p.add_argument("--status", choices=["active", "suspended"], help="update: suspend or reactivate")
    p.add_argument("--keys-from", help="enrol/recover: folder with the member's COUNTRY.KIND.pub documents")
    p.add_argument("--key-id", help="revoke: the key to revoke by force")
    p.set_defaults(func=cmd_propose)
    p = gsub.add_parser("list", help="proposals waiting for signatures")
    p.add_argument("--all", action="store_true", help="also applied and stale ones")
    p.set_defaults(func=cmd_list)
    p = gsub.add_parser("show", help="one proposal, checked against your verified directory")
    p.add_argument("id", help="the proposal id (or an unambiguous prefix)")
    p.add_argument("--output", "-o", help="write the signed part here (for `sign-offline`)")
    p.set_defaults(func=cmd_show)
    p = gsub.add_parser("approve", help="sign a proposal with your signing key (or post a signature file)")
    p.add_argument("id", help="the proposal id (or an unambiguous prefix)")
    p.add_argument("--signature", help="post this signature file (from `sign-offline`) instead of signing")
    p.set_defaults(func=cmd_approve)
    p = gsub.add_parser("sign-offline", help="sign a proposal file without the broker (a newcomer's proof)")
    p.add_argument("file", help="the signed part, as `governance show -o` wrote it")
    p.add_argument("--output", "-o", required=True, help="where to write the signature")
    p.set_defaults(func=cmd_sign_offline)

    p = keys_sub.add_parser(
        "rotate", help="replace one of your keys by a statement you sign; no admin involved"
    )
    p.add_argument("--kind", required=True, choices=[k.value for k in KeyKind], help="which key to replace")
    p.add_argument("--overlap", default="0s", help="how long the old key stays valid, e.g. 7d (default 0s)")
    p.set_defaults(func=cmd_rotate)
    p = keys_sub.add_parser("revoke", help="revoke one of your own keys")
    p.add_argument("key_id", help="the key id to revoke")
    p.set_defaults(func=cmd_revoke)
    p = keys_sub.add_parser("history", help="every verified directory entry about a country (default: all)")
    p.add_argument("--country", help="only this country's entries (and roots)")
    p.set_defaults(func=cmd_history)
    p = keys_sub.add_parser(
        "check", help=f"alarm (exit {EXIT_ALARM}) if the directory lists a key of yours you did not make"
    )
    p.set_defaults(func=cmd_check)
