"""Policy as a document: export -> apply -> export, plans, atomic apply, versions, history."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from broker import policydoc
from broker.problems import Problem
from broker.services import governance as governance_service
from broker.services import policy as policy_service
from broker.store.db import make_engine, make_sessionmaker, migrate, transaction
from msmt.core import Markings
from msmt.core.policy import evaluate

from .conftest import World, founders_root, postgresql_schema
from .policy_strategies import documents


@contextmanager
def fresh_database(backend: str, tmp: Path, n: int) -> Iterator[str]:
    if backend == "sqlite":
        # a new file per example: object ids (and so `n`) can repeat, and a reused file would
        # carry the previous example's state into the next one
        url = f"sqlite:///{tmp / f'policy-{n}-{uuid.uuid4().hex}.db'}"
        migrate(url)
        yield url
    else:
        with postgresql_schema() as url:
            migrate(url)
            yield url


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents())
def test_export_apply_export_is_the_identity(
    backend: str, tmp_path: Path, doc: policydoc.PolicyDocument
) -> None:
    with fresh_database(backend, tmp_path, id(doc)) as url:
        factory = make_sessionmaker(make_engine(url))
        with transaction(factory) as session:
            governance_service.install_root(
                session, "test", founders_root(doc.countries, 1_800_000_000_000), 1_800_000_000_000
            )
            policy_service.apply_document(session, "test", doc, 1_800_000_000_000)
        with factory() as session:
            exported = policy_service.export_document(session)
        assert exported == doc.normalized()
        assert policydoc.parse(policydoc.render(exported)) == exported  # the TOML round-trips too
        with transaction(factory) as session:
            again, no_version = policy_service.apply_document(session, "test", exported, 1_800_000_000_001)
        assert again.empty and no_version is None


def test_plan_names_changes_and_access(world: World) -> None:
    with make_sessionmaker(make_engine(world.url))() as session:
        current = policy_service.export_document(session)
    data = current.model_dump()
    data["agreements"].append(
        {"originator": "KOR", "recipient": "GBR", "ceiling": "CONFIDENTIAL", "topics": ["arms"]}
    )
    data["deny_rules"].append(
        {"id": "no-usa-cyber", "recipient": "USA", "topics": ["cyber"], "reason": "not now"}
    )
    plan = policydoc.plan(current, policydoc.from_dict(data))
    assert not plan.errors
    assert "agreement KOR->GBR: added, up to CONFIDENTIAL, arms" in plan.changes
    assert "deny rule no-usa-cyber: added (not now)" in plan.changes
    assert "KOR -> GBR gains CONFIDENTIAL (arms)" in plan.access
    assert any(line.startswith("KOR -> GBR loses") for line in plan.access)  # other topics now excluded
    assert any(line.startswith("KOR -> USA loses") and "cyber" in line for line in plan.access)


def test_membership_cannot_change_through_the_policy_document(world: World) -> None:
    """Accreditation, status, groups and membership are the members' to sign, not the admin's."""
    with make_sessionmaker(make_engine(world.url))() as session:
        current = policy_service.export_document(session)
    data = current.model_dump()
    data["countries"]["NZL"]["accreditation"] = "CONFIDENTIAL"
    data["countries"]["USA"]["groups"] = ["FIVE_EYES"]
    data["countries"]["SWE"] = {"name": "Sweden", "status": "active", "accreditation": "SECRET", "groups": []}
    plan = policydoc.plan(current, policydoc.from_dict(data))
    text = " | ".join(plan.errors)
    assert "country NZL: accreditation RESTRICTED -> CONFIDENTIAL cannot be changed here" in text
    assert "country USA: groups" in text and "country SWE cannot be enrolled here" in text
    assert "member-signed statements" in text


def test_invalid_documents_list_every_problem() -> None:
    with pytest.raises(policydoc.PolicyDocumentError) as info:
        policydoc.parse("""
