from __future__ import annotations

from typing import Any

from .schemas import ProblemBody

_CONTENT = {"application/problem+json": {"schema": ProblemBody.model_json_schema()}}
PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemBody, "description": text, "content": _CONTENT}
    for status, text in {
        401: "missing, invalid, expired or replayed token",
        403: "caller may not do this (see the problem type)",
        404: "not found in the caller's view",
        409: "conflicts with existing state",
        413: "body or envelope too large",
        422: "invalid request or envelope (see the problem type)",
    }.items()
}
