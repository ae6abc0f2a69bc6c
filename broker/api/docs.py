"""Offline API documentation: Swagger UI at `/docs` and ReDoc at `/redoc`, served by the broker.

The agencies' networks are air-gapped, so nothing on these pages comes from anywhere but the
broker: the Swagger UI and ReDoc bundles are the files the `fastapi-offline` package ships
(read from the installed package, never copied into this tree), served under content-addressed
URLs (`/docs/assets/<sha256 prefix>/<name>`, cached for a year, `immutable`). The pages are
small HTML of our own with no inline script, and carry a Content-Security-Policy whose
`script-src` is `'self'` only; `connect-src 'self'` keeps "Try it out" on this broker.

ReDoc's bundle hard-codes one external URL, the Redocly logo in its sidebar footer; it is
rewritten to an empty `data:` URL when served, so the page makes no attempt to leave.

`install_docs` also completes the OpenAPI document: the bearer-token security scheme, set on
exactly the operations that authenticate, derived from each route's dependencies (a route is
authenticated when it resolves `current_caller`, directly or through `country_caller` /
`admin_caller`), so that a new route is documented correctly without anyone remembering to.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute

from ..problems import Problem, not_found
from .deps import current_caller

ASSET_PACKAGE = "fastapi_offline"  # PyPI: fastapi-offline (MIT): Swagger UI (Apache-2.0), ReDoc (MIT)
ASSET_PREFIX = "/docs/assets"
SECURITY_SCHEME = "bearerToken"
SECURITY_SCHEME_OBJECT: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": (
        "A JWT signed with EdDSA (Ed25519) by your country's API key, or by an admin key for "
        "`/v1/admin`. Paste the token alone, without `Bearer `. Each token is accepted **once** "
        "and lives at most 300 s: mint a fresh one for every request you execute (docs/api.md "
        "shows how)."
    ),
}

# Both pages: nothing from elsewhere; scripts only from files the broker serves.
_CSP_COMMON = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SWAGGER_CSP = _CSP_COMMON + "; style-src 'self'"
# ReDoc builds its styles at run time (styled-components inserts <style> elements, with no
# nonce support) and runs its search index in a worker made from a blob: URL.
REDOC_CSP = _CSP_COMMON + "; style-src 'self' 'unsafe-inline'; worker-src blob:"

_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_ASSET_CACHE = "public, max-age=31536000, immutable"

REDOC_LOGO = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'
REDOC_LOGO_OFFLINE = b'"data:,"'  # an empty image: ReDoc's onError hides the <img>

SWAGGER_INIT_JS = b"""\
/* Starts Swagger UI on the MSMT Broker's /docs page. A file of its own rather than an inline
   script, so that the page's Content-Security-Policy can allow scripts from 'self' only. */
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    deepLinking: true,
    validatorUrl: null,            /* no badge fetched from validator.swagger.io */
    persistAuthorization: false,   /* tokens are single-use: never kept in the browser */
    displayRequestDuration: true,
    showCommonExtensions: true
  });
})();
"""
DOCS_CSS = b"body { margin: 0; padding: 0; }\n"

# name -> (media type, where the bytes come from: None for this module's own files)
_SOURCES: dict[str, tuple[str, str | None]] = {
    "swagger-ui-bundle.js": ("text/javascript; charset=utf-8", "static/swagger-ui-bundle.js"),
    "swagger-ui.css": ("text/css; charset=utf-8", "static/swagger-ui.css"),
    "redoc.standalone.js": ("text/javascript; charset=utf-8", "static/redoc.standalone.js"),
    "swagger-init.js": ("text/javascript; charset=utf-8", None),
    "docs.css": ("text/css; charset=utf-8", None),
}
_OWN = {"swagger-init.js": SWAGGER_INIT_JS, "docs.css": DOCS_CSS}


@dataclass(frozen=True)
class Asset:
    name: str
    media_type: str
    body: bytes
    gzipped: bytes
    sha256: str

    @property
    def path(self) -> str:
        """Its URL path under the root path: changes whenever its bytes do."""
        return f"{ASSET_PREFIX}/{self.sha256[:16]}/{self.name}"

    def etag(self, encoding: str = "") -> str:
        return f'"{self.sha256}{encoding and "-" + encoding}"'


def _asset(name: str, media_type: str, body: bytes) -> Asset:
    return Asset(name, media_type, body, gzip.compress(body, 6, mtime=0), hashlib.sha256(body).hexdigest())


def package_file(relative: str) -> bytes:
    """A file of the assets package, exactly as installed."""
    return resources.files(ASSET_PACKAGE).joinpath(relative).read_bytes()


def load_assets() -> dict[str, Asset]:
    """Every file the two pages use, read once from the installed packages."""
    assets = {}
    for name, (media_type, source) in _SOURCES.items():
        body = _OWN[name] if source is None else package_file(source)
        if name == "redoc.standalone.js":
            body = body.replace(REDOC_LOGO, REDOC_LOGO_OFFLINE)
        assets[name] = _asset(name, media_type, body)
    return assets


class _Assets:
    """Loaded on first use (not at start-up: most broker processes never serve the docs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assets: dict[str, Asset] | None = None

    def get(self) -> dict[str, Asset]:
        with self._lock:
            if self._assets is None:
                try:
                    self._assets = load_assets()
                except (ModuleNotFoundError, FileNotFoundError) as exc:
                    raise Problem(
                        503,
                        "docs-unavailable",
                        "Service unavailable",
                        f"the API documentation's assets are not installed ({ASSET_PACKAGE}: {exc})",
                    ) from exc
            return self._assets

    async def aget(self) -> dict[str, Asset]:
        if self._assets is not None:
            return self._assets
        return await run_in_threadpool(self.get)


def _accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (RFC 9110 12.5.3)."""
    qualities: dict[str, float] = {}
    for part in header.lower().split(","):
        coding, _, params = part.partition(";")
        quality, params = 1.0, params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        qualities[coding.strip()] = quality
    return qualities.get("gzip", qualities.get("*", 0.0)) > 0


def _swagger_page(title: str, openapi_url: str, root: str, assets: dict[str, Asset]) -> str:
    e = html.escape
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{e(root + assets["swagger-ui.css"].path)}">
<link rel="stylesheet" href="{e(root + assets["docs.css"].path)}">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{e(openapi_url)}"></div>
<script src="{e(root + assets["swagger-ui-bundle.js"].path)}"></script>
<script src="{e(root + assets["swagger-init.js"].path)}"></script>
</body>
</html>
"""


def _redoc_page(title: str, openapi_url: str, root: str, assets: dict[str, Asset]) -> str:
    e = html.escape
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{e(root + assets["docs.css"].path)}">
</head>
<body>
<redoc spec-url="{e(openapi_url)}"></redoc>
<script src="{e(root + assets["redoc.standalone.js"].path)}"></script>
</body>
</html>
"""


def authenticates(dependant: Dependant) -> bool:
    """Whether answering resolves `current_caller`: the operation then needs a bearer token."""
    pending: list[Dependant] = list(dependant.dependencies)
    seen: set[int] = set()
    while pending:
        sub = pending.pop()
        if sub.call is current_caller:
            return True
        if id(sub) not in seen:
            seen.add(id(sub))
            pending.extend(sub.dependencies)
    return False


def api_operations(routes: Iterable[BaseRoute]) -> Iterator[tuple[str, set[str], Dependant]]:
    """(path, methods, dependant) of each documented API route, enumerated the way FastAPI's
    OpenAPI generator does: since FastAPI 0.16x an included router is one lazy entry whose
    routes (with the router's prefix and dependencies) come from `iter_route_contexts`."""
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    contexts: Iterable[Any] = iter_contexts(list(routes)) if iter_contexts is not None else routes
    for route in contexts:
        original = getattr(route, "original_route", route)
        if isinstance(original, APIRoute) and route.include_in_schema:
            yield route.path_format, set(route.methods or ()), route.dependant


def declare_security(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> None:
    """Add the bearer scheme to `schema` and require it on every authenticated operation."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[SECURITY_SCHEME] = (
        SECURITY_SCHEME_OBJECT
    )
    paths = schema.get("paths", {})
    for path, methods, dependant in api_operations(routes):
        if not authenticates(dependant):
            continue
        for method in methods:
            operation = paths.get(path, {}).get(method.lower())
            if operation is not None:
                operation["security"] = [{SECURITY_SCHEME: []}]


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve the offline documentation pages and complete the OpenAPI document.

    Create the app with `docs_url=None, redoc_url=None` (FastAPI's own pages load from a CDN)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            declare_security(generate(), app.routes)  # generate() caches it in app.openapi_schema
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point

    if app.openapi_url is None:
        return
    openapi_path = app.openapi_url
    cache = _Assets()

    def root_of(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = root_of(request)
        page = _swagger_page(f"{app.title} API", root + openapi_path, root, await cache.aget())
        return HTMLResponse(page, headers={**_PAGE_HEADERS, "Content-Security-Policy": SWAGGER_CSP})

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = root_of(request)
        page = _redoc_page(f"{app.title} API reference", root + openapi_path, root, await cache.aget())
        return HTMLResponse(page, headers={**_PAGE_HEADERS, "Content-Security-Policy": REDOC_CSP})

    @app.get(ASSET_PREFIX + "/{digest}/{name}", include_in_schema=False)
    async def asset(digest: str, name: str, request: Request) -> Response:
        found = (await cache.aget()).get(name)
        if found is None or found.sha256[:16] != digest:
            raise not_found("unknown-asset", "no such documentation asset")
        compressed = _accepts_gzip(request.headers.get("accept-encoding", ""))
        headers = {
            "Cache-Control": _ASSET_CACHE,
            "ETag": found.etag("gzip" if compressed else ""),
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "same-origin",
        }
        if found.sha256 in request.headers.get("if-none-match", ""):  # either encoding: same bytes
            return Response(status_code=304, headers=headers)
        if compressed:
            headers["Content-Encoding"] = "gzip"
            return Response(found.gzipped, media_type=found.media_type, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)
