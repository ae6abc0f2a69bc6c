"""A read-only TAXII 2.1 server over the gateway's database (OASIS TAXII 2.1, sections 4-5).

One API root (`/msmt/`), one collection per originator (its id a UUID derived from the
country code, its title the code), serving the STIX objects of the bundles that originator
sent this agency, verified and decrypted. Authentication: HTTP Basic or an API token
(`Authorization: Bearer|Token ...`) from the gateway's configuration. TLS is the agency's
proxy's job.

Endpoints: discovery `/taxii2/`, API root, collections, a collection, objects (`added_after`,
`limit`, `next`, `match[id|type|version|spec_version]`, with `X-TAXII-Date-Added-First/Last`),
an object, its versions, the manifest, status.

Each send profile of the configuration (`[send.NAME]`) adds a writable collection (`can_read:
false`, `can_write: true` for its writers): a POSTed envelope's objects are validated, checked
against the profile's markings, sealed and sent to partners (`msmt.gateway.send`), and the
answer is a status resource, `complete` once the broker accepted the item, `pending` while it
waits in the outbox. The received collections stay read-only.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..core.errors import MsmtError
from ..errors import BrokerError, BrokerUnavailable, PolicyRefused
from . import stix
from .config import Credentials, SendProfile
from .send import BadSubmission, Sender, status_resource
from .store import ObjectPage, Store, Submission, parse_timestamp_us, timestamp

TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
STIX_MEDIA_TYPE = "application/stix+json;version=2.1"
API_ROOT = "msmt"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CONTENT_LENGTH = 10 * 1024 * 1024
COLLECTION_NAMESPACE = uuid.UUID("5a0c3c43-7d0c-5a4f-9a52-3c7b0f0d6e11")  # msmt-gateway collections


def collection_id(originator: str) -> str:
    return str(uuid.uuid5(COLLECTION_NAMESPACE, f"msmt-gateway/collection/{originator}"))


def send_collection_id(profile: str) -> str:
    return str(uuid.uuid5(COLLECTION_NAMESPACE, f"msmt-gateway/send/{profile}"))


class TaxiiError(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        description: str = "",
        headers: dict[str, str] | None = None,
        *,
        error_code: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(title)
        self.status, self.title, self.description, self.headers = status, title, description, headers or {}
        self.error_code, self.details = error_code, details


def taxii(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=TAXII_MEDIA_TYPE, headers=headers)


def error_body(
    status: int,
    title: str,
    description: str = "",
    error_code: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A TAXII 2.1 error message (section 3.6.1)."""
    body: dict[str, Any] = {"title": title, "http_status": str(status)}
    if description:
        body["description"] = description
    if error_code:
        body["error_code"] = error_code
    if details:
        body["details"] = details
    return body


def _taxii_body(accepted: str | None) -> bool:
    """A POST's Content-Type: a TAXII 2.1 envelope (application/taxii+json;version=2.1)."""
    if not accepted:
        return False
    tokens = [t.strip().lower() for t in accepted.split(";")]
    params = {t.replace(" ", "") for t in tokens[1:]} - {"charset=utf-8"}
    return tokens[0] == "application/taxii+json" and params <= {"version=2.1"}


def _acceptable(accept: str | None) -> bool:
    """TAXII 2.1 clients ask for application/taxii+json;version=2.1; a bare type or */* is fine."""
    if not accept:
        return True
    for part in accept.split(","):
        tokens = [t.strip().lower() for t in part.split(";")]
        media, params = tokens[0], {t for t in tokens[1:] if not t.startswith("q=")}
        if media in ("*/*", "application/*") or (
            media == "application/taxii+json" and params <= {"version=2.1"}
        ):
            return True
    return False


