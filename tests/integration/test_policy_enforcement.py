"""The broker enforces exactly the pure evaluator, and never delivers what a rule forbids."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from broker import policydoc
from broker.problems import Problem
from broker.services.auth import Caller
from broker.services.registry import RegistryCache
from broker.services.submit import submit
from broker.settings import Settings
from broker.store.db import make_engine, make_sessionmaker, transaction
from broker.store.models import Delivery, Item
from msmt.core import Markings, seal
from msmt.core.policy import evaluate

from .conftest import _KEYS, found
from .policy_strategies import documents, markings_for
from .test_policy_document import fresh_database


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_broker_decisions_equal_the_pure_evaluator(backend: str, tmp_path: Path, data: st.DataObject) -> None:
    doc = data.draw(documents())
    now = int(time.time() * 1000)
    with fresh_database(backend, tmp_path, id(doc)) as url:
        factory = make_sessionmaker(make_engine(url))
        with transaction(factory) as session:
            found(session, doc, now - 10)
        snapshot = policydoc.to_snapshot(doc)
        cache, settings_ = RegistryCache(), Settings(database_url=url)
        accepted: dict[str, set[str]] = {}
        for _ in range(3):
            markings = Markings.from_dict(data.draw(markings_for(doc)))
            origin = data.draw(st.sampled_from(sorted(doc.countries)))
            others = [c for c in sorted(doc.countries) if c != origin]
            envelope = seal(
                b"x",
                content_type="text/plain",
                markings=markings,
                recipients=[(c, _KEYS[c].encryption.public_key) for c in others],
                originator=origin,
                signing_key=_KEYS[origin].signing,
                created_ms=now,
            )
            expected = {c: evaluate(snapshot, origin, c, markings) for c in others}
            caller = Caller(origin, _KEYS[origin].api.key_id)
            try:
                receipt = submit(factory, cache, settings_, caller, envelope, now)
            except Problem as problem:
                assert problem.code == "recipients-refused", problem.detail
                refused = problem.extra["recipients"]
                assert set(refused) == {c for c, d in expected.items() if not d.allowed}
                for country, reasons in refused.items():
                    assert [r["rule"] for r in reasons] == [d.rule for d in expected[country].denials]
            else:
                assert all(d.allowed for d in expected.values()), "the broker accepted a forbidden recipient"
                accepted[receipt.item_id] = {c for c, d in expected.items() if d.allowed}
        with factory() as session:
            stored = session.execute(select(Item.item_id, Item.recipients)).all()
            delivered = session.execute(select(Delivery.recipient, Delivery.item_id)).all()
        # items (with the recipients the integrator will deliver to) exist exactly for accepted
        # items and their allowed recipients; refusals wrote nothing; nothing is delivered before
        # the integrator numbers it
        assert {i: set(rs.split(",")) for i, rs in stored} == accepted
        assert delivered == []