ladder = ["LOW", "HIGH", "LOW"]
default_agreement = { ceiling = "TOP" }
agreements = [{ originator = "KOR", recipient = "KOR", ceiling = "HIGH" }]
[countries.KOR]
name = "Korea"
accreditation = "MIDDLE"
groups = ["KOR"]
""")
    text = " | ".join(info.value.errors)
    for expected in (
        "ladder repeats a level",
        "default_agreement: TOP is not on the ladder",
        "countries.KOR: MIDDLE is not on the ladder",
        "joins a country to itself",
        "group 'KOR' must be",
    ):
        assert expected in text
    with pytest.raises(policydoc.PolicyDocumentError, match="not valid TOML"):
        policydoc.parse("ladder = [")
    with pytest.raises(policydoc.PolicyDocumentError, match="surprise: Extra inputs"):
        policydoc.parse('ladder = ["A1"]\ndefault_agreement = { ceiling = "A1" }\nsurprise = 1\n')


def test_apply_is_atomic_and_refuses_removing_a_country(world: World) -> None:
    factory = make_sessionmaker(make_engine(world.url))
    with factory() as session:
        before = policy_service.export_document(session)
    data = before.model_dump()
    del data["countries"]["NZL"]
    data["default_agreement"]["ceiling"] = "SECRET"
    with pytest.raises(Problem) as info, transaction(factory) as session:
        policy_service.apply_document(session, "test", policydoc.from_dict(data), world.clock.ms)
    assert info.value.code == "policy-refused"
    with factory() as session:
        assert policy_service.export_document(session) == before


def test_agreement_changes_apply_forward_and_history_explains_the_past(world: World) -> None:
    confidential = Markings.create("CONFIDENTIAL", "AMBER", ["ALL"], topics=["maritime"])
    first = world.submit("KOR", world.seal("KOR", ["USA"], b"before", markings=confidential))
    assert first.status_code == 201

    # the admin lowers KOR->USA to RESTRICTED
    r = world.client.put(
        "/v1/admin/agreements/KOR/USA", json={"ceiling": "RESTRICTED"}, headers=world.auth("admin:alice")
    )
    assert r.status_code == 200, r.text
    world.clock.ms += 1
    refused = world.submit("KOR", world.seal("KOR", ["USA"], b"after", markings=confidential))
    assert refused.status_code == 403
    assert refused.json()["recipients"]["USA"][0]["rule"] == "above-agreement-ceiling"

    # the delivery made before the change stays in USA's inbox ...
    inbox = world.client.get("/v1/inbox", headers=world.auth("USA")).json()["deliveries"]
    assert [d["item_id"] for d in inbox] == [first.json()["item_id"]]
    # ... and the version recorded with it explains why it was allowed
    factory = make_sessionmaker(make_engine(world.url))
    with factory() as session:
        explained = policy_service.explain_item(session, first.json()["item_id"])
        _, now_doc = policy_service.document_at(session, 10**12)
    assert explained["decisions"] == [{"recipient": "USA", "allowed": True, "denials": []}]
    assert not evaluate(policydoc.to_snapshot(now_doc), "KOR", "USA", confidential).allowed


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_cli_plan_apply_round_trip(backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from broker.cli import main

    with fresh_database(backend, tmp_path, 0) as url:
        base = ["--database-url", url]
        countries = {
            "KOR": policydoc.CountryDoc(name="KOR", accreditation="SECRET"),
            "NZL": policydoc.CountryDoc(name="NZL", accreditation="RESTRICTED", groups=["FIVE_EYES"]),
        }
        root = tmp_path / "root.json"
        root.write_bytes(founders_root(countries, 1_800_000_000_000))
        assert main([*base, "directory", "install", str(root)]) == 0
        assert "2 founding members" in capsys.readouterr().out
        exported = tmp_path / "policy.toml"
        assert main([*base, "policy", "export", "-o", str(exported)]) == 0
        text = exported.read_text().replace('ceiling = "UNCLASSIFIED"', 'ceiling = "RESTRICTED"')
        proposed = tmp_path / "proposed.toml"
        proposed.write_text(text)
        capsys.readouterr()
        assert main([*base, "policy", "plan", str(proposed)]) == 0
        out = capsys.readouterr().out
        assert "default agreement: up to UNCLASSIFIED, all topics -> up to RESTRICTED, all topics" in out
        assert "KOR -> NZL gains RESTRICTED (all topics)" in out
        assert main([*base, "policy", "apply", str(proposed), "--yes"]) == 0
        assert "applied: policy version" in capsys.readouterr().out
        assert main([*base, "policy", "apply", str(proposed), "--yes"]) == 0
        assert "nothing to apply" in capsys.readouterr().out
        assert main([*base, "--json", "policy", "versions"]) == 0
        assert '"change": "apply-policy"' in capsys.readouterr().out


def test_policy_document_over_the_admin_api(world: World) -> None:
    admin, toml = world.auth("admin:alice"), {"Content-Type": "application/toml"}
    exported = world.client.get("/v1/admin/policy", headers=admin)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/toml")
    suspending = exported.text.replace(
        '[countries.NZL]\nname = "NZL"\nstatus = "active"',
        '[countries.NZL]\nname = "NZL"\nstatus = "suspended"',
    )
    assert suspending != exported.text
    refused = world.client.put(
        "/v1/admin/policy", content=suspending, headers={**world.auth("admin:alice"), **toml}
    )
    assert refused.status_code == 422 and refused.json()["type"] == "urn:msmt:problem:policy-refused"
    assert "member-signed statements" in " ".join(refused.json()["errors"])
    data = policydoc.parse(exported.text).model_dump()
    data["default_agreement"]["ceiling"] = "UNCLASSIFIED"
    document = policydoc.render(policydoc.from_dict(data))
    plan = world.client.post(
        "/v1/admin/policy/plan", content=document, headers={**world.auth("admin:alice"), **toml}
    )
    assert plan.status_code == 200, plan.text
    assert any(c.startswith("default agreement:") for c in plan.json()["changes"])
    assert any(line.startswith("KOR -> NZL loses") for line in plan.json()["access"])
    assert plan.json()["version"] is None
    assert world.client.get("/v1/admin/policy", headers=world.auth("admin:alice")).text == exported.text

    applied = world.client.put(
        "/v1/admin/policy", content=document, headers={**world.auth("admin:alice"), **toml}
    )
    assert applied.status_code == 200 and applied.json()["version"] > 0
    versions = world.client.get("/v1/admin/policy/versions", headers=world.auth("admin:alice")).json()
    assert versions[0]["change"] == "apply-policy" and versions[0]["actor"] == "admin:alice"
    # the lower default applies from the next request on
    refused_now = world.submit("KOR", world.seal("KOR", ["NZL"]))
    assert refused_now.status_code == 403, refused_now.text

    bad = world.client.put(
        "/v1/admin/policy", content=b"ladder = [", headers={**world.auth("admin:alice"), **toml}
    )
    assert bad.status_code == 422 and bad.json()["type"] == "urn:msmt:problem:invalid-policy"
    country = world.client.put("/v1/admin/policy", content=document, headers={**world.auth("KOR"), **toml})
    assert country.status_code == 403


def test_explain_item_over_the_admin_api(world: World) -> None:
    item = world.submit("KOR", world.seal("KOR", ["USA", "JPN"])).json()["item_id"]
    explained = world.client.get(f"/v1/admin/items/{item}/explain", headers=world.auth("admin:alice"))
    assert explained.status_code == 200, explained.text
    body = explained.json()
    assert [d["recipient"] for d in body["decisions"]] == ["JPN", "USA"]
    assert all(d["allowed"] for d in body["decisions"])
    assert world.client.get(f"/v1/admin/items/{item}/explain", headers=world.auth("KOR")).status_code == 403
