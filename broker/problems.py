"""RFC 9457 problem details: every error the API returns is one of these."""

from __future__ import annotations

from typing import Any

PROBLEM_TYPE_BASE = "urn:msmt:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """An error with a stable `type` code, an HTTP status and a human sentence.

    `retry_after`: seconds to wait before repeating the request (429 and 503 answers carry
    `Retry-After`, 1 s unless the problem says otherwise)."""

    def __init__(
        self, status: int, code: str, title: str, detail: str, *, retry_after: int | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.retry_after = retry_after
        self.extra = extra

    def headers(self) -> dict[str, str]:
        """The headers the answer carries besides its body."""
        if self.status == 401:
            return {"WWW-Authenticate": "Bearer"}
        if self.status in (429, 503):
            return {"Retry-After": str(self.retry_after or 1)}
        return {}

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


def unauthorized(code: str, detail: str) -> Problem:
    return Problem(401, code, "Authentication failed", detail)


def forbidden(code: str, detail: str, **extra: Any) -> Problem:
    return Problem(403, code, "Forbidden", detail, **extra)


def not_found(code: str, detail: str) -> Problem:
    return Problem(404, code, "Not found", detail)


def invalid(code: str, detail: str, **extra: Any) -> Problem:
    return Problem(422, code, "Invalid request", detail, **extra)


def gone(code: str, detail: str) -> Problem:
    """The thing existed and will not come back (410): a purged or expired envelope."""
    return Problem(410, code, "Gone", detail)


def conflict(code: str, detail: str) -> Problem:
    return Problem(409, code, "Conflict", detail)


def database_unavailable() -> Problem:
    """The store could not be reached or failed mid-request. For a write, whether it took
    effect is unknown: every write of the API is safe to repeat with the same body."""
    return Problem(
        503,
        "database-unavailable",
        "Service unavailable",
        "the broker's database is unavailable; retry shortly (repeating the same request is safe: "
        "a submission already stored is answered as a re-submission)",
    )
