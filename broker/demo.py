"""The 11-country demo: a real broker process on SQLite, real keys, real envelopes.

    make demo        (or: python -m broker.demo [--keep DIR])

1. initialise a broker (schema, broker key, admin) in a fresh folder;
2. the 11 founders sign the directory's root with fresh keys and pin it; the admin sets a few
   agreements (the only thing about members it may set);
3. start `msmt-broker serve` as a separate process; KOR rotates its encryption key with no
   admin involved; the operator's attempt to swap USA's key is refused by KOR's client;
4. KOR, JPN and USA submit realistic items; the broker refuses what policy forbids;
5. every partner polls, verifies, decrypts and acknowledges; USA's agency gateway (a real
   `msmt-gateway serve` process) follows its inbox too, and `taxii2-client` reads the STIX
   sighting back from it over TAXII 2.1, object for object as KOR sealed it;
6. print the delivery matrix;
7. the eleven members publish a joint report: KOR drafts it (rule: 8 of 11), eight endorse it
   (one with a reservation), KOR writes the bundle and `msmt-verify` checks it offline; then
   stop the server.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import tomli_w
from sqlalchemy import text

from msmt import reports
from msmt.agency import AgencyKeys
from msmt.auth import mint_token
from msmt.client import Client
from msmt.core import (
    ApiPrivateKey,
    EncryptionPrivateKey,
    KeyKind,
    Markings,
    SigningPrivateKey,
    load_private_key_file,
    public_key_document,
    seal,
    short_fingerprint,
)
from msmt.core import governance as gov
from msmt.core import report as rp
from msmt.core.errors import GovernanceError
from msmt.core.logleaf import LogIdentity, LogSigner
from msmt.core.note import Ed25519Cosigner
from msmt.errors import PolicyRefused
from msmt.gateway.config import hash_token
from msmt.gateway.stix import TLP2_IDS, TLP_BY_ID, tlp2_definition
from msmt.gateway.store import Store
from msmt.trust import TrustStore, root_fingerprint
from msmt.witness import Witness, WitnessState, make_server

from . import cli
from .store.db import make_engine

MEMBERS = {
    "KOR": ("Republic of Korea", []),
    "USA": ("United States", ["G7", "FIVE_EYES"]),
    "JPN": ("Japan", ["G7"]),
    "FRA": ("France", ["G7", "EU"]),
    "GBR": ("United Kingdom", ["G7", "FIVE_EYES"]),
    "DEU": ("Germany", ["G7", "EU"]),
    "ITA": ("Italy", ["G7", "EU"]),
    "NLD": ("Netherlands", ["EU"]),
    "CAN": ("Canada", ["G7", "FIVE_EYES"]),
    "AUS": ("Australia", ["FIVE_EYES"]),
    "NZL": ("New Zealand", ["FIVE_EYES"]),
}
ACCREDITATION = {"KOR": "SECRET", "USA": "SECRET", "JPN": "SECRET", "GBR": "SECRET", "NZL": "RESTRICTED"}
AGREEMENTS = [  # originator, recipient, ceiling, topics (None = all)
    ("*", "*", "RESTRICTED", None),
    ("KOR", "USA", "SECRET", None),
    ("KOR", "JPN", "SECRET", None),
    ("JPN", "USA", "CONFIDENTIAL", None),
    ("JPN", "GBR", "CONFIDENTIAL", ["arms", "maritime"]),
    ("USA", "KOR", "SECRET", None),
    ("USA", "JPN", "SECRET", ["cyber", "finance"]),
    ("USA", "GBR", "SECRET", None),
]
AUDIENCE = "msmt-demo-broker"
LOG_ORIGIN = "msmt-demo-broker/log"
COLLATERAL = "not delivered: the whole submission was refused (nothing is stored on refusal)"
PASSPHRASE_ENV = "MSMT_DEMO_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret


@dataclass
class Outcome:
    title: str
    originator: str
    item_id: str | None = None
    delivered: dict[str, str] = field(default_factory=dict)  # country -> state
    refused: dict[str, str] = field(default_factory=dict)  # country -> reason


def say(text: str = "") -> None:
    print(text, flush=True)


def stix_bundle() -> bytes:
    sighting = {
        "type": "bundle",
        "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
        "objects": [
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
                "created": "2026-11-02T03:14:00.000Z",
                "modified": "2026-11-02T03:14:00.000Z",
                "name": "Ship-to-ship transfer, East China Sea",
                "description": "Tanker A (AIS dark 31 h) alongside tanker B at 29.9N 123.4E; hoses rigged.",
                "pattern": "[x-vessel:imo = '9000001'] AND [x-vessel:imo = '9000002']",
                "pattern_type": "stix",
                "valid_from": "2026-11-02T03:14:00Z",
                "object_marking_refs": [TLP2_IDS["GREEN"]],
            },
            {
                "type": "sighting",
                "spec_version": "2.1",
                "id": "sighting--ee20065d-2555-424f-ad9e-0f8428623c75",
                "created": "2026-11-02T03:20:00.000Z",
                "modified": "2026-11-02T03:20:00.000Z",
                "sighting_of_ref": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
                "count": 1,
                "object_marking_refs": [TLP2_IDS["GREEN"]],
            },
            tlp2_definition("GREEN"),  # the OASIS TLP 2.0 marking-definition the objects refer to
        ],
    }
    return json.dumps(sighting, indent=1).encode()


ARMS_REPORT = b"""# Arms transfer report 2026-117

