from __future__ import annotations

import os

import pytest

from msmt.core import Markings, errors, open_envelope, parse, seal, verify

from .conftest import CountryKeys, synthetic_codes

MARKINGS = Markings.create("RESTRICTED", "AMBER", ["ALL"], topics=["maritime"])


def _seal(origin: CountryKeys, recipients: list[CountryKeys], payload: bytes, **extra: object) -> bytes:
    return seal(
        payload,
        content_type="application/octet-stream",
        markings=MARKINGS,
        recipients=[(r.country, r.encryption.public_key) for r in recipients],
        originator=origin.country,
        signing_key=origin.signing,
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("n_recipients", [1, 11, 50])
@pytest.mark.parametrize("size", [0, 1, 1024, 1024 * 1024])
def test_round_trip(countries: dict[str, CountryKeys], n_recipients: int, size: int) -> None:
    origin = countries["KOR"]
    codes = (
        synthetic_codes(n_recipients)
        if n_recipients != 11
        else ["USA", "JPN", "FRA", "GBR", "DEU", "ITA", "NLD", "CAN", "AUS", "NZL", "XAA"]
    )
    recipients = [countries[c] for c in codes]
    payload = os.urandom(size)
    data = _seal(origin, recipients, payload)
    header = verify(data, origin.signing.public_key).header
    assert header.recipient_countries == tuple(sorted(codes))
    assert header.originator == "KOR"
    for recipient in recipients:
        opened = open_envelope(
            data,
            recipient=recipient.country,
            private_key=recipient.encryption,
            originator_key=origin.signing.public_key,
        )
        assert opened.payload == payload
        assert opened.header == header


@pytest.mark.slow
@pytest.mark.parametrize("n_recipients", [1, 11, 50])
def test_round_trip_10_mib(countries: dict[str, CountryKeys], n_recipients: int) -> None:
    origin = countries["JPN"]
    recipients = [countries[c] for c in synthetic_codes(n_recipients)]
    payload = os.urandom(10 * 1024 * 1024)
    data = _seal(origin, recipients, payload)
    for recipient in (recipients[0], recipients[-1]):
        opened = open_envelope(
            data,
            recipient=recipient.country,
            private_key=recipient.encryption,
            originator_key=origin.signing.public_key,
        )
        assert opened.payload == payload


def test_optional_fields_round_trip(countries: dict[str, CountryKeys]) -> None:
    origin, usa = countries["KOR"], countries["USA"]
    first = parse(_seal(origin, [usa], b"v1")).header
    data = _seal(
        origin,
        [usa],
        b"v2",
        supersedes=first.item_id,
        in_reply_to=first.item_id,
        expires_ms=first.created_ms + 10_000,
    )
    header = verify(data, origin.signing.public_key).header
    assert header.supersedes == first.item_id
    assert header.in_reply_to == first.item_id
    assert header.expires_ms == first.created_ms + 10_000


def test_item_ids_are_unique_and_time_sortable(countries: dict[str, CountryKeys]) -> None:
    origin, usa = countries["KOR"], countries["USA"]
    headers = [parse(_seal(origin, [usa], b"x", created_ms=1_800_000_000_000 + i)).header for i in range(20)]
    ids = [h.item_id for h in headers]
    assert len(set(ids)) == 20
    assert ids == sorted(ids)


def test_seal_refuses_oversized_payload(
    countries: dict[str, CountryKeys], monkeypatch: pytest.MonkeyPatch
) -> None:
    from msmt.core import envelope

    monkeypatch.setattr(envelope, "MAX_PAYLOAD_BYTES", 10)
    with pytest.raises(errors.OversizedField):
        _seal(countries["KOR"], [countries["USA"]], b"x" * 11)


def test_seal_refuses_duplicate_recipients(countries: dict[str, CountryKeys]) -> None:
    usa = countries["USA"]
    with pytest.raises(errors.InvalidHeader, match="sorted by country"):
        _seal(countries["KOR"], [usa, usa], b"x")
