"""The offline API docs and the OpenAPI document behind them (broker/api/docs.py).

- the bearer scheme is declared and required on exactly the operations that authenticate:
  checked against what the broker does (a request with no token), not against the code that
  declares it;
- every schema has an example, and every example is a valid instance of its model;
- `/docs` and `/redoc` load nothing from elsewhere: no inline script, a strict CSP, assets
  served by the broker with the right types and caching, byte for byte the packaged bundles;
- docs/api.md's token snippets make tokens the broker accepts.

The browser's view of the same pages is tests/e2e/test_docs_page.py.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from broker.api import docs, schemas
from broker.api.deps import CountryDep, admin_caller
from broker.app import create_app
from broker.settings import Settings
from msmt.core import write_private_key

from .conftest import _KEYS, bootstrap

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
PUBLIC = {"GET /v1/health"}  # at least these answer without a token
# The packaged bundles, reviewed and pinned: fastapi-offline 1.7.7 ships Swagger UI 5.32.6 and
# ReDoc 2.5.3. A new version of the package fails here until its bundles are looked at (no
# outside fetches: tests/e2e/test_docs_page.py) and these digests updated.
PACKAGED_SHA256 = {
    "static/swagger-ui-bundle.js": "4b5a9b35a1adf37f00d39c0bae23cdb37007e2946240ef035137cc85b4d55349",
    "static/swagger-ui.css": "ca238f7d7c2cf4480c1e77a9c3b9da915ab216e96ffd354e69076560c650c6de",
    "static/redoc.standalone.js": "1320f442151c57c447d3b70c7ffc6c4f86d08464020fe34c8cc5d3164e9944f0",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A broker with the 11 members (for the guide's tokens), at the URL the guide's tokens name."""
    url = f"sqlite:///{tmp_path_factory.mktemp('docs') / 'broker.db'}"
    bootstrap(url, int(time.time() * 1000))
    app = create_app(Settings(database_url=url, audience="http://127.0.0.1:8000"))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture(scope="module")
def openapi(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, items in document["paths"].items():
        for method, operation in items.items():
            yield method.upper(), path, operation


# --- the security scheme


def test_the_bearer_scheme_is_declared(openapi: dict[str, Any]) -> None:
    scheme = openapi["components"]["securitySchemes"]["bearerToken"]
    assert {k: scheme[k] for k in ("type", "scheme", "bearerFormat")} == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert "once" in scheme["description"]
    assert "security" not in openapi  # no global requirement: public operations stay public


def test_security_is_declared_on_exactly_the_operations_that_authenticate(
    client: TestClient, openapi: dict[str, Any]
) -> None:
    """Ask the broker itself: without a token, an operation that authenticates answers
    401 missing-token (before it reads a parameter or the body), any other does not."""
    secured, public, wrong = [], [], []
    for method, path, operation in operations(openapi):
        declared = operation.get("security") == [{"bearerToken": []}]
        assert operation.get("security") in (None, [{"bearerToken": []}]), (method, path)
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        answer = client.request(method, concrete)
        asked = answer.status_code == 401 and answer.json()["type"].endswith(":missing-token")
        (secured if declared else public).append(f"{method} {path}")
        if declared != asked:
            wrong.append(f"{method} {path}: declared {declared}, answered {answer.status_code}")
    assert wrong == []
    assert set(public) >= PUBLIC
    assert {"POST /v1/items", "GET /v1/inbox", "GET /v1/log/checkpoint", "PUT /v1/admin/policy"} <= set(
        secured
    )
    assert len(secured) >= 30


def test_security_is_derived_from_dependencies_wherever_they_are_declared() -> None:
    """A route authenticates through its own parameters, its decorator, or its router; under
    any prefix; public neighbours stay public."""
    router = APIRouter(prefix="/v1/extra", dependencies=[Depends(admin_caller)])

    @router.get("/guarded")
    async def guarded() -> dict[str, str]:
        return {}

    inner = APIRouter()

    @inner.get("/mine")
    async def mine(caller: CountryDep) -> dict[str, str]:
        return {}

    @inner.get("/decorated", dependencies=[Depends(admin_caller)])
    async def decorated() -> dict[str, str]:
        return {}

    @inner.get("/open")
    async def open_() -> dict[str, str]:
        return {}

    app = FastAPI(docs_url=None, redoc_url=None)
    app.include_router(router)
    app.include_router(inner, prefix="/v2")
    docs.install_docs(app)
    document = app.openapi()
    security = {path: ops["get"].get("security") for path, ops in document["paths"].items()}
    assert security == {
        "/v1/extra/guarded": [{"bearerToken": []}],
        "/v2/mine": [{"bearerToken": []}],
        "/v2/decorated": [{"bearerToken": []}],
        "/v2/open": None,
    }
    assert app.openapi() is document  # generated once


# --- examples


def _schemas_without_examples(document: dict[str, Any]) -> list[str]:
    missing = [
        f"components.schemas.{name}"
        for name, schema in document["components"]["schemas"].items()
        if not (schema.get("examples") or "example" in schema)
    ]
    for method, path, operation in operations(document):
        bodies = [("request", operation.get("requestBody", {}))] + [
            (f"response {status}", response) for status, response in operation["responses"].items()
        ]
        for where, body in bodies:
            for media_type, content in body.get("content", {}).items():
                schema = content.get("schema", {})
                # a model written out in place (ProblemBody under application/problem+json);
                # a free-form `dict[str, Any]` answer (`/v1/health`) has no fields to show
                inline_model = "$ref" not in schema and "properties" in schema
                if inline_model and not (schema.get("examples") or "example" in schema):
                    missing.append(f"{method} {path} {where} {media_type}")
    return missing


def test_every_schema_has_an_example(openapi: dict[str, Any]) -> None:
    """Including FastAPI's own HTTPValidationError, should a route ever document it: the
    broker answers every invalid request with a problem (`responses=PROBLEMS`)."""
    assert _schemas_without_examples(openapi) == []


def test_the_example_check_notices_a_schema_without_one(openapi: dict[str, Any]) -> None:
    bare = json.loads(json.dumps(openapi))
    del bare["components"]["schemas"]["Receipt"]["examples"]
    assert _schemas_without_examples(bare) == ["components.schemas.Receipt"]


def _models() -> list[type[BaseModel]]:
    return [
        value
        for value in vars(schemas).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == schemas.__name__
        and value is not schemas.Strict
    ]


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.__name__)
def test_each_example_is_a_valid_instance_of_its_model(model: type[BaseModel]) -> None:
    """Parsed as JSON the way a request would be, and nothing in it ignored or changed (a
    misspelt field in a response example would otherwise pass unnoticed)."""
    examples = model.model_json_schema().get("examples")
    assert examples, f"{model.__name__} has no example"
    for example in examples:
        parsed = model.model_validate_json(json.dumps(example))
        assert parsed.model_dump(mode="json", exclude_unset=True) == example