**Summary.** Artillery shells observed loaded at Rajin port onto a general cargo vessel;
satellite imagery of 2026-10-28 and 2026-10-30 attached separately.

| date | place | observation |
|---|---|---|
| 2026-10-28 | Rajin, berth 3 | ~200 containers staged |
| 2026-10-30 | Rajin, berth 3 | vessel departed, draught +1.8 m |
"""

CYBER_REPORT = b"""# Cyber theft: exchange intrusion attributed to a DPRK-linked group

Wallet drain of USD 41 M on 2026-11-12; laundering through three bridges; indicators and
wallet clusters in annex A. Originator control: no onward sharing (ORCON).
"""


def run_demo(workdir: Path, port: int = 0) -> int:
    db_url = f"sqlite:///{workdir / 'broker.db'}"
    os.environ[PASSPHRASE_ENV] = "demo passphrase, not for production"
    agencies = {code: AgencyKeys.generate(code) for code in MEMBERS}

    say("== 1. Initialise the broker ==")
    base_args = ["--database-url", db_url]
    _cli(
        [
            *base_args,
            "init",
            "--admin",
            "operator",
            "--data-dir",
            str(workdir / "broker-keys"),
            "--passphrase-env",
            PASSPHRASE_ENV,
        ]
    )

    say("\n== 2. The founders sign the root of the member-governed directory ==")
    stores, witness_urls = _found_directory(workdir, agencies, base_args)
    for originator, recipient, ceiling, topics in AGREEMENTS:
        _cli(
            [
                *base_args,
                "--json",
                "agreement",
                "set",
                originator,
                recipient,
                "--ceiling",
                ceiling,
                "--topics",
                ",".join(topics) if topics else "*",
            ],
            quiet=True,
        )
    _cli([*base_args, "list", "countries"])
    say("")
    _cli([*base_args, "list", "agreements"])

    say("\n== 3. Start the broker server (a separate process) ==")
    with _server(db_url, workdir, witness_urls, port) as base_url:
        say(f"broker listening on {base_url}")
        clients = {
            code: Client(base_url, keys, trust=stores[code], audience=AUDIENCE)
            for code, keys in agencies.items()
        }
        try:
            _rotate(agencies, clients)
            _operator_key_swap(workdir, db_url, base_url, clients)
            outcomes = _exchange(agencies, clients)
            _receive(clients)
            checkpoint = clients["KOR"].log_checkpoint()
            note = clients["KOR"].trust.checkpoint_note or b""
            cosigned = [c for c in ("KOR", "USA", "JPN") if f" witness.{c.lower()}.example " in note.decode()]
            say(
                "  every receipt and every delivery above was proven to be in the transparency log, under "
                f"a checkpoint of {checkpoint.size} entries (root {checkpoint.root_hash.hex()[:16]}…) signed "
                f"with the log key the members pinned and cosigned by the witnesses of {', '.join(cosigned)}"
            )
            for outcome in outcomes:
                if outcome.item_id:
                    status = clients[outcome.originator].status(outcome.item_id)
                    outcome.delivered = {d["recipient"]: d["state"] for d in status["deliveries"]}
                    proofs = clients[outcome.originator].delivery_proofs(outcome.item_id)
                    signed = sorted(r for r, p in proofs.items() if p == "signed")
                    say(
                        f"  {outcome.originator} holds signed delivery receipts for {outcome.title!r} from {', '.join(signed)}"
                    )
            _gateway(workdir, agencies["USA"], base_url)
            _matrix(outcomes)
            verdict = _joint_report(workdir, clients)
        finally:
            for client in clients.values():
                client.close()
    say("\nbroker stopped")
    return 0 if verdict == 0 else 1


REPORT_MARKINGS = Markings.create("UNCLASSIFIED", "GREEN", ["ALL"])
ENDORSERS = ("KOR", "USA", "JPN", "FRA", "GBR", "DEU", "AUS", "NZL")  # 8 of 11: the quorum
RESERVATION = ("JPN", "JPN does not endorse the estimate of the cargo volume.")


def _joint_report(workdir: Path, clients: dict[str, Client]) -> int:
    """KOR drafts a report for all eleven (quorum 8), eight endorse it, KOR publishes the bundle
    and the reader's page into `workdir`, and `msmt-verify` (a separate process) checks it."""
    say("\n== 7. A joint report: drafted, endorsed by a quorum, published, verified offline ==")
    stores = {c: reports.ThreadStore(workdir / "reports" / c) for c in ENDORSERS}
    for code in ENDORSERS:  # the report threads start after what the demo already pulled
        stores[code].cursor = clients[code].inbox(0, limit=1000).cursor
    document = rp.new_document(
        title="Ship-to-ship transfers in the East China Sea, third quarter",
        body="# Findings\n\nThree night-time transfers between tankers with AIS switched off.\n",
        participants=MEMBERS,
        rule=rp.Rule("quorum", 8),
    )
    draft = reports.send_draft(clients["KOR"], document, REPORT_MARKINGS)
    stores["KOR"].add(draft)
    say(f"  KOR drafted report {document.manifest.report_id} for all 11 members; rule: 8 of 11 endorse")
    for code in ENDORSERS:
        reports.sync(clients[code], stores[code])
        held = reports.thread_status(stores[code].items(), clients[code].directory().state)
        version = held.report(document.manifest.report_id).latest
        reservation = RESERVATION[1] if code == RESERVATION[0] else ""
        stores[code].add(
            reports.send_endorsement(clients[code], version, REPORT_MARKINGS, reservation=reservation)
        )
    say(f"  endorsed by {', '.join(ENDORSERS)} ({RESERVATION[0]} with a reservation)")
    reports.sync(clients["KOR"], stores["KOR"])
    status = reports.thread_status(stores["KOR"].items(), clients["KOR"].directory().state)
    thread = status.report(document.manifest.report_id)
    bundle, verdict = reports.publish(thread, thread.version(1), list(clients["KOR"].trust.entries))
    path, page = workdir / "joint-report.msmt", workdir / "joint-report.html"
    path.write_bytes(bundle)
    say(f"  KOR wrote the publication bundle {path} ({len(bundle)} bytes)")
    result = subprocess.run(  # noqa: S603 - this interpreter, the demo's own paths
        [
            sys.executable,
            "-m",
            "msmt.verify",
            str(path),
            "--root-fingerprint",
            verdict.root_fingerprint,
            "--html",
            str(page),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (result.stdout or result.stderr).splitlines()
    say(f"  msmt-verify (offline, exit {result.returncode}): {lines[0] if lines else '(no output)'}")
    if result.returncode == 0:
        say(f"  the reader's page: {page}")
    return result.returncode


def _found_directory(
    workdir: Path, agencies: dict[str, AgencyKeys], base_args: list[str]
) -> tuple[dict[str, TrustStore], str]:
    """The founders list themselves and their keys, each signs, each pins; the broker installs it."""
    now = int(time.time() * 1000)
    members = {
        code: gov.member_body(
            name,
            ACCREDITATION.get(code, "CONFIDENTIAL"),
            groups,
            {
                KeyKind.SIGNING: agencies[code].signing.public_key,
                KeyKind.ENCRYPTION: agencies[code].encryption.public_key,
                KeyKind.API: agencies[code].api.public_key,
            },
        )
        for code, (name, groups) in MEMBERS.items()
    }
    # The operator made the log key at init; its verifier keys go into the root the members
    # sign, so a checkpoint is trusted only under the key the members pinned.
    log_seed = secrets.token_bytes(64)
    log_key = workdir / "broker-keys" / "log.key"
    log_key.write_text(base64.b64encode(log_seed).decode())
    log_key.chmod(0o600)
    identity = LogSigner.from_seed(LOG_ORIGIN, log_seed).identity()
    # Three members run a witness; the root requires two of them to cosign every checkpoint a
    # client relies on.
    witnesses = _start_witnesses(workdir, identity)
    identity = identity.with_witnesses([(c, w.vkeys[0]) for c, (w, _) in witnesses.items()], threshold=2)
    entry = gov.Entry(gov.root_statement(members, now, extra={"log": identity.to_root_extra()}), ())
    for code, agency in agencies.items():
        entry = entry.with_signature(gov.sign(entry.signed, code, agency.signing))
    root = entry.to_bytes()
    fingerprint = root_fingerprint(root)
    say("  11 founders listed with their keys; quorum for changes: 2/3 of the active members (8 of 11)")
    say(f"  each founder signed the same root: {', '.join(agencies)}")
    say(f"  root fingerprint, read aloud between the founders: {fingerprint}")
    say(f"  the root also pins the broker's transparency log ({LOG_ORIGIN}): Ed25519 + ML-DSA-65 keys,")
    say(f"  and the member witnesses of {', '.join(witnesses)} (msmt witness), 2 of which must cosign")
    stores = {}
    for code in agencies:
        stores[code] = TrustStore.pin(
            root, workdir / "trust" / code
        )  # `msmt trust init ROOT --fingerprint FP`
    say("  every agency pinned it (msmt trust init); the broker only stores and serves it:")
    path = workdir / "root.json"
    path.write_bytes(root)
    _cli([*base_args, "directory", "install", str(path)])
    urls = ";".join(f"{w.name}={url}" for w, url in witnesses.values())
    return stores, urls


def _start_witnesses(workdir: Path, identity: LogIdentity) -> dict[str, tuple[Witness, str]]:
    """KOR, USA and JPN each run `msmt witness` (here as threads of the demo process)."""
    started = {}
    for code in ("KOR", "USA", "JPN"):
        cosigner = Ed25519Cosigner.from_seed(f"witness.{code.lower()}.example", secrets.token_bytes(32))
        state = WitnessState(workdir / f"witness-{code}.db")
        witness = Witness(cosigner.name, cosigner, {identity.origin: identity.verifiers()}, state)
        server = make_server(witness, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started[code] = (witness, f"http://127.0.0.1:{server.server_address[1]}")
    return started


def _rotate(agencies: dict[str, AgencyKeys], clients: dict[str, Client]) -> None:
    say("\n== 3a. KOR rotates its encryption key: a statement signed by KOR, no admin involved ==")
    kor = clients["KOR"]
    old = agencies["KOR"]
    new_key = EncryptionPrivateKey.generate()
    state = kor.directory(refresh=True).state
    signed = gov.rotate_key(state, "KOR", new_key.public_key, int(time.time() * 1000), overlap_ms=3_600_000)
    result = kor.propose(gov.Entry(signed, (gov.sign(signed, "KOR", old.signing),)).to_bytes())
    rotated = AgencyKeys(
        "KOR",
        old.signing,
        new_key,
        old.api,
        {**old.previous_encryption, old.encryption.key_id: old.encryption},
    )
    agencies["KOR"] = kor.keys = rotated
    say(
        f"  directory entry {result['seq']} {result['state']}: KOR encryption key "
        f"{short_fingerprint(old.encryption.key_id)} -> {short_fingerprint(new_key.key_id)} "
        "(the old key stays in KOR's key folder, so old items still open)"
    )


def _operator_key_swap(workdir: Path, db_url: str, base_url: str, clients: dict[str, Client]) -> None:
    say("\n== 3b. The operator tries to swap USA's encryption key for one it holds ==")
    operator_key = EncryptionPrivateKey.generate()
    _, admin_key = load_private_key_file(
        workdir / "broker-keys" / "admin-operator.key", os.environ[PASSPHRASE_ENV]
    )
    assert isinstance(admin_key, ApiPrivateKey)
    token = mint_token(admin_key, "admin:operator", AUDIENCE)
    r = httpx.post(
        f"{base_url}/v1/admin/keys",
        json=json.loads(public_key_document("USA", operator_key.public_key)),
        headers={"Authorization": f"Bearer {token}"},
    )
    say(
        f"  through the admin API: {r.status_code} {r.json()['type'].rsplit(':', 1)[-1]}: {r.json()['detail']}"
    )
    kor = clients["KOR"]
    state = kor.directory(refresh=True).state
    signed = gov.rotate_key(state, "USA", operator_key.public_key, state.updated_ms + 1)
    forged = gov.signed_entry(signed, [("USA", SigningPrivateKey.generate())])
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO directory_entries (seq, type, country, entry_hash, data, created_ms, applied_ms) "
                "VALUES (:s, 'rotate-key', 'USA', :h, :d, 0, 0)"
            ),
            {"s": state.seq + 1, "h": gov.entry_hash(forged), "d": forged},
        )
    say("  straight into the database: a directory entry naming the operator's key for USA")
    try:
        kor.send(
            b"for USA", content_type="text/plain", markings=Markings.create("RESTRICTED", "AMBER", ["USA"])
        )
    except GovernanceError as exc:
        say(f"  KOR's client refuses before sealing anything ({exc.code}):\n    {exc.detail}")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM directory_entries WHERE seq = :s"), {"s": state.seq + 1})
    engine.dispose()
    say("  the operator removes its entry; nothing was sealed to its key")


def _exchange(agencies: dict[str, AgencyKeys], clients: dict[str, Client]) -> list[Outcome]:
    say("\n== 4. Members send items (the client asks the broker's preflight, then seals and submits) ==")
    arms = Markings.create("CONFIDENTIAL", "AMBER", ["G7"], topics=["arms"])
    cyber = Markings.create("SECRET", "RED", ["KOR", "JPN", "GBR"], caveats=["ORCON"], topics=["cyber"])
    plans: list[tuple[str, str, bytes, str, Markings, list[str] | None]] = [
        (
            "Ship-to-ship transfer sighting (STIX 2.1)",
            "KOR",
            stix_bundle(),
            "application/stix+json",
            Markings.create("RESTRICTED", "GREEN", ["ALL"], topics=["maritime"]),
            None,
        ),
        (
            "Arms-transfer report (Markdown), asked for USA GBR FRA DEU",
            "JPN",
            ARMS_REPORT,
            "text/markdown",
            arms,
            ["USA", "GBR", "FRA", "DEU"],
        ),
        (
            "Arms-transfer report (Markdown), to every allowed partner",
            "JPN",
            ARMS_REPORT,
            "text/markdown",
            arms,
            None,
        ),
        (
            "Cyber-theft report (TLP:RED, ORCON), to every allowed partner",
            "USA",
            CYBER_REPORT,
            "text/markdown",
            cyber,
            None,
        ),
    ]
    outcomes = []
    for title, origin, payload, content_type, markings, recipients in plans:
        outcome = Outcome(title, origin)
        try:
            receipt = clients[origin].send(
                payload, content_type=content_type, markings=markings, recipients=recipients
            )
        except PolicyRefused as exc:
            say(f"  REFUSED  {origin}: {title}: nothing was sealed or sent")
            for country, reasons in exc.refusals.items():
                outcome.refused[country] = "; ".join(r["reason"] for r in reasons)
                say(f"           {country}: {outcome.refused[country]}")
            for country in recipients or []:
                outcome.refused.setdefault(country, COLLATERAL)
        else:
            outcome.item_id = receipt.item_id
            say(
                f"  accepted {origin}: {title} -> {', '.join(receipt.recipients)} (log index {receipt.log_index})"
            )
            if recipients is None:
                for country, reasons in clients[origin].preflight(markings).denied.items():
                    outcome.refused[country] = "; ".join(r["reason"] for r in reasons)
        outcomes.append(outcome)

    say("\n   A client that skips preflight cannot get past the broker either:")
    rogue = seal(
        CYBER_REPORT,
        content_type="text/markdown",
        markings=cyber,
        recipients=[(c, agencies[c].encryption.public_key) for c in ("KOR", "NZL")],
        originator="USA",
        signing_key=agencies["USA"].signing,
    )
    outcome = Outcome("Cyber-theft report sealed for KOR and NZL without preflight", "USA")
    try:
        clients["USA"].submit(rogue)
    except PolicyRefused as exc:
        say(f"  REFUSED  by the broker ({exc.code}): {exc.problem.get('detail')}")
        for country, reasons in exc.refusals.items():
            outcome.refused[country] = "; ".join(r["reason"] for r in reasons)
            say(f"           {country}: {outcome.refused[country]}")
        outcome.refused.setdefault("KOR", COLLATERAL)
    outcomes.append(outcome)
    return outcomes


def _receive(clients: dict[str, Client]) -> None:
    say(
        "\n== 5. Every partner polls, verifies (signature against the members' directory, entry in the log),"
        " decrypts, and signs a delivery receipt =="
    )
    for code, client in clients.items():
        page = client.inbox(after=0, limit=100)
        if not page.deliveries:
            say(f"  {code}: inbox empty")
            continue
        received_items = []
        for delivery in page.deliveries:
            received = client.open(delivery)
            received_items.append(received)
            header = received.opened.header
            say(
                f"  {code}: #{delivery.seq} from {header.originator} "
                f"[{header.markings.classification}/TLP:{header.markings.tlp}] {header.content_type}: "
                f'"{_summary(header.content_type, received.payload)}"'
            )
        client.confirm(received_items)  # signed receipts ("received and verified"), then acknowledged


def _summary(content_type: str, payload: bytes) -> str:
    if content_type == "application/stix+json":
        objects = json.loads(payload).get("objects", [])
        names = [o["name"] for o in objects if "name" in o]
        return f"STIX bundle, {len(objects)} objects: {names[0] if names else '-'}"[:70]
    return payload.decode("utf-8", "replace").strip().splitlines()[0][:60]


GATEWAY_WAIT_S = 1  # the follower's long-poll: short, so that SIGTERM stops the gateway within a second
GATEWAY_TIMEOUT_S = 30  # for the gateway to start, receive and serve the sighting
GATEWAY_TOKEN_NAME = "analyst-tools"  # noqa: S105 - a [tokens] name, not a secret
# The smallest Argon2id cost key files accept: the demo's throw-away keys, saved and loaded in a
# blink (`msmt keys generate` uses the default cost).
DEMO_KDF = {"memory_kib": 19456, "iterations": 2, "lanes": 1}


def _gateway(workdir: Path, keys: AgencyKeys, base_url: str) -> None:
    """A partner of the sighting runs `msmt-gateway serve` over its key folder and pinned root;
    the gateway follows its inbox at the broker, and `taxii2-client` reads the STIX back."""
    code, sender = keys.country, "KOR"
    say(
        f"\n== 5b. {code}'s agency gateway follows its inbox, keeps what it verified, "
        "serves the STIX over TAXII 2.1 =="
    )
    try:
        from taxii2client.common import TokenAuth  # type: ignore[import-untyped]
        from taxii2client.v21 import Server, as_pages  # type: ignore[import-untyped]
    except ImportError as exc:
        raise SystemExit(
            f"demo step failed: the gateway step reads TAXII with taxii2-client ({exc}); "
            "install the dev extra (pip install -e '.[dev]', as `make demo` does)"
        ) from None
    keys.save(workdir / "keys" / code, os.environ[PASSPHRASE_ENV], kdf=DEMO_KDF)  # `msmt keys generate`
    token = secrets.token_urlsafe(32)  # `msmt-gateway new-token analyst-tools`
    port = _free_port()
    database = workdir / f"gateway-{code}.db"
    config = workdir / f"gateway-{code}.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "broker_url": base_url,
                "audience": AUDIENCE,
                "keys": f"keys/{code}",
                "trust": f"trust/{code}",  # the root it pinned in step 2
                "database_url": f"sqlite:///{database}",
                "listen": f"127.0.0.1:{port}",
                "tokens": {GATEWAY_TOKEN_NAME: hash_token(token)},
            }
        )
    )
    url = f"http://127.0.0.1:{port}/taxii2/"
    sealed = json.loads(stix_bundle())["objects"]
    log_path = workdir / f"gateway-{code}.log"
    started = time.monotonic()
    with _gateway_process(config, log_path) as proc:
        say(
            f"  {code} runs `msmt-gateway serve --config {config.name} --wait {GATEWAY_WAIT_S}` (pid {proc.pid}): "
            f"its key folder keys/{code}, the root it pinned in trust/{code}, one [tokens] entry "
            f"({GATEWAY_TOKEN_NAME}); TAXII 2.1 on {url}"
        )
        deadline = started + GATEWAY_TIMEOUT_S
        read = _poll_taxii(
            Server, TokenAuth, as_pages, url, token, sender, len(sealed), proc, log_path, deadline
        )
        items = _stored(f"sqlite:///{database}", proc, log_path, deadline)
        elapsed = time.monotonic() - started
        for item in items:
            stix = ""
            if item.content_type == "application/stix+json":
                stix = (
                    f"; not served: {item.stix_error}"
                    if item.stix_error
                    else "; its objects indexed for TAXII"
                )
            say(
                f"  stored #{item.inbox_seq} from {item.originator} [{item.classification}/TLP:{item.tlp}] "
                f"{item.content_type}, log index {item.log_index}, signed with key "
                f"{short_fingerprint(item.signing_key_id)}{stix}"
            )
        say(
            f"  then a signed delivery receipt and an acknowledgement for each, after the commit "
            f"(cursor {max(i.inbox_seq for i in items)}; {elapsed:.1f} s after the process started)"
        )
        say(
            f'  taxii2-client (token "{GATEWAY_TOKEN_NAME}"): API root "{read["api_root"]}", collection '
            f"{read['title']} (id {read['id']}), {len(read['objects'])} objects in {read['pages']} page(s):"
        )
        for obj in read["objects"]:
            say(f"    {obj['id']:<56} {_tlp_label(obj):<17} {_object_label(obj)}")
        _check_objects(read["objects"], sealed, sender)
    ended = {
        0: "exit 0",
        -signal.SIGKILL: f"still running {GATEWAY_WAIT_S + 15} s later: killed",
    }
    say(f"  gateway stopped (SIGTERM: {ended.get(proc.returncode, f'exit {proc.returncode}')})")


