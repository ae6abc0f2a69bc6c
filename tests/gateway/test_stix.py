"""STIX 2.1 bundles and TLP 2.0 markings against the envelope's signed markings (issue 12)."""

from __future__ import annotations

import json

import pytest

from msmt.core import Markings
from msmt.gateway import stix
from msmt.gateway.stix import InvalidStix, MarkingConflict

from .stix_samples import bundle, indicator, vessel_report


def markings(tlp: str, releasable_to: tuple[str, ...] = ("USA",)) -> Markings:
    return Markings.create("RESTRICTED", tlp, list(releasable_to), topics=["maritime"])


def test_the_tlp_2_0_ids_are_the_oasis_ones() -> None:
    # extension-definition--60a3c5c5-... (oasis-open/cti-stix-common-objects, tlp-2.0)
    assert stix.TLP2_IDS["RED"] == "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1"
    assert stix.TLP2_IDS["CLEAR"] == "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487"
    assert stix.TLP2_IDS["AMBER+STRICT"] == "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003"
    for level in stix.TLP_ORDER:  # each official definition is valid STIX and reads as its level
        definition = stix.tlp2_definition(level)
        stix.parse_bundle(bundle(definition))
        assert stix.TLP_BY_ID[definition["id"]] == level


def test_a_tlp_red_bundle_cannot_go_as_clear_and_the_error_names_the_object() -> None:
    red = indicator("RED")
    data = stix.parse_bundle(json.dumps(bundle(indicator("GREEN"), red, levels=("GREEN", "RED"))).encode())
    with pytest.raises(MarkingConflict) as caught:
        stix.check_markings(data, markings("CLEAR"))
    assert caught.value.object_id == red["id"]
    assert red["id"] in str(caught.value) and "TLP:RED" in str(caught.value)
    assert caught.value.code == "stix-marking-conflict"


def test_tlp_red_content_cannot_be_releasable_to_all() -> None:
    red = vessel_report("RED")
    data = bundle(red, levels=("RED",))
    with pytest.raises(MarkingConflict) as caught:
        stix.check_markings(data, markings("RED", ("ALL",)))
    assert caught.value.object_id == red["id"]
    with pytest.raises(MarkingConflict):  # the envelope alone: RED to ALL
        stix.check_markings(bundle(indicator()), markings("RED", ("ALL",)))
    stix.check_markings(data, markings("RED", ("JPN", "USA")))  # named recipients: fine


def test_a_stricter_envelope_than_the_objects_is_fine() -> None:
    stix.check_markings(bundle(indicator("GREEN"), indicator()), markings("AMBER", ("ALL",)))


def test_amber_strict_is_stricter_than_amber() -> None:
    strict = indicator("AMBER+STRICT")
    with pytest.raises(MarkingConflict) as caught:
        stix.check_markings(bundle(strict), markings("AMBER"))
    assert caught.value.object_id == strict["id"]


def test_granular_and_tlp_1_0_markings_count_too() -> None:
    obj = indicator()
    obj["granular_markings"] = [{"marking_ref": stix.TLP2_IDS["RED"], "selectors": ["pattern"]}]
    assert stix.strictest_tlp(bundle(obj)) == "RED"
    legacy = indicator()
    legacy["object_marking_refs"] = [stix.TLP1_IDS["AMBER"]]
    assert stix.strictest_tlp(bundle(legacy)) == "AMBER"


def test_derive_tlp_is_the_strictest_and_not_clear_when_unmarked() -> None:
    assert stix.derive_tlp(bundle(indicator("GREEN"), vessel_report("AMBER+STRICT"))) == "AMBER+STRICT"
    assert stix.derive_tlp(bundle(indicator())) == "AMBER"
    assert stix.derive_tlp(bundle(indicator()), default="GREEN") == "GREEN"


def test_an_invalid_object_is_named() -> None:
    bad = indicator()
    bad["pattern"] = "[ipv4-addr:value = "
    with pytest.raises(InvalidStix) as caught:
        stix.parse_bundle(bundle(indicator(), bad))
    assert caught.value.object_id == bad["id"] and bad["id"] in str(caught.value)
    wrong_type = indicator()
    wrong_type["type"] = "malware"
    with pytest.raises(InvalidStix, match=wrong_type["id"]):
        stix.parse_bundle(bundle(wrong_type))


def test_a_fake_tlp_definition_is_refused() -> None:
    fake = stix.tlp2_definition("RED")
    fake["name"] = "TLP:CLEAR"
    fake["extensions"][stix.TLP_EXTENSION_ID]["tlp_2_0"] = "clear"
    with pytest.raises(InvalidStix, match=stix.TLP2_IDS["RED"]):
        stix.parse_bundle(bundle(fake))


@pytest.mark.parametrize(
    "payload", [b"not json", b"[]", b'{"type": "report"}', b'{"type": "bundle", "id": "x"}']
)
def test_not_a_bundle(payload: bytes) -> None:
    with pytest.raises(InvalidStix):
        stix.parse_bundle(payload)


def test_check_outgoing_only_looks_at_stix() -> None:
    assert stix.check_outgoing(b"# a report", "text/markdown", markings("CLEAR")) is None
    red = indicator("RED")
    with pytest.raises(MarkingConflict, match=red["id"]):
        stix.check_outgoing(
            json.dumps(bundle(red)).encode(), "application/stix+json;version=2.1", markings("AMBER")
        )


def test_the_stix_checks_need_no_server_dependency() -> None:
    """`Client.send` can run `check_outgoing` with only stix2 added to the agency's install."""
    import subprocess
    import sys

    code = "import sys, msmt.gateway.stix; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    assert not loaded & {"fastapi", "starlette", "sqlalchemy", "uvicorn", "broker", "pydantic"}