# --- the pages and their assets


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_load_nothing_from_elsewhere(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    directives = response.headers["content-security-policy"].split(";")
    csp = {name: value for name, _, value in (d.strip().partition(" ") for d in directives)}
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    html = response.text
    assert "http://" not in html and "https://" not in html
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/docs/assets/' in attrs and body == "" for attrs, body in scripts)
    for url in re.findall(r'(?:src|href|spec-url|data-openapi-url)="([^"]+)"', html):
        assert url.startswith(("/docs/assets/", "/openapi.json", "data:")), url


def _asset_urls(client: TestClient) -> dict[str, str]:
    urls = re.findall(r'"(/docs/assets/[^"]+)"', client.get("/docs").text + client.get("/redoc").text)
    return {url.rsplit("/", 1)[1]: url for url in urls}


def test_assets_are_served_with_their_types_and_cached_for_good(client: TestClient) -> None:
    urls = _asset_urls(client)
    assert set(urls) == {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-init.js",
        "docs.css",
        "redoc.standalone.js",
    }
    for name, url in urls.items():
        plain = client.get(url, headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200, url
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        assert plain.headers["content-type"] == f"{kind}; charset=utf-8"
        assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert plain.headers["x-content-type-options"] == "nosniff"
        assert "content-encoding" not in plain.headers
        digest = hashlib.sha256(plain.content).hexdigest()
        assert url.split("/")[3] == digest[:16]  # content-addressed: new bytes, new URL
        assert plain.headers["etag"] == f'"{digest}"'
        packed = client.get(url, headers={"Accept-Encoding": "gzip"})
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.content == plain.content  # httpx decoded it
        again = client.get(url, headers={"If-None-Match": plain.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    stale = urls["swagger-ui.css"].replace("/docs/assets/", "/docs/assets/0000")
    assert client.get(stale).status_code == 404
    assert client.get(urls["swagger-ui.css"].replace("swagger-ui.css", "x.js")).status_code == 404


def test_gzip_is_served_only_when_accepted(client: TestClient) -> None:
    url = _asset_urls(client)["swagger-ui.css"]
    for header, compressed in (
        ("gzip", True),
        ("br, gzip;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("br", False),
        ("", False),
    ):
        response = client.get(url, headers={"Accept-Encoding": header})
        assert ("content-encoding" in response.headers) is compressed, header
        assert response.headers["vary"] == "Accept-Encoding"


def test_the_assets_are_the_packaged_bundles(client: TestClient) -> None:
    """Byte for byte what the pinned package ships, but for ReDoc's one outside URL."""
    urls = _asset_urls(client)
    for relative, expected in PACKAGED_SHA256.items():
        packaged = docs.package_file(relative)
        assert hashlib.sha256(packaged).hexdigest() == expected, f"{relative} changed: review it"
        served = client.get(urls[relative.rsplit("/", 1)[1]]).content
        if relative.endswith("redoc.standalone.js"):
            assert packaged.count(docs.REDOC_LOGO) == 1
            assert served == packaged.replace(docs.REDOC_LOGO, docs.REDOC_LOGO_OFFLINE)
        else:
            assert served == packaged
    redoc = client.get(urls["redoc.standalone.js"]).content
    assert b"cdn.redoc.ly" not in redoc and b"fonts.googleapis" not in redoc
    init = client.get(urls["swagger-init.js"]).content
    assert b"validatorUrl: null" in init and b"persistAuthorization: false" in init


def test_fastapis_own_cdn_pages_are_gone(client: TestClient) -> None:
    assert client.get("/docs/oauth2-redirect").status_code == 404
    for page in ("/docs", "/redoc"):
        assert "cdn.jsdelivr" not in client.get(page).text


def test_the_pages_and_assets_are_not_in_the_api_document(openapi: dict[str, Any]) -> None:
    assert not any(path.startswith(("/docs", "/redoc")) for path in openapi["paths"])


def test_without_the_assets_package_the_pages_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docs, "ASSET_PACKAGE", "no_such_package_for_docs")
    app = FastAPI(docs_url=None, redoc_url=None)
    from broker.app import _install_error_handlers

    _install_error_handlers(app)
    docs.install_docs(app)
    answer = TestClient(app).get("/docs")
    assert answer.status_code == 503
    assert answer.json()["type"].endswith(":docs-unavailable")


def test_gzip_bodies_are_deterministic() -> None:
    """The same bytes on every broker process (mtime 0): caches and ETags agree."""
    first, second = docs.load_assets(), docs.load_assets()
    assert all(first[n].gzipped == second[n].gzipped for n in first)
    assert gzip.decompress(first["docs.css"].gzipped) == docs.DOCS_CSS


# --- the guide's tokens


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)


def _run(snippet: str) -> tuple[str, dict[str, Any]]:
    namespace: dict[str, Any] = {"__name__": "docs_api_md"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, str(GUIDE), "exec"), namespace)
    return out.getvalue().strip(), namespace


@pytest.fixture
def key_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KOR's API key where the guide says it is (`kor-keys/api.key`), under a passphrase."""
    folder = tmp_path / "kor-keys"
    folder.mkdir()
    kdf = {"memory_kib": 19456, "iterations": 2, "lanes": 1}  # the floor: the test stays quick
    write_private_key(folder / "api.key", _KEYS["KOR"].api, "KOR", "correct horse", kdf=kdf)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MSMT_PASSPHRASE", "correct horse")
    return folder


def test_the_guide_has_its_three_snippets() -> None:
    assert len(_snippets()) == 3


def test_the_guides_unbound_token_works_once(client: TestClient, key_folder: Path) -> None:
    token, _ = _run(_snippets()[0])
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/directory", headers=auth).status_code == 200
    again = client.get("/v1/directory", headers=auth)
    assert again.status_code == 401 and again.json()["type"].endswith(":replayed-token")


def test_the_guides_bound_token_works_for_its_request_only(client: TestClient, key_folder: Path) -> None:
    token, namespace = _run(_snippets()[1])
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    other = client.post("/v1/preflight/explain", content=namespace["body"], headers=auth)
    assert other.status_code == 401 and other.json()["type"].endswith(":token-binding")
    answer = client.post("/v1/preflight", content=namespace["body"], headers=auth)
    assert answer.status_code == 200, answer.text
    assert "USA" in answer.json()["allowed"]


def test_the_guides_library_token_works(client: TestClient, key_folder: Path) -> None:
    token, _ = _run(_snippets()[2])
    assert client.get("/v1/inbox", headers={"Authorization": f"Bearer {token}"}).status_code == 200
