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


@pytest.mark.parametrize(
    ("url", "cores", "set_to", "threads"),
    [
        ("sqlite:///broker.db", {0, 1}, 0, 1),  # the other core: the event loop and the writer
        ("sqlite:///broker.db", {0, 1, 2, 3}, 0, 3),
        ("sqlite:///broker.db", {0}, 0, 1),  # never none
        ("postgresql+psycopg://db/msmt", {0, 1}, 0, None),  # the request thread pool's limit
        ("sqlite:///broker.db", {0, 1}, 4, 4),  # what the operator set, on either store
        ("postgresql+psycopg://db/msmt", {0, 1}, 2, 2),
    ],
)
def test_envelope_checks_run_on_the_cores_to_spare(
    monkeypatch: pytest.MonkeyPatch, url: str, cores: set[int], set_to: int, threads: int | None
) -> None:
    """Where signatures are verified in the request's thread (no signature workers)."""
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: cores)
    settings = Settings(database_url=url, submit_prepare_threads=set_to, signature_workers=0)
    assert settings.prepare_threads() == threads


@pytest.mark.parametrize(
    ("url", "cores", "workers", "pool", "threads"),
    [
        ("sqlite:///broker.db", {0, 1}, -1, 2, 4),  # one worker per core; threads mostly wait
        ("sqlite:///broker.db", {0, 1, 2, 3}, -1, 4, 8),
        ("sqlite:///broker.db", {0}, -1, 0, 1),  # one core: no workers, checks as before
        ("postgresql+psycopg://db/msmt", {0, 1}, -1, 2, None),
        ("sqlite:///broker.db", {0, 1}, 3, 3, 6),  # what the operator set
        ("sqlite:///broker.db", {0, 1, 2, 3}, 0, 0, 3),
    ],
)
def test_signature_workers_one_per_core_where_there_are_several(
    monkeypatch: pytest.MonkeyPatch, url: str, cores: set[int], workers: int, pool: int, threads: int | None
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: cores)
    settings = Settings(database_url=url, signature_workers=workers)
    assert settings.signature_pool_size() == pool
    assert settings.prepare_threads() == threads


def test_signature_workers_below_minus_one_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(signature_workers=-2)
