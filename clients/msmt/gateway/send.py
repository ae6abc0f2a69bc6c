"""Sending what analysts POST to a writable TAXII collection: validated, checked against the
collection's marking default, sealed and submitted exactly as `msmt submit` does.

Each send profile of the configuration (`[send.NAME]`) is one writable collection. The objects
of a TAXII envelope POSTed to it become one STIX 2.1 bundle, validated object by object
(`stix.parse_bundle`), whose TLP 2.0 markings must agree with the profile's markings
(`stix.check_markings`: no object stricter than the envelope, no TLP:RED to ALL). Then
`Client.send` works out the recipients (the verified directory and our policy copy, narrowed
by the broker's preflight), seals, signs, keeps the envelope in the durable outbox and submits
it. A broker that cannot be reached leaves the item in the outbox (`SubmitPending`): the TAXII
status is "pending" and `Sender.resend` submits the same bytes later. The status resource is
kept in `gateway_submissions`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ..client import Receipt
from ..core import Markings
from ..errors import ClientError, SubmitPending
from ..outbox import Outbox
from . import stix
from .config import BUNDLE_TLP, SendProfile
from .store import Store, Submission, normal_version, now_ms, timestamp

log = logging.getLogger("msmt.gateway")


class SendingClient(Protocol):
    """What the sender needs of `msmt.client.Client`."""

    @property
    def outbox(self) -> Outbox: ...

    def send(
        self,
        payload: bytes,
        *,
        content_type: str,
        markings: Markings,
        recipients: Iterable[str] | None = None,
    ) -> Receipt: ...

    def resend_pending(self) -> list[Receipt]: ...


class BadSubmission(ClientError):
    """A POST body that is not a TAXII envelope (or STIX bundle) of objects."""

    code = "taxii-bad-envelope"


@dataclass(frozen=True)
class Prepared:
    bundle: dict[str, Any]
    payload: bytes
    markings: Markings


def bundle_of(body: Any) -> dict[str, Any]:
    """The STIX bundle a POST carries: a TAXII 2.1 envelope's objects (a bundle is taken too)."""
    if not isinstance(body, dict):
        raise BadSubmission("the body must be a TAXII envelope: a JSON object with 'objects'")
    if body.get("type") == "bundle":
        return body
    objects = body.get("objects")
    if not isinstance(objects, list) or not objects:
        raise BadSubmission("the TAXII envelope must carry a non-empty 'objects' list")
    unknown = set(body) - {"objects", "more", "next"}
    if unknown:
        raise BadSubmission(f"the TAXII envelope has unknown properties {sorted(unknown)[:5]}")
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}


def prepare(profile: SendProfile, body: Any) -> Prepared:
    """Validate the objects and check their TLP against the profile's markings; raises
    `stix.StixError` naming the offending object, or `BadSubmission`."""
    bundle = stix.parse_bundle(bundle_of(body))
    tlp = stix.derive_tlp(bundle) if profile.tlp == BUNDLE_TLP else profile.tlp
    markings = profile.markings(tlp)
    stix.check_markings(bundle, markings)
    return Prepared(bundle, json.dumps(bundle, separators=(",", ":")).encode(), markings)


def _versions(bundle: dict[str, Any], at_us: int) -> list[list[str]]:
    return [[str(o["id"]), normal_version(stix.object_version(o), at_us)] for o in bundle["objects"]]


