"""The request log's redaction skips its three searches when their fixed parts are absent:
that must mask exactly what running all three always would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.observability import _JWT, _PEM, _URL_PASSWORD, redact_text


def every_search(text: str) -> str:
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    text = _JWT.sub("[token]", text)
    return _PEM.sub("[key material]", text)


PARTS = [
    "postgresql://user:secret@db/x",
    "://",
    "eyJ",
    "eyJhbGciOi.eyJzdWIiOi.c2ln",
    "-----BEGIN PRIVATE KEY-----",
    "-----END PRIVATE KEY-----",
    "-----BEGIN ",
    ":pw@",
    "/v1/inbox",
    " ",
    "\n",
]
texts = st.lists(st.one_of(st.sampled_from(PARTS), st.text(max_size=12)), max_size=8).map("".join)


@given(texts)
def test_redaction_masks_what_every_search_masks(text: str) -> None:
    assert redact_text(text) == every_search(text)


def test_each_secret_is_still_masked() -> None:
    assert redact_text("postgresql://u:hunter2@h/d") == "postgresql://u:***@h/d"
    assert redact_text("Bearer eyJhbGciOi.eyJzdWIiOi.c2ln") == "Bearer [token]"
    assert (
        redact_text("a -----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY----- b")
        == "a [key material] b"
    )
    assert redact_text("/v1/inbox") == "/v1/inbox"
