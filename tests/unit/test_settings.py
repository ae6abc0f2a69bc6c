"""MSMT_DATABASE_URL_FILE: the database URL from a secret file, never from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from broker.settings import Settings


def test_the_url_file_wins_over_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "database_url"
    secret.write_text("postgresql+psycopg://msmt:pw@db/msmt\n")
    monkeypatch.setenv("MSMT_DATABASE_URL", "sqlite:///other.db")
    monkeypatch.setenv("MSMT_DATABASE_URL_FILE", str(secret))
    assert Settings().database_url == "postgresql+psycopg://msmt:pw@db/msmt"


@pytest.mark.parametrize(("content", "words"), [(None, "cannot be read"), ("  \n", "is empty")])
def test_a_missing_or_empty_url_file_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, words: str
) -> None:
    secret = tmp_path / "database_url"
    if content is not None:
        secret.write_text(content)
    monkeypatch.setenv("MSMT_DATABASE_URL_FILE", str(secret))
    with pytest.raises(ValidationError, match=words) as info:
        Settings()
    assert str(secret) in str(info.value)