class Sender:
    """Seals and submits POSTed bundles, one at a time, and keeps their status."""

    def __init__(self, client: SendingClient, store: Store, profiles: Iterable[SendProfile]) -> None:
        self.client = client
        self.store = store
        self.profiles = {p.name: p for p in profiles}
        self._lock = threading.Lock()

    def submit(self, profile: SendProfile, user: str, body: Any) -> Submission:
        """Send the POSTed objects; the submission as recorded (outcome sent or pending).
        Raises `stix.StixError`, `BadSubmission`, or the client's errors (nothing was sent)."""
        prepared = prepare(profile, body)
        return self.send_prepared(
            profile, user, prepared, prepared.payload, stix.STIX_MEDIA_TYPE, via="TAXII POST"
        )

    def send_prepared(
        self,
        profile: SendProfile,
        user: str,
        prepared: Prepared,
        payload: bytes,
        content_type: str,
        *,
        via: str,
    ) -> Submission:
        """Seal `payload` under the prepared markings for the profile's recipients and submit
        it, one conversation with the broker at a time; record the submission (sent, or pending
        in the outbox). `via` says who asked, for the log. Raises the client's errors."""
        request_us = time.time_ns() // 1000
        with self._lock:
            try:
                receipt = self.client.send(
                    payload,
                    content_type=content_type,
                    markings=prepared.markings,
                    recipients=profile.recipients,
                )
            except SubmitPending as exc:
                row = self._row(profile, user, request_us, prepared, exc.item_id, "pending", exc.cause)
                log.warning(
                    "%s by %s: item %s is pending in the outbox (%s)", via, user, exc.item_id, exc.cause
                )
            else:
                row = self._row(profile, user, request_us, prepared, receipt.item_id, "sent", _sent(receipt))
                row.recipients = json.dumps(sorted(receipt.recipients))
                row.log_index = receipt.log_index
                log.info(
                    "%s by %s to %s: %s sent as item %s to %s",
                    via,
                    user,
                    profile.name,
                    f"{len(prepared.bundle.get('objects', []))} object(s)"
                    if content_type == stix.STIX_MEDIA_TYPE
                    else f"a {content_type} payload",
                    receipt.item_id,
                    ", ".join(receipt.recipients),
                )
            self.store.add_submission(row)
        return row

    def preview_recipients(self, markings: Markings, recipients: Iterable[str] | None) -> set[str] | None:
        """Who the next send under these markings would be sealed for, or None when the client
        cannot say before sealing or another send holds the broker for more than 5 s."""
        previewing: Any = self.client  # msmt.client.Client has recipients_for; test doubles may not
        if not callable(getattr(previewing, "recipients_for", None)):
            return None
        if not self._lock.acquire(timeout=5):
            return None
        try:
            targets: set[str] = previewing.recipients_for(markings, recipients)
            return targets
        finally:
            self._lock.release()

    def _row(
        self,
        profile: SendProfile,
        user: str,
        request_us: int,
        prepared: Prepared,
        item_id: str,
        outcome: str,
        message: str,
    ) -> Submission:
        return Submission(
            status_id=str(uuid.uuid4()),
            profile=profile.name,
            requested_by=user[:128],
            request_us=request_us,
            item_id=item_id,
            outcome=outcome,
            objects=json.dumps(_versions(prepared.bundle, request_us)),
            tlp=prepared.markings.tlp,
            recipients="[]",
            log_index=None,
            message=message[:4000],
            updated_ms=now_ms(),
        )

    def resend(self) -> int:
        """Submit what the outbox still holds (the same bytes), then settle the pending
        submissions; how many were sent. Raises `SubmitPending` while the broker is away."""
        with self._lock:
            receipts = self.client.resend_pending() if self.client.outbox.pending() else []
            for receipt in receipts:
                self.store.settle_submission(
                    receipt.item_id,
                    "sent",
                    _sent(receipt),
                    recipients=receipt.recipients,
                    log_index=receipt.log_index,
                )
            self._settle_from_outbox()
        return len(receipts)

    def status(self, status_id: str) -> Submission | None:
        row = self.store.submission(status_id)
        if row is not None and row.outcome == "pending":
            with self._lock:
                self._settle_from_outbox()
            row = self.store.submission(status_id)
        return row

    def _settle_from_outbox(self) -> None:
        """A pending item no longer in the outbox was accepted (re-sent by `msmt outbox send`
        or another run), or refused for good (moved aside with the broker's reason)."""
        pending = self.store.pending_submissions()
        if not pending:
            return
        outbox = self.client.outbox
        waiting = {entry.item_id for entry in outbox.pending()}
        refused = {entry.item_id: entry.refusal or {} for entry in outbox.refused()}
        for row in pending:
            if row.item_id in waiting:
                continue
            if row.item_id in refused:
                reason = refused[row.item_id]
                self.store.settle_submission(
                    row.item_id,
                    "refused",
                    f"the broker refused it: {reason.get('code')}: {reason.get('detail')}",
                )
            else:
                self.store.settle_submission(
                    row.item_id, "sent", f"item {row.item_id} was accepted by the broker"
                )


def _sent(receipt: Receipt) -> str:
    where = f" (log index {receipt.log_index})" if receipt.log_index is not None else ""
    return f"sealed as item {receipt.item_id} for {', '.join(receipt.recipients)}{where}"


def status_resource(row: Submission) -> dict[str, Any]:
    """The TAXII 2.1 status resource (section 4.3.1) of a submission: every object of the
    item shares its fate."""
    objects = [{"id": object_id, "version": version} for object_id, version in json.loads(row.objects)]
    details = [{**o, "message": row.message} for o in objects]
    body: dict[str, Any] = {
        "id": row.status_id,
        "status": "pending" if row.outcome == "pending" else "complete",
        "request_timestamp": timestamp(row.request_us),
        "total_count": len(objects),
        "success_count": len(objects) if row.outcome == "sent" else 0,
        "failure_count": len(objects) if row.outcome == "refused" else 0,
        "pending_count": len(objects) if row.outcome == "pending" else 0,
    }
    key = {"sent": "successes", "refused": "failures", "pending": "pendings"}[row.outcome]
    body[key] = details
    return body
