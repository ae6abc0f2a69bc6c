"""The gateway's schema comes from its Alembic revisions, and a store an earlier gateway made
with `create_all` is taken over as it is (issue 12), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.orm import Session

from msmt.errors import ClientError
from msmt.gateway.cli import main
from msmt.gateway.config import hash_password
from msmt.gateway.store import (
    Base,
    Item,
    RejectedDelivery,
    State,
    StixObject,
    Store,
    _item,
    current_revision,
    follow_once,
    head_revision,
    migrate,
)
from tests.integration.conftest import postgresql_schema

from .stix_samples import bundle, indicator
from .support import FakeInbox, batch, received


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'gateway.db'}"
        else:
            yield stack.enter_context(postgresql_schema())


def differences(url: str) -> list[object]:
    """What the models say the schema is, against what the database holds."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))
    finally:
        engine.dispose()


def test_a_new_database_is_made_by_the_migrations(url: str) -> None:
    assert current_revision(url) is None
    assert migrate(url) is None
    assert current_revision(url) == head_revision() == "0002"
    assert differences(url) == []  # the revisions make exactly what the models describe
    assert migrate(url) == head_revision()  # again: nothing to do
    store = Store(url, upgrade=False)
    follow_once(FakeInbox([batch([received(1, bundle(indicator("GREEN"), levels=("GREEN",)))])]), store)
    assert len(store.items()) == 1
    store.close()


def test_a_store_made_by_create_all_is_taken_over(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # what the first gateway made: its tables from create_all (no withdrawals yet), no revision
    engine = create_engine(url)
    old = [Item.__table__, StixObject.__table__, RejectedDelivery.__table__, State.__table__]
    Base.metadata.create_all(engine, tables=old)  # type: ignore[arg-type]
    engine.dispose()
    item = received(1, bundle(indicator("GREEN"), levels=("GREEN",)))
    raw = create_engine(url)
    with Session(raw) as session, session.begin():  # an item and the cursor, as it wrote them
        session.add(_item(item, 1_000))
        session.add(State(key="inbox_cursor", value="1"))
    raw.dispose()
    assert current_revision(url) is None

    with pytest.raises(ClientError, match="msmt-gateway migrate"):
        Store(url, upgrade=False)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'broker_url = "https://broker.example"\nkeys = "keys"\ndatabase_url = "{url}"\n'
        f'[users]\nanalyst = "{hash_password("correct horse battery", n=2**10)}"\n'
    )
    assert main(["migrate", "--config", str(config)]) == 0
    assert "revision 0002 (it was at none)" in capsys.readouterr().out
    assert main(["migrate", "--config", str(config)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert current_revision(url) == head_revision()
    assert differences(url) == []
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"gateway_withdrawals", "gateway_submissions", "alembic_version"} <= tables

    store = Store(url, upgrade=False)  # the data it held is still there, and it goes on
    assert store.cursor() == 1
    stored = store.item(item.opened.header.item_id)
    assert stored is not None and json.loads(stored.markings)["tlp"] == "AMBER"
    follow_once(FakeInbox([batch([received(2, b"# more")])]), store)
    assert store.cursor() == 2 and len(store.items()) == 2
    store.close()