def _poll_taxii(
    server_class: Any,
    token_auth: Any,
    as_pages: Any,
    url: str,
    token: str,
    originator: str,
    expected: int,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    deadline: float,
) -> dict[str, Any]:
    """Read the originator's collection over TAXII, again until it serves `expected` objects."""
    last = "no answer yet"
    while True:
        _check_running(proc, log_path)
        try:
            with server_class(url, auth=token_auth(token)) as server:
                api_root = server.api_roots[0]
                collection = next((c for c in api_root.collections if c.title == originator), None)
                if collection is None:
                    last = f"no {originator} collection yet"
                else:
                    pages = list(as_pages(collection.get_objects, per_request=100))
                    objects = [o for page in pages for o in page.get("objects", [])]
                    if len(objects) >= expected:
                        return {
                            "api_root": api_root.title,
                            "title": collection.title,
                            "id": collection.id,
                            "pages": len(pages),
                            "objects": objects,
                        }
                    last = f"{len(objects)} of {expected} objects served so far"
        except Exception as exc:  # not listening yet, or an error answer: ask again until the deadline
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise SystemExit(
                f"demo step failed: the gateway did not serve {originator}'s {expected} STIX objects over "
                f"TAXII within {GATEWAY_TIMEOUT_S} s (last: {last}); its log: {log_path}"
            )
        time.sleep(0.2)