def create_app(
    store: Store,
    credentials: Credentials,
    *,
    title: str = "MSMT agency gateway",
    sender: Sender | None = None,
) -> FastAPI:
    profiles: dict[str, SendProfile] = dict(sender.profiles) if sender is not None else {}
    writable = {send_collection_id(name): profile for name, profile in profiles.items()}

    def authenticated(request: Request) -> str:
        """The user or token name; 401 otherwise. Then 406 unless the client accepts TAXII 2.1."""
        who = _authenticate(credentials, request.headers.get("authorization", ""))
        if who is None:
            raise TaxiiError(
                401,
                "authentication required",
                "use HTTP Basic or an API token",
                {"WWW-Authenticate": 'Basic realm="msmt-gateway", charset="UTF-8"'},
            )
        if not _acceptable(request.headers.get("accept")):
            raise TaxiiError(406, "not acceptable", f"this server answers {TAXII_MEDIA_TYPE}")
        return who

    app = FastAPI(
        title=title, docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(authenticated)]
    )

    @app.exception_handler(TaxiiError)
    async def _taxii_error(_: Request, exc: TaxiiError) -> Response:
        body = error_body(exc.status, exc.title, exc.description, exc.error_code, exc.details)
        return taxii(body, exc.status, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return taxii(error_body(exc.status_code, str(exc.detail)), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return taxii(error_body(400, "invalid request", str(exc.errors())[:500]), 400)

    def find_collection(collection: str) -> str:
        for originator in store.collections():
            if collection_id(originator) == collection:
                return originator
        if collection in writable:
            raise TaxiiError(
                403,
                "write-only collection",
                f"collection {writable[collection].name!r} sends what is posted to it; it serves nothing",
            )
        raise TaxiiError(404, "no such collection", f"collection {collection[:80]} is not on this server")

    def describe_send(profile: SendProfile, who: str) -> dict[str, Any]:
        tlp = "the strictest TLP of its objects" if profile.tlp == "bundle" else f"TLP:{profile.tlp}"
        to = ", ".join(profile.recipients) if profile.recipients else "every partner the markings allow"
        return {
            "id": send_collection_id(profile.name),
            "title": f"send: {profile.name}",
            "description": f"objects posted here are sealed and sent through the MSMT broker as "
            f"{profile.classification}, {tlp}, releasable to {', '.join(profile.releasable_to)}, to {to}",
            "can_read": False,
            "can_write": who in profile.writers,
            "media_types": [STIX_MEDIA_TYPE],
        }

    def describe(originator: str) -> dict[str, Any]:
        return {
            "id": collection_id(originator),
            "title": originator,
            "description": f"STIX 2.1 objects {originator} sent this agency through the MSMT broker, "
            "verified and decrypted by this gateway",
            "can_read": True,
            "can_write": False,
            "media_types": [STIX_MEDIA_TYPE],
        }

    @app.get("/taxii2/")
    def discovery(request: Request) -> Response:
        root = str(request.url_for("api_root", api_root=API_ROOT))
        return taxii(
            {
                "title": title,
                "description": "what partners sent this agency through the MSMT broker",
                "default": root,
                "api_roots": [root],
            }
        )

    @app.get("/{api_root}/", name="api_root")
    def api_root(api_root: str) -> Response:
        _check_root(api_root)
        return taxii(
            {
                "title": f"{title}: received",
                "description": "one collection per originating member",
                "versions": [TAXII_MEDIA_TYPE],
                "max_content_length": MAX_CONTENT_LENGTH,
            }
        )

    @app.get("/{api_root}/status/{status_id}/")
    def status(api_root: str, status_id: str) -> Response:
        _check_root(api_root)
        row = sender.status(status_id) if sender is not None and len(status_id) <= 36 else None
        if row is None:
            raise TaxiiError(404, "no such status", f"no status resource {status_id[:80]} on this server")
        return taxii(status_resource(row))

    @app.get("/{api_root}/collections/")
    def collections(api_root: str, who: str = Depends(authenticated)) -> Response:
        _check_root(api_root)
        received = [describe(o) for o in store.collections()]
        return taxii({"collections": received + [describe_send(p, who) for p in profiles.values()]})

    @app.get("/{api_root}/collections/{collection}/")
    def collection(api_root: str, collection: str, who: str = Depends(authenticated)) -> Response:
        _check_root(api_root)
        if collection in writable:
            return taxii(describe_send(writable[collection], who))
        return taxii(describe(find_collection(collection)))

    @app.get("/{api_root}/collections/{collection}/objects/")
    def objects(api_root: str, collection: str, request: Request) -> Response:
        _check_root(api_root)
        page = _page(store, find_collection(collection), request)
        return _envelope(page, {"objects": page.objects})

    @app.post("/{api_root}/collections/{collection}/objects/")
    async def add_objects(
        api_root: str, collection: str, request: Request, who: str = Depends(authenticated)
    ) -> Response:
        _check_root(api_root)
        profile = writable.get(collection)
        if profile is None or sender is None:
            find_collection(collection)
            raise TaxiiError(
                403,
                "read-only collection",
                "this collection serves what partners sent; post to a 'send:' collection to send",
            )
        if who not in profile.writers:
            raise TaxiiError(403, "not a writer", f"{who} may not send through {profile.name!r}")
        if not _taxii_body(request.headers.get("content-type")):
            raise TaxiiError(415, "unsupported media type", f"post a TAXII envelope as {TAXII_MEDIA_TYPE}")
        body = await _read_body(request)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise TaxiiError(400, "invalid JSON", f"the body is not JSON: {exc}") from exc
        except RecursionError as exc:  # nesting deeper than the parser's stack: not a STIX bundle
            raise TaxiiError(400, "invalid JSON", "the body nests arrays or objects too deeply") from exc
        row = await run_in_threadpool(_submit, sender, profile, who, data)
        return taxii(status_resource(row), 202)

    @app.get("/{api_root}/collections/{collection}/objects/{object_id}/")
    def one_object(api_root: str, collection: str, object_id: str, request: Request) -> Response:
        _check_root(api_root)
        page = _page(store, find_collection(collection), request, object_id=object_id)
        if not page.objects and "next" not in request.query_params:
            raise TaxiiError(404, "no such object", f"{object_id[:300]} is not in this collection")
        return _envelope(page, {"objects": page.objects})

    @app.get("/{api_root}/collections/{collection}/objects/{object_id}/versions/")
    def versions(api_root: str, collection: str, object_id: str, request: Request) -> Response:
        _check_root(api_root)
        page = _page(store, find_collection(collection), request, object_id=object_id, default_version="all")
        if not page.objects and "next" not in request.query_params:
            raise TaxiiError(404, "no such object", f"{object_id[:300]} is not in this collection")
        return _envelope(page, {"versions": page.versions})

    @app.get("/{api_root}/collections/{collection}/manifest/")
    def manifest(api_root: str, collection: str, request: Request) -> Response:
        _check_root(api_root)
        page = _page(store, find_collection(collection), request)
        records = [
            {
                "id": obj["id"],
                "date_added": timestamp(added),
                "version": version,
                "media_type": STIX_MEDIA_TYPE,
            }
            for obj, added, version in zip(page.objects, page.added, page.versions, strict=True)
        ]
        return _envelope(page, {"objects": records})

    return app


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_CONTENT_LENGTH):
        raise TaxiiError(
            413, "too large", f"this server takes at most {MAX_CONTENT_LENGTH} bytes per request"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_CONTENT_LENGTH:
            raise TaxiiError(
                413, "too large", f"this server takes at most {MAX_CONTENT_LENGTH} bytes per request"
            )
    return bytes(body)


def _submit(sender: Sender, profile: SendProfile, who: str, data: Any) -> Submission:
    """`Sender.submit`, its refusals as TAXII errors (nothing was sent for any of them)."""
    try:
        return sender.submit(profile, who, data)
    except stix.StixError as exc:
        details = {"object_id": exc.object_id} if exc.object_id else None
        raise TaxiiError(422, "objects refused", exc.detail, error_code=exc.code, details=details) from exc
    except BadSubmission as exc:
        raise TaxiiError(400, "invalid envelope", exc.detail, error_code=exc.code) from exc
    except PolicyRefused as exc:
        reasons = "; ".join(
            f"{country}: {r.get('reason', '')}" for country, rs in exc.refusals.items() for r in rs
        )
        raise TaxiiError(
            422,
            "refused by policy",
            f"{exc.problem.get('detail', '')}: {reasons}",
            error_code="recipients-refused",
            details={"recipients": exc.refusals},
        ) from exc
    except BrokerUnavailable as exc:  # before sealing (a SubmitPending is a pending status)
        raise TaxiiError(
            503,
            "broker unavailable",
            f"nothing was sent: {exc.detail}",
            {"Retry-After": "30"},
            error_code=exc.code,
        ) from exc
    except BrokerError as exc:
        raise TaxiiError(
            502, "the broker refused the item", f"nothing was delivered: {exc.detail}", error_code=exc.code
        ) from exc
    except MsmtError as exc:
        raise TaxiiError(422, "cannot send", exc.detail, error_code=exc.code) from exc


def _check_root(api_root: str) -> None:
    if api_root != API_ROOT:
        raise TaxiiError(404, "no such API root", f"this server's API root is /{API_ROOT}/")


def _authenticate(credentials: Credentials, header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "basic" and value:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return credentials.basic(user, password) if sep else None
    if scheme.lower() in ("bearer", "token") and value:
        return credentials.token(value)
    return None


def _list(request: Request, name: str) -> list[str]:
    values: list[str] = []
    for raw in request.query_params.getlist(name):
        values += [v.strip() for v in raw.split(",") if v.strip()]
    return values


def _page(
    store: Store,
    originator: str,
    request: Request,
    *,
    object_id: str | None = None,
    default_version: str = "last",
) -> ObjectPage:
    params = request.query_params
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT))
    except ValueError as exc:
        raise TaxiiError(400, "invalid limit", "limit must be a positive integer") from exc
    if limit < 1:
        raise TaxiiError(400, "invalid limit", "limit must be a positive integer")
    added_after = params.get("added_after")
    try:
        after_us = parse_timestamp_us(added_after) if added_after else None
    except ValueError as exc:
        raise TaxiiError(400, "invalid added_after", str(exc)) from exc
    token = params.get("next")
    if token is not None and not token.isdigit():
        raise TaxiiError(400, "invalid next", "next must be a value this server returned")
    ids = [object_id] if object_id is not None else _list(request, "match[id]")
    return store.objects(
        originator,
        added_after_us=after_us,
        limit=min(limit, MAX_LIMIT),
        next_token=token,
        ids=ids,
        types=_list(request, "match[type]"),
        versions=_list(request, "match[version]") or [default_version],
        spec_versions=_list(request, "match[spec_version]"),
    )


def _envelope(page: ObjectPage, body: dict[str, Any]) -> Response:
    """A TAXII envelope; an empty page leaves out its list, as the specification allows."""
    data: dict[str, Any] = {"more": page.more}
    if page.next is not None:
        data["next"] = page.next
    if page.objects:
        data.update(body)
    headers = {}
    if page.added:
        headers["X-TAXII-Date-Added-First"] = timestamp(page.added[0])
        headers["X-TAXII-Date-Added-Last"] = timestamp(page.added[-1])
    return taxii(data, headers=headers)