def _stored(database_url: str, proc: subprocess.Popen[bytes], log_path: Path, deadline: float) -> list[Any]:
    """The gateway's items, once its cursor passed them all (receipts sent, acknowledged)."""
    store = Store(database_url, upgrade=False)
    try:
        while True:
            _check_running(proc, log_path)
            items = sorted(store.items(), key=lambda item: item.inbox_seq)
            if items and store.cursor() >= items[-1].inbox_seq:
                return items
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"demo step failed: the gateway stored {len(items)} item(s) but did not acknowledge "
                    f"them within {GATEWAY_TIMEOUT_S} s; its log: {log_path}"
                )
            time.sleep(0.1)
    finally:
        store.close()


def _check_running(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    if proc.poll() is not None:
        lines = log_path.read_text(errors="replace").strip().splitlines()
        raise SystemExit(
            f"demo step failed: msmt-gateway exited with code {proc.returncode}: "
            f"{lines[-1] if lines else '(no output)'}\n  its log: {log_path}"
        )


def _check_objects(received: list[dict[str, Any]], sealed: list[dict[str, Any]], originator: str) -> None:
    by_id = {o["id"]: o for o in sealed}
    got = {o["id"]: o for o in received}
    if len(received) == len(sealed) and got == by_id:
        say(f"  the {len(received)} objects read back are exactly those {originator} sealed, field for field")
        return
    differing = sorted(i for i in by_id.keys() | got.keys() if by_id.get(i) != got.get(i))
    raise SystemExit(
        f"demo step failed: the objects read back over TAXII differ from those {originator} sealed "
        f"({len(received)} read, {len(sealed)} sealed; differing: {', '.join(differing) or 'duplicates'})"
    )


def _tlp_label(obj: dict[str, Any]) -> str:
    if obj.get("type") == "marking-definition":
        return f"defines TLP:{TLP_BY_ID[obj['id']]}" if obj.get("id") in TLP_BY_ID else "a marking"
    levels = sorted({TLP_BY_ID[ref] for ref in obj.get("object_marking_refs", []) if ref in TLP_BY_ID})
    return "TLP:" + "/".join(levels) if levels else "no TLP marking"


def _object_label(obj: dict[str, Any]) -> str:
    if obj.get("type") == "marking-definition" and obj.get("id") in TLP_BY_ID:
        return "the OASIS TLP 2.0 marking-definition"
    if "name" in obj:
        return str(obj["name"])
    if obj.get("type") == "sighting":
        return f"sighting of {obj.get('sighting_of_ref')}, count {obj.get('count', '?')}"
    return str(obj.get("type"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _gateway_process(config: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`msmt-gateway serve` as its own process; stopped with SIGTERM (then killed if it hangs),
    whatever happens inside the block."""
    env = {**os.environ, "MSMT_PASSPHRASE": os.environ[PASSPHRASE_ENV]}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "msmt.gateway.cli",
                "serve",
                "--config",
                str(config),
                "--wait",
                str(GATEWAY_WAIT_S),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=GATEWAY_WAIT_S + 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _matrix(outcomes: list[Outcome]) -> None:
    say("\n== 6. Delivery matrix ==")
    say("  D = delivered, verified, decrypted, acknowledged   x = refused by policy")
    say("  - = not delivered: the submission was refused for another recipient   . = not addressed")
    codes = list(MEMBERS)
    say("  " + " ".join(f"{c:>3}" for c in codes) + "   item (originator)")
    for outcome in outcomes:
        cells = []
        for code in codes:
            if outcome.delivered.get(code) == "acknowledged":
                cells.append("  D")
            elif code in outcome.refused:
                cells.append("  -" if outcome.refused[code].startswith(COLLATERAL) else "  x")
            else:
                cells.append("  .")
        say("  " + " ".join(cells) + f"   {outcome.title} ({outcome.originator})")
    say("\n  Why each x (every rule that failed, as the broker's policy evaluator words it):")
    for outcome in outcomes:
        refused = {c: r for c, r in outcome.refused.items() if r != COLLATERAL}
        if refused:
            say(f"  {outcome.title} ({outcome.originator}):")
            for country in sorted(refused):
                say(f"    -> {country}: {refused[country]}")


def _cli(args: list[str], quiet: bool = False) -> None:
    if quiet:
        with open(os.devnull, "w") as sink:
            saved, sys.stdout = sys.stdout, sink
            try:
                code = cli.main(args)
            finally:
                sys.stdout = saved
    else:
        code = cli.main(args)
    if code != 0:
        raise SystemExit(f"demo step failed: msmt-broker {' '.join(args)}")


class _server:
    def __init__(self, db_url: str, workdir: Path, witness_urls: str = "", port: int = 0) -> None:
        self.db_url, self.workdir, self.witness_urls, self.port = db_url, workdir, witness_urls, port

    def __enter__(self) -> str:
        import socket

        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", self.port))  # 0: any free port
            except OSError as exc:
                raise SystemExit(f"cannot use port {self.port} for the broker: {exc.strerror}") from exc
            port = sock.getsockname()[1]
        env = {
            **os.environ,
            "MSMT_DATABASE_URL": self.db_url,
            "MSMT_AUDIENCE": AUDIENCE,
            "MSMT_LOG_ORIGIN": LOG_ORIGIN,
            "MSMT_LOG_KEY_FILE": str(self.workdir / "broker-keys" / "log.key"),
            "MSMT_WITNESS_URLS": self.witness_urls,
            "MSMT_LOG_SWEEP_INTERVAL_S": "0.1",
        }
        self.log = open(self.workdir / "broker.log", "wb")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "broker.cli", "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"broker failed to start; see {self.workdir / 'broker.log'}")
            try:
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    return base
            except httpx.TransportError:
                time.sleep(0.1)
        raise SystemExit("broker did not start within 30 s")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


PORT_ENV = "MSMT_DEMO_PORT"


def _port(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks a free one)")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m broker.demo", description="Run the 11-country MSMT demo."
    )
    parser.add_argument("--keep", metavar="DIR", help="keep the broker database, keys and log in DIR")
    parser.add_argument(
        "--port",
        type=_port,
        default=os.environ.get(PORT_ENV, "0"),
        help=f"port of the broker on 127.0.0.1 (env {PORT_ENV}; default 0: a free one)",
    )
    args = parser.parse_args(argv)
    if args.keep:
        workdir = Path(args.keep)
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        return run_demo(workdir, args.port)
    with tempfile.TemporaryDirectory(prefix="msmt-demo-") as tmp:
        return run_demo(Path(tmp), args.port)


if __name__ == "__main__":
    raise SystemExit(main())
